"""The progress display of ``dqn-train``: a rich bar on a terminal, log lines elsewhere, and
the summary table at the end."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dqn_cli.config import TrainConfig
from dqn_cli.training import Progress as TrainProgress
from dqn_cli.training import TrainResult

log = logging.getLogger("dqn_cli")


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


def route_console_logging(console: Console) -> None:
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
