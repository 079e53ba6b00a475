"""``dqn-train``: compose the config with Hydra, validate it, train, report.

Before Hydra creates a run dir, a single run's overrides are composed and checked once
(:func:`preflight`): a typo, a bad value, an unknown env, too little memory or a broken
``resume=`` target is one line on stderr and exit code 2, and no empty run dir is left behind.
Preflight then claims the run dir (refusing one that holds another run or is in use) and holds
its lock until the process ends. ``--help`` and config
errors return before torch, gymnasium or rich are imported.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from dqn_cli.config import (
    ConfigError,
    RunOptions,
    config_keys,
    parse_run_options,
    section_help,
    suggest_key,
)
from dqn_cli.errors import UserError, one_line
from dqn_cli.run_lock import RunDirError, RunLock

if TYPE_CHECKING:
    from collections.abc import Callable

    from omegaconf import DictConfig

    from dqn_cli.loggers import RunIdentity
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
    known = {k.name for k in [*config_keys(), *config_keys(RunOptions)]} | set(section_help())
    for override in overrides:
        name = override.split("=", 1)[0]
        # model.* beyond _target_ and head are the model's own arguments (env.kwargs.* the env's),
        # checked against its constructor when it is built.
        if (
            name.startswith(("+", "~", "hydra.", "hydra/", "model.", "env.kwargs."))
            or "=" not in override
        ):
            continue
        if name not in known:
            raise ConfigError(
                name, f"unknown key{suggest_key(name)} (dqn-train --help lists every key)"
            )


def check_tracker_extras(overrides: list[str]) -> None:
    """The extra of each tracker a ``logger=...`` override names (a sweep may list several)."""
    from dqn_cli.loggers import require_tracker

    for override in overrides:
        name, _, value = override.partition("=")
        if name == "logger":
            for kind in value.split(","):
                require_tracker(kind.strip())


# Overrides whose value is a path: typed plainly, they are taken literally (see README).
PATH_KEYS = ("resume", "hydra.run.dir", "hydra.sweep.dir")


@dataclass
class Launch:
    """What preflight hands to Hydra: its argv, the resume plan, the held run-dir lock."""

    hydra_args: list[str]
    plan: ResumePlan | None = None
    lock: RunLock | None = None


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def preflight(args: list[str]) -> Launch:
    """Validate a single run's overrides and claim its run dir, before Hydra writes anything."""
    overrides = [a for a in args if not a.startswith("-")]
    multirun = "-m" in args or "--multirun" in args
    if multirun and any(_key(a) == "resume" for a in overrides):
        raise ConfigError("resume", "cannot be combined with -m/--multirun; resume one run")
    if not any(arg.split("=")[0] in {"--cfg", "-c", "--info", "-i"} for arg in args):
        check_override_keys(overrides)
    check_tracker_extras(overrides)  # sweeps too, before their dir is claimed
    if any(o.lstrip("+").startswith("hydra/launcher=") for o in overrides):
        from dqn_cli.cli.sweeps import check_launcher_installed

        check_launcher_installed(overrides)
    if any(_key(a) in PATH_KEYS and "=" in a for a in args):
        from dqn_cli.cli.compose import literal_path_override

        args = [literal_path_override(a) if _key(a) in PATH_KEYS else a for a in args]
        overrides = [a for a in args if not a.startswith("-")]
    if multirun:
        _claim_sweep_dir(overrides)
    if any(arg.split("=")[0] in _NO_PREFLIGHT for arg in args):
        return Launch(args)
    from dqn_cli.cli.compose import compose_run, hydra_quoted, override_value, split_config
    from dqn_cli.run_planning import (
        check_new_run,
        claim_new_run_dir,
        plan_resume,
        prepare_run_dir,
        resume_dir,
        resume_overrides,
    )

    pairs = {
        _key(o): o.partition("=")[2] for o in overrides if not o.startswith(("hydra.", "hydra/"))
    }
    # Hydra is handed the run dir resolved here, so it writes where the checks looked.
    others = [a for a in args if _key(a) != "hydra.run.dir"]
    if "resume" in pairs and pairs["resume"] != "null":
        resume = override_value(f"resume={pairs.pop('resume')}")
        options = parse_run_options({"resume": resume})
        assert options.resume is not None
        run_dir = resume_dir(options.resume)
        total_steps = resume_overrides(pairs)
        lock = RunLock.acquire(run_dir)
        try:
            plan = plan_resume(run_dir, total_steps)
            prepare_run_dir(run_dir, lock)
        except BaseException:
            lock.release()
            raise
        # Continue in the run's own dir; keep its original .hydra/ untouched.
        extra = [
            f"hydra.run.dir={hydra_quoted(str(run_dir))}",
            "hydra.output_subdir=.hydra/resumed",
        ]
        return Launch([*others, *extra], plan, lock)
    composed = [o for o in overrides if _key(o) == "hydra.run.dir" or not o.startswith("hydra")]
    cfg, run_dir_text = compose_run(composed)
    run, raw = split_config(cfg)
    options = parse_run_options(run)
    check_new_run(raw)
    run_dir = Path(run_dir_text).expanduser().absolute()
    lock = claim_new_run_dir(run_dir, options.overwrite)
    return Launch([*others, f"hydra.run.dir={hydra_quoted(str(run_dir))}"], None, lock)


def _claim_sweep_dir(overrides: list[str]) -> None:
    """A sweep given an existing sweep dir of runs: refused, or with overwrite=true emptied of
    those runs' files first (the default sweep dirs are new ones)."""
    given = [o for o in overrides if _key(o) == "hydra.sweep.dir"]
    # With job dirs of their own naming (hydra.sweep.subdir, e.g. to continue an Optuna search
    # in its sweep dir) only the jobs can tell whether theirs held a run: see guarded_task.
    if not given or any(_key(o) == "hydra.sweep.subdir" for o in overrides):
        return
    from dqn_cli.cli.compose import override_value
    from dqn_cli.run_planning import claim_sweep_dir

    overwrite = any(o.lower() in ("overwrite=true", "+overwrite=true") for o in overrides)
    claim_sweep_dir(Path(override_value(given[-1])).expanduser().absolute(), overwrite)


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
    identity = run_identity(run_dir)
    # Parallel sweep jobs share one terminal: their progress bars would overwrite each other.
    if console.is_terminal and HydraConfig.get().mode != RunMode.MULTIRUN:
        reporter = TerminalReporter(config.total_steps, start_step, console)
        route_console_logging(reporter.progress.console)
        with reporter.progress:
            result = train(config, run_dir, reporter, stop, payload, identity)
    else:
        lines = LineReporter(config.total_steps)
        result = train(config, run_dir, lines, stop, payload, identity)
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


def run_identity(run_dir: Path) -> RunIdentity:
    """The run's name in an experiment tracker: a sweep job is named by its dir in the sweep
    (as dqn-report lists it) and grouped by the sweep dir; a single run by its run dir."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dqn_cli.loggers import RunIdentity

    hydra_config = HydraConfig.get()
    if hydra_config.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hydra_config.sweep.dir)
        name = _relative_name(run_dir, sweep_dir)
        return RunIdentity(name, group=str(sweep_dir), group_dir=sweep_dir)
    return RunIdentity(_relative_name(run_dir, Path.cwd()))


def _relative_name(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def guarded_task(cfg: DictConfig, plan: ResumePlan | None) -> float:
    """:func:`run_task` turning user errors, divergence and a failing disk into one line and a
    failed job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dqn_cli.cli.sweeps import requeued_job_plan
    from dqn_cli.training import TrainingDiverged

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        # A single run's dir is claimed by preflight; a sweep job claims its own.
        lock = _claim_job_dir(run_dir) if multirun else None
    except RunDirError as exc:  # another run's dir: record nothing in it
        print(f"dqn-train: error: {one_line(exc)}", file=sys.stderr)
        return math.nan
    try:
        return run_task(cfg, plan or requeued_job_plan(run_dir))
    # OSError: the run dir failed under the run (disk full, removed, ...) outside a checkpoint.
    except (UserError, TrainingDiverged, OSError) as exc:
        message = one_line(exc)
        print(f"dqn-train: error: {message}", file=sys.stderr)
        log.error("%s", message)
        exit_code = 1 if isinstance(exc, TrainingDiverged) else 2
        _record_failure(run_dir, message, exit_code)
        if multirun:
            # Exiting here would abort the other jobs of the sweep; the failure is on record.
            return math.nan
        sys.exit(exit_code)
    except Exception as exc:
        if not multirun:
            raise
        # A crashed job must not stop the sweep either; its traceback goes to train.log.
        log.exception("job crashed")
        _record_failure(run_dir, f"crashed: {type(exc).__name__}: {one_line(exc)}", 1)
        return math.nan
    finally:
        if lock is not None:
            lock.release()


def _claim_job_dir(run_dir: Path) -> RunLock:
    """Lock a sweep job's dir for the job; refuse one where an earlier run left checkpoints,
    unless the scheduler requeued this very job (it resumes from them)."""
    from dqn_cli.cli.sweeps import is_requeued_job

    lock = RunLock.acquire(run_dir)
    if (run_dir / "checkpoints").exists() and not is_requeued_job():
        lock.release()
        raise RunDirError(
            f"job dir {run_dir} already holds a run; its checkpoints are left alone "
            "(choose another hydra.sweep.dir or hydra.sweep.subdir)"
        )
    lock.record_holder()
    return lock


def _record_failure(run_dir: Path, message: str, exit_code: int) -> None:
    """A failed job still leaves a summary.json, so sweep reports can say why it failed.
    ``exit_code`` is the one a single run exits with (2: bad input), also for the sweep's."""
    from dqn_cli.run_state import write_summary

    # The disk that failed the run may refuse this too; the error is printed either way.
    with contextlib.suppress(RunDirError):
        write_summary(run_dir, {"status": "failed", "error": message, "exit_code": exit_code})


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
    if "-sc" in args or "--shell-completion" in args:
        # Hydra's shell completion: its install=bash / query=bash are no config overrides, and
        # the line being completed (COMP_LINE) is Hydra's to parse.
        run_hydra(args, None)
        return
    if "-h" in args or "--help" in args:
        from dqn_cli.cli.keys import render_help
        from dqn_cli.cli.output import print_output

        print_output(render_help())
        return
    try:
        launch = preflight(args)
    except UserError as exc:
        print(f"dqn-train: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    try:
        run_hydra(launch.hydra_args, launch.plan)
    except KeyboardInterrupt:
        print("dqn-train: aborted; the last periodic checkpoint is kept", file=sys.stderr)
        sys.exit(130)
    finally:
        if launch.lock is not None:
            launch.lock.release()


if __name__ == "__main__":
    main()
