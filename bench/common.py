"""Helpers every benchmark shares: the machine header, timing, alternating runs, tables.

Absolute times on a shared 2-core machine are noisy, so the scripts compare only what they run
alternately in one session (A, B, A, B, ...) and report medians and ratios.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from dqn_cli.run_planning import usable_cores

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
# Versions worth knowing when reading a figure; a missing one prints as "-".
PACKAGES = ("dqn-cli", "torch", "numpy", "gymnasium", "stable-baselines3")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------------------------------------
# The machine and its software


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else whatever platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def machine_facts() -> dict[str, str]:
    """Where and with what a benchmark runs, one short string per fact.

    Keys: ``date``, ``cpu`` (model, cores, usable cores), ``load`` (1, 5, 15 minute load
    averages), ``python``, ``versions`` (``PACKAGES``) and ``threads`` (``THREAD_VARIABLES``).
    """
    cores = os.cpu_count() or 0
    usable = usable_cores()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "-"
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{cpu_model()}, {cores} cores ({usable} usable)",
        "load": load,
        "python": f"python {platform.python_version()} ({platform.system()} {platform.machine()})",
        "versions": ", ".join(f"{p} {package_version(p)}" for p in PACKAGES),
        # Thread-count variables change numpy/BLAS and torch speed a lot on 2 cores: show them.
        "threads": ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARIABLES),
    }


def machine_header(title: str) -> str:
    """Lines starting with '#': what ran, where, with which versions, and how busy the host was.

    The load average is printed because other work shares this machine: a figure taken at load 4
    on 2 cores is not comparable with one taken idle, only ratios within one run are.
    """
    facts = machine_facts()
    return "\n".join(
        [
            f"# {title}",
            f"# {facts['date']}; {facts['cpu']}, load average {facts['load']}",
            f"# {facts['python']}; {facts['versions']}",
            f"# {facts['threads']}",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Timing


def alternate(
    subjects: Sequence[str], repeats: int, run: Callable[[str, int], T]
) -> dict[str, list[T]]:
    """``run(subject, repeat)`` for every subject in turn, ``repeats`` rounds: A B A B ...

    Interleaving spreads slow phases of a shared machine over all subjects instead of letting
    them land on whichever ran during them.
    """
    results: dict[str, list[T]] = {s: [] for s in subjects}
    for repeat in range(repeats):
        for subject in subjects:
            results[subject].append(run(subject, repeat))
    return results


def seconds_per_call(
    fn: Callable[[], object], budget_s: float = 0.3, repeats: int = 5, max_number: int = 100_000
) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` timed loops (like timeit's autorange).

    The loop length is grown until one loop takes about ``budget_s / repeats``, so cheap calls
    are averaged over many iterations and a 50 ms call still finishes within the budget.
    """
    fn()  # first call outside the clock: lazy allocations, caches
    number = 1
    target = budget_s / repeats
    while True:
        elapsed = _loop(fn, number)
        if elapsed >= target or number >= max_number:
            break
        # Aim straight at the target from this estimate, at most 10x per step.
        number = min(max_number, number * min(10, max(2, int(target / max(elapsed, 1e-9)) + 1)))
    samples = [elapsed / number] + [_loop(fn, number) / number for _ in range(repeats - 1)]
    return statistics.median(samples)


def extra_seconds_per_call(
    with_fn: Callable[[], object],
    without_fn: Callable[[], object],
    budget_s: float = 0.3,
    repeats: int = 5,
) -> float:
    """Median over interleaved loops of (``with_fn`` - ``without_fn``) seconds per call.

    Timing the two apart and subtracting medians lets the machine's drift between the two
    measurements swamp a small difference; pairing each loop of one with a loop of the other
    cancels most of it.
    """
    per_call = seconds_per_call(with_fn, budget_s / 4, 3)
    number = max(1, int(budget_s / (2 * repeats) / max(per_call, 1e-9)))
    diffs = [(_loop(with_fn, number) - _loop(without_fn, number)) / number for _ in range(repeats)]
    return statistics.median(diffs)


def _loop(fn: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - started


@dataclass
class ProgressClock:
    """A ``train()`` reporter that timestamps every progress report (every ``log.every`` steps).

    Rates over a window of reports leave out start-up, the final evaluation and checkpoint, so
    they measure the loop alone.
    """

    marks: list[tuple[int, float]] = field(default_factory=list)

    def __call__(self, progress: Any) -> None:
        self.marks.append((int(progress.step), time.perf_counter()))

    def rate(self, from_step: int = 0, to_step: int | None = None) -> float:
        """Env steps per second between the first report at or after ``from_step`` and the last
        one at or before ``to_step``; nan when fewer than two reports fall in the window."""
        window = [
            (s, t) for s, t in self.marks if s >= from_step and (to_step is None or s <= to_step)
        ]
        if len(window) < 2 or window[-1][1] <= window[0][1]:
            return float("nan")
        (s0, t0), (s1, t1) = window[0], window[-1]
        return (s1 - s0) / (t1 - t0)


# ---------------------------------------------------------------------------------------------
# Running dqn-train: as a whole process, or in-process from composed overrides


@dataclass(frozen=True)
class ProcessRun:
    wall_s: float
    returncode: int
    stdout: str
    stderr: str

    def tail(self, chars: int = 400) -> str:
        return (self.stderr.strip() or self.stdout.strip())[-chars:]


def run_process(cmd: Sequence[str], cwd: Path | None = None) -> ProcessRun:
    """Run ``cmd`` to completion; wall time of the whole process, start-up included."""
    started = time.perf_counter()
    done = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - started
    return ProcessRun(wall, done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Measurement:
    """One whole-process training run."""

    wall_s: float  # whole process, from the outside
    in_process_s: float  # the training itself, as the process reports it
    eval_return: float
    failed: str = ""


def print_run(label: str, repeat: int, m: Measurement, inner: str = "in process") -> None:
    """One progress line per timed run, so a long benchmark shows where it is."""
    print(
        f"#   run {repeat + 1} {label}: {m.wall_s:.1f} s whole process, "
        f"{m.in_process_s:.1f} s {inner}, eval return {fmt(m.eval_return)}"
        + (f", FAILED: {m.failed}" if m.failed else ""),
        flush=True,
    )


def run_dqn_train(overrides: Sequence[str], run_dir: Path) -> Measurement:
    """``dqn-train OVERRIDES`` as a fresh process writing into ``run_dir``."""
    done = run_process([dqn_train_executable(), *overrides, f"hydra.run.dir={run_dir}"])
    summary_path = run_dir / "summary.json"
    if done.returncode != 0 or not summary_path.exists():
        return Measurement(done.wall_s, float("nan"), float("nan"), done.tail())
    summary = json.loads(summary_path.read_text())
    return Measurement(done.wall_s, summary["wall_seconds"], summary["final_eval_return_mean"])


def dqn_train_executable() -> str:
    """The ``dqn-train`` installed next to this python (the one `make install` put there)."""
    exe = shutil.which("dqn-train", path=str(Path(sys.executable).parent))
    if exe is None:
        sys.exit("dqn-train is not installed next to this python; run `make install` first")
    return exe


def train_config(overrides: Sequence[str]) -> Any:
    """The validated ``TrainConfig`` that ``dqn-train OVERRIDES`` would train with."""
    from dqn_cli.cli.compose import compose_config, split_config
    from dqn_cli.config import parse_train_config

    _, raw = split_config(compose_config(list(overrides)))
    return parse_train_config(raw)


def train_in_process(
    overrides: Sequence[str], reporter: Callable[[Any], None] | None = None
) -> Any:
    """``dqn_cli.training.train`` with the composed overrides, in a throw-away run dir."""
    from dqn_cli.training import train

    config = train_config(overrides)
    with tempfile.TemporaryDirectory(prefix="dqn-bench-") as tmp:
        return train(config, Path(tmp) / "run", reporter)


def merge_overrides(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``base`` with each ``key=value`` of ``extra`` replacing the same key (or appended)."""
    merged = {o.split("=", 1)[0]: o for o in base}
    merged.update({o.split("=", 1)[0]: o for o in extra})
    return list(merged.values())


# Keys that keep in-process measurements about the loop: one evaluation and one checkpoint,
# both at the end, whatever the preset says.
def quiet_overrides(total_steps: int, eval_episodes: int = 1) -> list[str]:
    return [
        f"total_steps={total_steps}",
        "device=cpu",
        "torch_threads=1",
        f"eval.every={total_steps}",
        f"eval.episodes={eval_episodes}",
        f"checkpoint.every={total_steps}",
        "checkpoint.keep=0",
        "checkpoint.save_buffer=false",
    ]


# ---------------------------------------------------------------------------------------------
# Output


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table: thousands separators, '-' for nan."""
    if value != value:  # nan
        return "-"
    return f"{value:,.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table with padded columns: readable raw, and pastes into the README as is."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


def verdict(value: float, limit: float, higher_is_better: bool = False) -> str:
    if value != value:
        return "-"
    ok = value >= limit if higher_is_better else value <= limit
    return "yes" if ok else "NO"
