"""Where a training step's time goes: env, acting, storing, sampling, update, logging, ...

    .venv/bin/python -m bench.profile_step [--scenario cleanrl|zoo|preset] [--steps N]
        [--compare-ref GIT_REV [--repeats 2]] [--cprofile 25] [dqn-train overrides ...]

Trains in-process with the phases' functions wrapped in timers, then prints microseconds per
env step for each phase: the budget of one env step. A call is charged to the outermost phase
it runs in, so the forward pass inside an update is "update" and the env steps of an evaluation
are "evaluation"; whatever no phase claims (the loop's own Python, epsilon, bookkeeping) is
"other". Time before the first env step (building envs, networks, buffers) is "setup".

The phases are found by role, not by exact name, so renames and new helpers inside a module
are still timed: every method named below on any class of the module, and the module's
functions (see HOOKS). Acting factories (a function of dqn_cli.networks that returns a policy
closure) get their closure timed too. The hooked names are printed; a phase with no hook says
so instead of silently reading zero.

``--compare-ref REV`` profiles the code of git revision REV (extracted to a temporary dir) and
the working tree alternately, each run a fresh process, and prints before/after side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import importlib
import inspect
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    alternate,
    fmt,
    machine_header,
    median,
    merge_overrides,
    print_table,
    seconds_per_call,
    train_config,
)
from bench.scenarios import SCENARIOS, overrides_for

# phase -> (module, method names looked up on every class defined in it, also hook its
# functions?). Modules that do not exist (any more) are skipped.
HOOKS: list[tuple[str, str, tuple[str, ...], bool]] = [
    ("evaluation", "dqn_cli.evaluation", ("run",), False),
    ("env", "dqn_cli.envs", ("step",), True),  # incl. true_next_obs (undoing auto-reset)
    ("acting", "dqn_cli.networks", ("forward", "__call__", "act"), True),
    ("store", "dqn_cli.buffers", ("add", "on_add"), False),
    ("sample", "dqn_cli.buffers", ("sample",), False),
    ("priorities", "dqn_cli.buffers", ("update_priorities",), False),
    ("update", "dqn_cli.learner", ("update",), False),
    ("update", "dqn_cli.fast_learner", ("update",), False),
    ("target sync", "dqn_cli.targets", ("after_env_steps", "after_gradient_step"), False),
    ("checkpoint", "dqn_cli.checkpoint", (), True),
    ("checkpoint", "dqn_cli.env_state", (), True),
]
# Third-party classes the loop drives: (phase, module, class, methods).
EXTERNAL_HOOKS = [
    ("env", "gymnasium.vector", "SyncVectorEnv", ("step",)),
    ("env", "gymnasium.vector", "AsyncVectorEnv", ("step",)),
    (
        "logging",
        "torch.utils.tensorboard",
        "SummaryWriter",
        ("add_scalar", "add_scalars", "add_histogram", "add_text", "flush"),
    ),
]
PHASES = [
    "env",
    "acting",
    "store",
    "sample",
    "update",
    "priorities",
    "target sync",
    "logging",
    "evaluation",
    "checkpoint",
]


class PhaseTimer:
    """Accumulates wall time per phase; nested hooked calls belong to the outermost one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(PHASES, 0)
        self.active: str | None = None
        self.loop_started: float | None = None  # first env step: the end of setup
        self.before_loop: dict[str, float] = {}

    def wrap(
        self,
        phase: str,
        fn: Callable[..., Any],
        wrap_result: bool = False,
        starts_loop: bool = False,
    ) -> Any:
        """``fn`` timed as ``phase``; ``starts_loop``: its first outermost call ends setup (the
        vector env's step); ``wrap_result``: time a returned closure as ``phase`` too."""
        timer = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if timer.active is not None:
                return fn(*args, **kwargs)
            if starts_loop and timer.loop_started is None:
                timer.loop_started = time.perf_counter()
                timer.before_loop = dict(timer.seconds)
            timer.active = phase
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                timer.seconds[phase] = timer.seconds.get(phase, 0.0) + time.perf_counter() - started
                timer.calls[phase] = timer.calls.get(phase, 0) + 1
                timer.active = None
            if wrap_result and isinstance(result, types.FunctionType | functools.partial):
                return timer.wrap(phase, result)  # a policy closure: time every call of it
            return result

        return timed


@contextlib.contextmanager
def hooked(timer: PhaseTimer) -> Iterator[list[str]]:
    """Install the timers, yield what was hooked, and put every original back afterwards."""
    import dqn_cli.training  # noqa: F401  (imports the modules the loop uses)

    undo: list[tuple[Any, str, Any]] = []
    names: list[str] = []

    def patch(owner: Any, attr: str, phase: str, wrap_result: bool = False) -> None:
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        if isinstance(original, staticmethod | classmethod):
            return
        wrapped = timer.wrap(phase, original, wrap_result, starts_loop=attr == "step")
        undo.append((owner, attr, original))
        setattr(owner, attr, wrapped)
        names.append(
            f"{phase}: {getattr(owner, '__name__', owner).removeprefix('dqn_cli.')}.{attr}"
        )
        if not isinstance(owner, type):
            # Modules that imported the function by name (from x import f) hold it too.
            for module in list(sys.modules.values()):
                name = getattr(module, "__name__", "")
                if name.startswith("dqn_cli") and module.__dict__.get(attr) is original:
                    undo.append((module, attr, original))
                    setattr(module, attr, wrapped)

    try:
        for phase, module_name, methods, functions in HOOKS:
            for module in _modules(module_name):
                for _, obj in inspect.getmembers(module):
                    if getattr(obj, "__module__", None) != module.__name__:
                        continue  # imported from elsewhere: hooked where it is defined
                    if isinstance(obj, type):
                        if getattr(obj, "_is_protocol", False):
                            continue  # an interface: its methods never run
                        for method in methods:
                            if method in obj.__dict__ and callable(obj.__dict__[method]):
                                patch(obj, method, phase)
                    elif functions and isinstance(obj, types.FunctionType):
                        patch(module, obj.__name__, phase, wrap_result=phase == "acting")
        for phase, module_name, class_name, methods in EXTERNAL_HOOKS:
            cls = getattr(_import(module_name), class_name, None)
            for method in methods:
                if cls is not None and method in cls.__dict__:
                    patch(cls, method, phase)
        yield names
    finally:
        for owner, attr, original in reversed(undo):
            setattr(owner, attr, original)


def _import(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _modules(name: str) -> list[types.ModuleType]:
    """The module and, for a package, its submodules that are imported."""
    root = _import(name)
    if root is None:
        return []
    found = [root]
    found += [m for n, m in list(sys.modules.items()) if n.startswith(name + ".") and m]
    return found


@dataclass
class Profile:
    env_steps: int
    total_s: float
    setup_s: float
    seconds: dict[str, float]
    calls: dict[str, int]
    hooks: list[str] = field(default_factory=list)
    code: str = ""  # where dqn_cli was imported from

    @property
    def other_s(self) -> float:
        return self.total_s - self.setup_s - sum(self.seconds.values())

    def us_per_step(self, seconds: float) -> float:
        return seconds / max(self.env_steps, 1) * 1e6


def profile_run(overrides: list[str]) -> Profile:
    """One in-process training run under the phase timers."""
    from dqn_cli.training import train

    config = train_config(overrides)
    timer = PhaseTimer()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp, hooked(timer) as names:
        started = time.perf_counter()
        result = train(config, Path(tmp) / "run")
        total = time.perf_counter() - started
    loop_started = timer.loop_started or started
    # Setup: until the first env step, less the phases that already ran (e.g. building the
    # acting closure, the first logging of hyperparameters), which stay charged to setup.
    seconds = {p: s - timer.before_loop.get(p, 0.0) for p, s in timer.seconds.items()}
    import dqn_cli

    return Profile(
        env_steps=int(result.total_steps),
        total_s=total,
        setup_s=loop_started - started,
        seconds=seconds,
        calls=timer.calls,
        hooks=names,
        code=str(Path(dqn_cli.__file__).parent),
    )


def hook_overhead_us() -> float:
    """What one hooked call adds (two clock reads and a Python frame), in microseconds."""
    timer = PhaseTimer()

    def noop() -> None:
        pass

    timed = timer.wrap("calibration", noop)
    return (seconds_per_call(timed, 0.1) - seconds_per_call(noop, 0.1)) * 1e6


def phase_rows(profile: Profile) -> list[list[object]]:
    total_calls = sum(profile.calls.values())
    rows: list[list[object]] = []
    for phase in PHASES:
        s = profile.seconds[phase]
        calls = profile.calls[phase]
        rows.append(
            [
                phase,
                fmt(s, 2),
                fmt(100 * s / profile.total_s),
                fmt(profile.us_per_step(s)),
                f"{calls:,}",
                fmt(calls / max(profile.env_steps, 1), 3),
            ]
        )
    for label, s in [
        ("other (loop)", profile.other_s),
        ("setup (before 1st env step)", profile.setup_s),
    ]:
        rows.append(
            [label, fmt(s, 2), fmt(100 * s / profile.total_s), fmt(profile.us_per_step(s)), "", ""]
        )
    rows.append(
        [
            "total train()",
            fmt(profile.total_s, 2),
            "100.0",
            fmt(profile.us_per_step(profile.total_s)),
            f"{total_calls:,}",
            "",
        ]
    )
    return rows


def compare_rows(before: list[Profile], after: list[Profile]) -> list[list[object]]:
    def per_step(runs: list[Profile], get: Callable[[Profile], float]) -> float:
        return median([p.us_per_step(get(p)) for p in runs])

    def seconds_of(phase: str) -> Callable[[Profile], float]:
        return lambda p: p.seconds[phase]

    getters: list[tuple[str, Callable[[Profile], float]]] = [
        (phase, seconds_of(phase)) for phase in PHASES
    ]
    getters += [
        ("other (loop)", lambda p: p.other_s),
        ("setup (before 1st env step)", lambda p: p.setup_s),
        ("total train()", lambda p: p.total_s),
    ]
    rows: list[list[object]] = []
    for label, get in getters:
        b, a = per_step(before, get), per_step(after, get)
        rows.append([label, fmt(b), fmt(a), f"{a / b:.2f}" if b > 0.05 else "-"])
    return rows


def extract_revision(rev: str, into: Path) -> Path:
    """dqn_cli of ``rev`` as an importable tree (conf/ placed where the package maps it)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "dqn_cli", "conf"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "conf").rename(into / "dqn_cli" / "conf")  # pyproject: dqn_cli.conf = conf/
    return into


def worker(overrides: list[str], code_dir: Path | None) -> Profile:
    """One profile in a fresh process: the working tree's code, or the tree in ``code_dir``."""
    cmd = [sys.executable, "-m", "bench.profile_step", "--worker", "--", *overrides]
    env = dict(os.environ)
    cwd = ROOT
    if code_dir is not None:
        # cwd first on sys.path with -m: run from the old tree so its dqn_cli wins, and find
        # bench/ (this code) after it.
        cwd = code_dir
        env["PYTHONPATH"] = os.pathsep.join([str(code_dir), str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if done.returncode != 0:
        sys.exit(f"profile worker failed:\n{done.stderr[-2000:]}")
    return Profile(**json.loads(done.stdout.strip().splitlines()[-1]))


def cprofile_top(overrides: list[str], top: int) -> str:
    """The ``top`` functions by own time under cProfile (slower, but names every function)."""
    from dqn_cli.training import train

    config = train_config(overrides)
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="bench-cprofile-") as tmp:
        profiler.runcall(train, config, Path(tmp) / "run")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["preset", *SCENARIOS], default="cleanrl")
    parser.add_argument("--steps", type=int, help="total env steps (scenarios scale)")
    parser.add_argument("--compare-ref", metavar="REV", help="also profile git revision REV")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side (median)")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="top N functions")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra dqn-train overrides, e.g. buffer=per")
    args = parser.parse_args(argv)

    if args.worker:  # child of --compare-ref: overrides are complete, print JSON only
        print(json.dumps(asdict(profile_run(args.overrides))))
        return 0

    overrides = merge_overrides(overrides_for(args.scenario, args.steps), args.overrides)
    print(machine_header("bench.profile_step: where a training step's time goes"))
    print(f"# dqn-train {' '.join(overrides)}")
    print(f"# hook overhead: {hook_overhead_us():.2f} us per hooked call (inside the phases)")
    if args.compare_ref:
        with tempfile.TemporaryDirectory(prefix="bench-ref-") as tmp:
            old = extract_revision(args.compare_ref, Path(tmp))
            sides = {"before": old, "after": None}
            runs = alternate(
                list(sides), args.repeats, lambda side, _: worker(overrides, sides[side])
            )
        print(
            f"# before: git {args.compare_ref} ({runs['before'][0].code}); "
            f"after: the working tree ({runs['after'][0].code})"
        )
        print(f"# {args.repeats} fresh process(es) per side, alternating; us per env step, median")
        print_table(
            ["phase", "before us/step", "after us/step", "after/before"],
            compare_rows(runs["before"], runs["after"]),
        )
        return 0

    profiles = [profile_run(overrides) for _ in range(args.repeats)]
    profile = sorted(profiles, key=lambda p: p.total_s)[len(profiles) // 2]  # the median run
    missing = [p for p in PHASES if not any(h.startswith(p + ":") for h in profile.hooks)]
    grouped: dict[str, list[str]] = {}
    for hook in profile.hooks:
        phase, name = hook.split(": ", 1)
        grouped.setdefault(phase, []).append(name)
    listed = "; ".join(phase + ": " + ", ".join(names) for phase, names in grouped.items())
    print(f"# hooked: {listed}")
    if missing:
        print(f"# NOT hooked (reads 0, its time lands in 'other'): {', '.join(missing)}")
    print(f"# {profile.env_steps:,} env steps; code from {profile.code}")
    print_table(
        ["phase", "seconds", "% of train()", "us / env step", "calls", "calls / env step"],
        phase_rows(profile),
    )
    if args.cprofile:
        print(f"\n# cProfile, top {args.cprofile} by own time (separate run; cProfile slows calls)")
        print(cprofile_top(overrides, args.cprofile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
