"""``dqn-train``: compose the config with Hydra, validate it, train, report."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dqn_cli.checkpoint import CheckpointError
from dqn_cli.config import ConfigError, TrainConfig, parse_train_config
from dqn_cli.envs import EnvError
from dqn_cli.training import DeviceError, TrainResult, train
from dqn_cli.training import Progress as TrainProgress

log = logging.getLogger("dqn_cli")

# Errors the user can fix from the command line: one line, exit code 2, no traceback.
USER_ERRORS = (ConfigError, EnvError, DeviceError, CheckpointError)


class TerminalReporter:
    """A rich progress bar; log records are printed above it instead of through it."""

    def __init__(self, total_steps: int, console: Console) -> None:
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
            "training", total=total_steps, sps=0.0, ret="-", eval="-", eps=1.0
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
    rows = [
        (
            "algorithm / buffer / target",
            f"{config.algo.name} / {config.buffer.kind} / {config.target.kind}",
        ),
        ("env steps", f"{result.total_steps:,}"),
        ("episodes", f"{result.episodes:,}"),
        (
            "final eval return",
            f"{result.final_eval.mean:.1f} +- {result.final_eval.std:.1f} "
            f"({len(result.final_eval.returns)} episodes)",
        ),
        ("best eval return", f"{result.best_eval_return_mean:.1f}"),
        ("wall time", f"{result.wall_seconds:.1f} s"),
        ("steps/s", f"{result.steps_per_second:,.0f}"),
        ("run dir", str(run_dir)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def run(cfg: DictConfig) -> float:
    """Train from a composed config; returns the final eval return (for Hydra sweepers)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    raw: Any = OmegaConf.to_container(cfg, resolve=True)
    config = parse_train_config(raw)
    console = Console()
    if console.is_terminal:
        reporter = TerminalReporter(config.total_steps, console)
        _route_console_logging(reporter.progress.console)
        with reporter.progress:
            result = train(config, run_dir, reporter)
    else:
        result = train(config, run_dir, LineReporter(config.total_steps))
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


@hydra.main(version_base="1.3", config_path="pkg://dqn_cli.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float:
    try:
        return run(cfg)
    except USER_ERRORS as exc:
        print(f"dqn-train: error: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _hydra_entry()


if __name__ == "__main__":
    main()
