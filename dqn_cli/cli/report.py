"""``dqn-report SWEEP_DIR``: summarise a dqn-train sweep as a table, report.md/csv and plots."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

from dqn_cli.cli.output import quiet_broken_pipe
from dqn_cli.report import (
    IMPROVEMENT_COLUMN,
    IQM_COLUMN,
    RETURN_WINDOW,
    ReportError,
    SweepReport,
    build_report,
    improvement_header,
    improvement_rows,
    job_overrides,
    statistics_note,
    table_header,
    table_rows,
    write_report,
)
from dqn_cli.report_stats import DEFAULT_BOOTSTRAP_REPS

PROG = "dqn-report"


class ReportConsole(Console):
    """rich's console, ending quietly with exit 0 when the reader goes away (``| head -1``);
    rich's own handling exits 1."""

    def on_broken_pipe(self) -> None:
        quiet_broken_pipe()


def _threshold(text: str) -> float | Literal["env"] | None:
    """A finite number; "env" for the env's reward threshold; "none" for no such column."""
    if text.lower() in ("env", "none"):
        return "env" if text.lower() == "env" else None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


MIN_BOOTSTRAP_REPS = 100  # fewer leave under 3 replicates in each 2.5% tail of a 95% interval


def _bootstrap_reps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < MIN_BOOTSTRAP_REPS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_BOOTSTRAP_REPS}, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Summarise a dqn-train sweep (multirun) dir: one row per configuration, seeds "
            "grouped; writes report.md, report.csv and PNG plots of the training return, the "
            "eval return, the running variance of episode return "
            f"(window {RETURN_WINDOW} episodes) and the performance profile of the final "
            "return. Per configuration: mean +- std and the interquartile mean (IQM) with a 95% "
            "stratified-bootstrap interval (rliable) of the seeds' final eval returns."
        ),
    )
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="e.g. multirun/DATE/TIME")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where to write report.md, report.csv and the PNGs (default: SWEEP_DIR)",
    )
    parser.add_argument(
        "--threshold",
        type=_threshold,
        default="env",
        metavar="R",
        help=(
            "eval return for the 'steps to R' column (default: the env's registered reward "
            "threshold, e.g. 475 for CartPole-v1, or none if it has none; 'none': no such column)"
        ),
    )
    parser.add_argument(
        "--baseline",
        metavar="KEY=VALUE",
        help=(
            "the configuration(s) to compare the others with, by their swept values, e.g. "
            "'buffer=uniform' (several: 'buffer=uniform target=hard'): adds a table of the "
            "probability that each configuration beats its baseline; with other keys swept "
            "too, each configuration is compared with the baseline of equal other values"
        ),
    )
    parser.add_argument(
        "--bootstrap-reps",
        type=_bootstrap_reps,
        default=DEFAULT_BOOTSTRAP_REPS,
        metavar="N",
        help=(
            f"bootstrap replicates for the 95%% intervals (default {DEFAULT_BOOTSTRAP_REPS}, "
            "seeded: the same sweep gives the same intervals)"
        ),
    )
    return parser.parse_args(argv)


def rich_table(report: SweepReport) -> Table:
    title = f"dqn-report: {report.sweep_dir}"
    table = Table(title=title, title_justify="left")
    header = table_header(report)
    numeric = {"seeds", "final eval return", IQM_COLUMN, "best eval", "wall time", "steps/s"}
    rows = table_rows(report)
    for name in header:
        numeric_column = name in numeric or name.startswith("steps to")
        table.add_column(name, justify="right" if numeric_column else "left", overflow="fold")
    for row, stats in zip(rows, report.configs, strict=True):
        style = "red" if stats.completed == 0 else ("yellow" if stats.failed else None)
        table.add_row(*row, style=style)
    return table


def improvement_table(report: SweepReport) -> Table:
    table = Table(title=f"probability of improvement over {report.baseline}", title_justify="left")
    for name in improvement_header():
        numeric = name in (IMPROVEMENT_COLUMN, "seeds")
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in improvement_rows(report):
        table.add_row(*row)
    return table


def failed_table(report: SweepReport) -> Table:
    table = Table(title="failed jobs", title_justify="left", title_style="red")
    table.add_column("job")
    table.add_column("overrides", overflow="fold")
    table.add_column("reason", overflow="fold")
    for job in report.failed_jobs:
        table.add_row(job.name, job_overrides(report, job), job.error or "unknown")
    return table


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def print_report(console: Console, report: SweepReport, written: list[Path]) -> None:
    console.print(rich_table(report))
    if report.baseline is not None:
        console.print(improvement_table(report))
    if report.failed_jobs:
        console.print(failed_table(report))
    threshold = (
        "none" if report.threshold is None else f"{report.threshold:g} ({report.threshold_source})"
    )
    console.print(
        f"{len(report.jobs)} jobs, {len(report.configs)} configurations; threshold {threshold}; "
        "final eval return: mean +- std across seeds",
        highlight=False,
    )
    if report.statistics is not None:
        console.print(statistics_note(report), highlight=False)
    for path in written:
        console.print(f"wrote {path}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = ReportConsole()
    if not console.is_terminal:
        # Piped into a file or a CI log: no terminal to fit, so do not fold rows at 80 columns.
        console = ReportConsole(width=200)
    try:
        report = build_report(
            args.sweep_dir,
            threshold=args.threshold,
            baseline=args.baseline,
            bootstrap_reps=args.bootstrap_reps,
        )
        out_dir = args.out if args.out is not None else args.sweep_dir
        outputs = write_report(report, out_dir)
    except (ReportError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    for line in report.skipped:
        warn(f"skipped job: {line}")
    if report.statistics_missing:
        warn(f"no IQM, intervals or performance profile: {report.statistics_missing}")
    print_report(console, report, [outputs.markdown, outputs.csv, *outputs.plots])


if __name__ == "__main__":
    main()
