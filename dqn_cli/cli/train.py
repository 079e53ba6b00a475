"""``dqn-train``: compose the config with Hydra, validate it, train, report.

Before Hydra creates a run dir, a single run's overrides are composed and checked once
(:func:`preflight`): a typo, a bad value, an unknown env or a broken ``resume=`` target is one
line on stderr and exit code 2, and no empty run dir is left behind.
"""

from __future__ import annotations

import json
import logging
import math
import re
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import hydra
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dqn_cli.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    newest_checkpoint,
)
from dqn_cli.config import ConfigError, TrainConfig, parse_train_config
from dqn_cli.envs import EnvError, env_spec, make_env
from dqn_cli.training import (
    DeviceError,
    TrainingDiverged,
    TrainResult,
    resolve_device,
    train,
)
from dqn_cli.training import Progress as TrainProgress

log = logging.getLogger("dqn_cli")

# Errors the user can fix from the command line: one line, exit code 2, no traceback.
USER_ERRORS = (ConfigError, EnvError, DeviceError, CheckpointError)
# Hydra flags after which no single run is composed here (sweeps, help, introspection).
_NO_PREFLIGHT = {
    "-m",
    "--multirun",
    "-h",
    "--help",
    "--hydra-help",
    "-c",
    "--cfg",
    "-i",
    "--info",
    "--version",
    "-sc",
    "--shell-completion",
    "-p",
    "--package",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "--experimental-rerun",
}
# The only override allowed next to resume=: extending (or shortening) the run.
_RESUME_OVERRIDABLE = {"total_steps"}


@dataclass(frozen=True)
class ResumePlan:
    run_dir: Path
    checkpoint: Path
    payload: dict[str, Any]
    config: TrainConfig


_resume_plan: ResumePlan | None = None  # set by preflight, read by the task function


# ---------------------------------------------------------------------------------------------
# Preflight: everything that can be checked before a run dir exists


def preflight(args: list[str]) -> list[str]:
    """Validate a single run's overrides; return extra Hydra overrides to append (resume)."""
    global _resume_plan
    if any(arg.split("=")[0] in _NO_PREFLIGHT for arg in args):
        if any(arg.startswith("resume=") for arg in args) and (
            "-m" in args or "--multirun" in args
        ):
            raise ConfigError("resume", "cannot be combined with -m/--multirun; resume one run")
        return []
    overrides = [a for a in args if not a.startswith("-")]
    resume = [a.split("=", 1)[1] for a in overrides if a.split("=", 1)[0] == "resume"]
    if resume and resume[0] not in ("", "null"):
        _resume_plan = plan_resume(Path(resume[0]), overrides)
        run_dir = str(_resume_plan.run_dir).replace("'", "\\'")
        # Continue in the run's own dir; keep its original .hydra/ untouched.
        return [f"hydra.run.dir='{run_dir}'", "hydra.output_subdir=.hydra/resumed"]
    cfg = compose_config([a for a in overrides if not a.startswith(("hydra.", "hydra/"))])
    raw: Any = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("resume", None)
    config = parse_train_config(raw)
    resolve_device(config.device)
    env = make_env(config.env.id)
    try:
        env_spec(env.observation_space, env.action_space, config.env.id)
    finally:
        env.close()
    return []


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose like dqn-train does, turning Hydra's multi-line errors into one line."""
    try:
        with initialize_config_module(config_module="dqn_cli.conf", version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except MissingConfigException as exc:
        found = re.search(r"Could not find '([\w/]+)/([^']*)'", str(exc))
        options = re.findall(r"^\t(\S+)$", str(exc), flags=re.MULTILINE)
        if found and options:
            group, option = found.groups()
            raise ConfigError(
                group, f"unknown option {option!r}; valid: {', '.join(options)}"
            ) from None
        raise ConfigError("config", _one_line(exc)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError("override", _one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith(("See https", "Config search")))


def plan_resume(run_dir: Path, overrides: list[str]) -> ResumePlan:
    extra = [
        o
        for o in overrides
        if o.split("=", 1)[0].lstrip("+~") not in ({"resume"} | _RESUME_OVERRIDABLE)
        and not o.startswith(("hydra.", "hydra/"))
    ]
    if extra:
        raise ConfigError(
            "resume",
            f"only total_steps=N may be given with resume= (the run keeps its saved config); "
            f"remove: {' '.join(extra)}",
        )
    run_dir = run_dir.expanduser().resolve()
    if not run_dir.is_dir():
        raise ConfigError("resume", f"{run_dir} is not a directory")
    checkpoint = newest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise ConfigError(
            "resume", f"no checkpoint in {run_dir / 'checkpoints'}; nothing to resume"
        )
    payload = load_checkpoint(checkpoint)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"cannot resume from {checkpoint}: it has checkpoint format "
            f"{payload.get('format')!r}, this dqn-cli resumes format {CHECKPOINT_FORMAT} only; "
            "evaluate it with dqn-eval or start a new run"
        )
    config = parse_train_config(payload["config"])
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "total_steps":
            if not value.isdigit():
                raise ConfigError("total_steps", f"expected an integer, got {value!r}")
            config = replace(config, total_steps=int(value))
    step = int(payload["env_step"])
    if config.total_steps <= step:
        raise ConfigError(
            "total_steps",
            f"the run already has {step} env steps; give total_steps > {step} to continue it",
        )
    resolve_device(config.device)
    return ResumePlan(run_dir, checkpoint, payload, config)


# ---------------------------------------------------------------------------------------------
# Progress display


class TerminalReporter:
    """A rich progress bar; log records are printed above it instead of through it."""

    def __init__(self, total_steps: int, start_step: int, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:>9,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[sps]:>6,.0f} steps/s"),
            TextColumn("return {task.fields[ret]:>7}"),
            TextColumn("eval {task.fields[eval]:>7}"),
            TextColumn("eps {task.fields[eps]:.3f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(
            "training",
            total=total_steps,
            completed=start_step,
            sps=0.0,
            ret="-",
            eval="-",
            eps=1.0,
        )

    def __call__(self, p: TrainProgress) -> None:
        self.progress.update(
            self.task,
            completed=p.step,
            sps=p.steps_per_second,
            ret=_fmt(p.recent_return),
            eval=_fmt(p.last_eval_return),
            eps=p.epsilon,
        )


class LineReporter:
    """Plain periodic log lines for CI and cluster logs: about every 10% of the run."""

    def __init__(self, total_steps: int) -> None:
        self.every = max(total_steps // 10, 1)
        self.next_line = self.every

    def __call__(self, p: TrainProgress) -> None:
        if p.step >= self.next_line or p.step >= p.total_steps:
            self.next_line = (p.step // self.every + 1) * self.every
            log.info(
                "step %d/%d  %.0f steps/s  episodes %d  return(last 20) %s  eval %s  epsilon %.3f",
                p.step,
                p.total_steps,
                p.steps_per_second,
                p.episodes,
                _fmt(p.recent_return),
                _fmt(p.last_eval_return),
                p.epsilon,
            )


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


class _ConsoleLogHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False)


def _route_console_logging(console: Console) -> None:
    """Swap the plain stdout log handler for one that prints above the progress bar."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            root.removeHandler(handler)
    handler = _ConsoleLogHandler(console)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)


def summary_table(config: TrainConfig, result: TrainResult, run_dir: Path) -> Table:
    table = Table(title=f"dqn-train: {config.env.id}", show_header=False)
    final = result.final_eval
    rows = [
        (
            "algorithm / buffer / target",
            f"{config.algo.name} / {config.buffer.kind} / {config.target.kind}",
        ),
        ("env steps", f"{result.total_steps:,}"),
        ("episodes", f"{result.episodes:,}"),
        (
            "final eval return",
            "-"
            if final is None
            else f"{final.mean:.1f} +- {final.std:.1f} ({len(final.returns)} episodes)",
        ),
        ("best eval return", _fmt(result.best_eval_return_mean)),
        ("wall time", f"{result.wall_seconds:.1f} s"),
        ("steps/s", f"{result.steps_per_second:,.0f}"),
        ("run dir", str(run_dir)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


# ---------------------------------------------------------------------------------------------
# Signals


class StopSignal:
    """First SIGINT/SIGTERM: ask the loop to stop after this step and checkpoint.
    A second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"dqn-train: {signal.Signals(signum).name} received: finishing this step and "
            "saving a checkpoint (Ctrl-C again to abort now)",
            file=sys.stderr,
            flush=True,
        )

    def __call__(self) -> bool:
        return self.signum is not None


# ---------------------------------------------------------------------------------------------
# The Hydra task


def run(cfg: DictConfig) -> float:
    """Train from a composed config; returns the final eval return (for Hydra sweepers)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    raw: Any = OmegaConf.to_container(cfg, resolve=True)
    plan = _resume_plan if raw.pop("resume", None) else None
    if plan is not None:
        config, payload = plan.config, plan.payload
        log.info("resuming %s from %s (env step %d)", run_dir, plan.checkpoint, payload["env_step"])
    else:
        config, payload = parse_train_config(raw), None
    stop = StopSignal()
    stop.install()
    console = Console()
    start_step = int(payload["env_step"]) if payload else 0
    # Parallel sweep jobs share one terminal: their progress bars would overwrite each other.
    if console.is_terminal and HydraConfig.get().mode != RunMode.MULTIRUN:
        reporter = TerminalReporter(config.total_steps, start_step, console)
        _route_console_logging(reporter.progress.console)
        with reporter.progress:
            result = train(config, run_dir, reporter, stop, payload)
    else:
        result = train(config, run_dir, LineReporter(config.total_steps), stop, payload)
    if result.interrupted:
        assert stop.signum is not None
        message = (
            f"interrupted at env step {result.total_steps}; the full state is saved in "
            f"{run_dir / 'checkpoints' / 'last.pt'}. Continue with: dqn-train resume={run_dir}"
        )
        log.warning("%s", message)
        print(f"dqn-train: {message}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    assert result.final_eval is not None
    log.info(
        "done: final eval %.1f +- %.1f, %d env steps in %.1f s; run dir %s",
        result.final_eval.mean,
        result.final_eval.std,
        result.total_steps,
        result.wall_seconds,
        run_dir,
    )
    console.print(summary_table(config, result, run_dir))
    return result.final_eval.mean


def _record_failure(message: str) -> None:
    """A failed job still leaves a summary.json, so sweep reports can say why it failed."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"status": "failed", "error": message}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


@hydra.main(version_base="1.3", config_path="pkg://dqn_cli.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float:
    try:
        return run(cfg)
    except (*USER_ERRORS, TrainingDiverged) as exc:
        print(f"dqn-train: error: {exc}", file=sys.stderr)
        log.error("%s", exc)
        _record_failure(str(exc))
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # Exiting here would abort the other jobs of the sweep; the failure is on record.
            return math.nan
        sys.exit(2 if isinstance(exc, USER_ERRORS) else 1)


def main() -> None:
    args = sys.argv[1:]
    try:
        extra = preflight(args)
    except USER_ERRORS as exc:
        print(f"dqn-train: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args, *extra]
    try:
        _hydra_entry()
    except KeyboardInterrupt:
        print("dqn-train: aborted; the last periodic checkpoint is kept", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
