"""``dqn-train``: compose the config with Hydra, validate it, train, report.

Before Hydra creates a run dir, a single run's overrides are composed and checked once
(:func:`preflight`): a typo, a bad value, an unknown env or a broken ``resume=`` target is one
line on stderr and exit code 2, and no empty run dir is left behind. ``--help`` and config
errors return before torch, gymnasium or rich are imported.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from dqn_cli.config import ConfigError, config_keys, parse_run_options, section_help, suggest_key
from dqn_cli.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Callable

    from omegaconf import DictConfig

    from dqn_cli.run_planning import ResumePlan

log = logging.getLogger("dqn_cli")

# Hydra flags after which no single run is composed here (sweeps, introspection).
_NO_PREFLIGHT = {
    "-m",
    "--multirun",
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


# ---------------------------------------------------------------------------------------------
# Preflight: everything that can be checked before a run dir exists


def check_override_keys(overrides: list[str]) -> None:
    """Refuse an override of a key that does not exist, before Hydra suggests ``+key=...``."""
    known = {k.name for k in config_keys()} | set(section_help()) | {"resume"}
    for override in overrides:
        name = override.split("=", 1)[0]
        # model.* beyond _target_ and head are the model's own arguments, checked against its
        # constructor when it is built.
        if name.startswith(("+", "~", "hydra.", "hydra/", "model.")) or "=" not in override:
            continue
        if name not in known:
            raise ConfigError(
                name, f"unknown key{suggest_key(name)} (dqn-train --help lists every key)"
            )


def preflight(args: list[str]) -> tuple[list[str], ResumePlan | None]:
    """Validate a single run's overrides; return extra Hydra overrides and the resume plan."""
    overrides = [a for a in args if not a.startswith("-")]
    multirun = "-m" in args or "--multirun" in args
    if multirun and any(a.split("=", 1)[0] == "resume" for a in overrides):
        raise ConfigError("resume", "cannot be combined with -m/--multirun; resume one run")
    if not any(arg.split("=")[0] in {"--cfg", "-c", "--info", "-i"} for arg in args):
        check_override_keys(overrides)
    if any(o.lstrip("+").startswith("hydra/launcher=") for o in overrides):
        from dqn_cli.cli.sweeps import check_launcher_installed

        check_launcher_installed(overrides)
    if any(arg.split("=")[0] in _NO_PREFLIGHT for arg in args):
        return [], None
    from dqn_cli.cli.compose import compose_config, split_config
    from dqn_cli.run_planning import check_new_run, plan_resume, resume_overrides

    pairs = {
        o.split("=", 1)[0].lstrip("+~"): o.partition("=")[2]
        for o in overrides
        if not o.startswith(("hydra.", "hydra/"))
    }
    if "resume" in pairs and pairs["resume"] != "null":
        options = parse_run_options({"resume": pairs.pop("resume")})
        assert options.resume is not None
        plan = plan_resume(Path(options.resume), resume_overrides(pairs))
        run_dir = str(plan.run_dir).replace("'", "\\'")
        # Continue in the run's own dir; keep its original .hydra/ untouched.
        return [f"hydra.run.dir='{run_dir}'", "hydra.output_subdir=.hydra/resumed"], plan
    cfg = compose_config([o for o in overrides if not o.startswith(("hydra.", "hydra/"))])
    run, raw = split_config(cfg)
    parse_run_options(run)
    check_new_run(raw)
    return [], None


# ---------------------------------------------------------------------------------------------
# Signals


class StopSignal:
    """First SIGINT/SIGTERM/SIGUSR2: ask the loop to stop after this step and checkpoint.
    A second SIGINT aborts at once.

    SIGTERM is what SLURM sends a job it preempts or cancels, SIGUSR2 what submitit has it send
    before the time limit. In a submitit job on SLURM, submitit's own SIGUSR2 handler (requeue
    the job) is kept, to be called once the checkpoint is saved (:meth:`hand_over`). Its local
    executor is left out: it would start a requeued job again from scratch (there is no
    restart count to resume on), and it sees a job's end without a result by itself.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._requeue_handler: Callable[[int, FrameType | None], Any] | None = None

    def install(self) -> None:
        on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
        for signum in self.SIGNALS:
            previous = signal.signal(signum, self._handle)
            if signum == signal.SIGUSR2 and on_slurm and callable(previous):
                self._requeue_handler = previous

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

    def hand_over(self) -> None:
        """After the checkpoint: in a submitit SLURM job stopped by SIGTERM or SIGUSR2, let submitit
        requeue it (it exits, and the job resumes from its checkpoint when it runs again).

        Exiting instead would leave no result for submitit, which, on a cluster without
        accounting, then waits for the job for ever. Returns where there is no such handler.
        """
        signum, handler = self.signum, self._requeue_handler
        if handler is not None and signum is not None and signum != signal.SIGINT:
            handler(signum, None)


# ---------------------------------------------------------------------------------------------
# The Hydra task


def run_task(cfg: DictConfig, plan: ResumePlan | None) -> float:
    """Train from a composed config; returns the final eval return (for Hydra sweepers)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from rich.console import Console

    from dqn_cli.cli.compose import split_config
    from dqn_cli.cli.progress import (
        LineReporter,
        TerminalReporter,
        route_console_logging,
        summary_table,
    )
    from dqn_cli.config import parse_train_config
    from dqn_cli.training import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _, raw = split_config(cfg)
    if plan is not None:
        config, payload = plan.config, plan.payload
        log.info("resuming %s from %s (env step %d)", run_dir, plan.checkpoint, plan.start_step)
    else:
        config, payload = parse_train_config(raw), None
    stop = StopSignal()
    stop.install()
    console = Console()
    start_step = plan.start_step if plan else 0
    # Parallel sweep jobs share one terminal: their progress bars would overwrite each other.
    if console.is_terminal and HydraConfig.get().mode != RunMode.MULTIRUN:
        reporter = TerminalReporter(config.total_steps, start_step, console)
        route_console_logging(reporter.progress.console)
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
        stop.hand_over()
        if os.environ.get("SUBMITIT_EXECUTOR"):
            # submitit learns that a job ended from its result: leave one (NaN, as a failed
            # job's), summary.json says interrupted, and the sweep names the job at its end.
            return math.nan
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


def guarded_task(cfg: DictConfig, plan: ResumePlan | None) -> float:
    """:func:`run_task` turning user errors and divergence into one line and a failed job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dqn_cli.cli.sweeps import requeued_job_plan
    from dqn_cli.training import TrainingDiverged

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run_task(cfg, plan or requeued_job_plan(run_dir))
    except (UserError, TrainingDiverged) as exc:
        print(f"dqn-train: error: {exc}", file=sys.stderr)
        log.error("%s", exc)
        exit_code = 2 if isinstance(exc, UserError) else 1
        _record_failure(run_dir, str(exc), exit_code)
        if multirun:
            # Exiting here would abort the other jobs of the sweep; the failure is on record.
            return math.nan
        sys.exit(exit_code)
    except Exception as exc:
        if not multirun:
            raise
        # A crashed job must not stop the sweep either; its traceback goes to train.log.
        log.exception("job crashed")
        _record_failure(run_dir, f"crashed: {type(exc).__name__}: {exc}", 1)
        return math.nan


def _record_failure(run_dir: Path, message: str, exit_code: int) -> None:
    """A failed job still leaves a summary.json, so sweep reports can say why it failed.
    ``exit_code`` is the one a single run exits with (2: bad input), also for the sweep's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"status": "failed", "error": message, "exit_code": exit_code}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def run_hydra(argv: list[str], plan: ResumePlan | None) -> None:
    """Hand ``argv`` to Hydra, which composes the config, makes the run dir(s) and runs jobs."""
    import hydra

    from dqn_cli.cli.compose import register_defaults
    from dqn_cli.cli.sweeps import quiet_ray_schema_warning

    register_defaults()
    quiet_ray_schema_warning()

    # The resume plan reaches the job through this closure: no module-level state.
    @hydra.main(version_base="1.3", config_path="pkg://dqn_cli.conf", config_name="config")
    def dqn_train(cfg: DictConfig) -> float:
        return guarded_task(cfg, plan)

    sys.argv = [sys.argv[0], *argv]
    dqn_train()


def main() -> None:
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        from dqn_cli.cli.keys import render_help
        from dqn_cli.cli.output import print_output

        print_output(render_help())
        return
    try:
        extra, plan = preflight(args)
    except UserError as exc:
        print(f"dqn-train: error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        run_hydra([*args, *extra], plan)
    except KeyboardInterrupt:
        print("dqn-train: aborted; the last periodic checkpoint is kept", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
