"""Sweep reports: read every job of a dqn-train multirun, group seeds, aggregate, tabulate, plot.

A job is any directory under the sweep dir with a ``.hydra/overrides.yaml`` (Hydra writes one per
job, whatever the launcher or sweeper). Jobs whose overrides differ only in ``seed`` form one
configuration; only the override keys whose values differ between jobs ("swept keys") name it.
The terminal front end is ``dqn_cli.cli.report``; nothing here imports Hydra, OmegaConf or rich.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dqn_cli.report_stats import (
    MIN_SEEDS_FOR_INTERVAL,
    Interval,
    Profile,
    StatisticsUnavailable,
    SweepStatistics,
    compute_statistics,
)
from dqn_cli.rundirs import (
    RunDirError,
    describe,
    find_run_dirs,
    is_run_dir,
    last_log_line,
    load_overrides,
    read_json_object,
    read_yaml,
)

# Episodes per window for the running variance of episode return and for smoothing the
# training-return curve; 20 is also the window of dqn-train's progress line.
RETURN_WINDOW = 20
# Points of the common env-step grid that each seed's curve is interpolated onto before the
# seeds are averaged: seeds finish episodes at different steps, so raw points never line up.
GRID_POINTS = 200
# More configurations than this in one axes is a tangle: switch to one subplot per configuration.
MAX_LINES_PER_AXES = 6

TRAIN_RETURN_TAG = "charts/episodic_return"
EVAL_RETURN_TAG = "eval/return_mean"
SEED_KEY = "seed"
# summary.json fields the report reads as numbers (dqn_cli/training.py writes them).
SUMMARY_NUMBERS = (
    "final_eval_return_mean",
    "best_eval_return_mean",
    "total_steps",
    "wall_seconds",
    "steps_per_second",
)


class ReportError(Exception):
    """The sweep dir cannot be reported on; ``str()`` is one line for the user."""


@dataclass(frozen=True)
class Series:
    """One scalar of one job: values at env steps, in step order."""

    steps: np.ndarray
    values: np.ndarray


@dataclass
class Job:
    path: Path
    name: str  # path relative to the sweep dir, e.g. "3"
    overrides: dict[str, str]  # key -> value as typed on the command line (seed included)
    seed: str
    env_id: str | None
    status: str  # "completed" | "failed"
    error: str | None
    summary: dict[str, Any]
    scalars: dict[str, Series] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass
class ConfigStats:
    """One row of the report: the jobs of one configuration, aggregated across seeds."""

    label: str
    swept: dict[str, str]  # swept key -> value ("default" where a job did not set the key)
    jobs: list[Job]
    final_mean: float | None  # mean across completed seeds of their final eval return
    final_std: float | None  # standard deviation of the same (numpy, ddof=0)
    best: float | None  # highest evaluation any seed reached at any evaluation
    steps_to_threshold: float | None  # mean over the seeds that reached it
    reached: int  # seeds whose evaluation reached the threshold
    wall_seconds: float | None  # mean across completed seeds
    steps_per_second: float | None  # mean across completed seeds
    finals: np.ndarray  # each completed seed's final eval return
    env: str  # the env id of its jobs

    @property
    def seeds(self) -> int:
        return len(self.jobs)

    @property
    def completed(self) -> int:
        return sum(job.completed for job in self.jobs)

    @property
    def failed(self) -> int:
        return self.seeds - self.completed

    @property
    def errors(self) -> list[str]:
        return sorted({job.error or "unknown" for job in self.jobs if not job.completed})


@dataclass
class SweepReport:
    sweep_dir: Path
    jobs: list[Job]
    swept_keys: list[str]
    configs: list[ConfigStats]
    threshold: float | None
    threshold_source: str  # "--threshold", "reward threshold of CartPole-v1", or "none"
    skipped: list[str] = field(default_factory=list)  # per job left out: "FILE: why"
    statistics: SweepStatistics | None = None  # None: not asked for, or see statistics_missing
    baseline: str | None = None  # the --baseline overrides, e.g. "buffer=uniform"
    # configuration -> its baseline (None: no baseline shares its other swept values)
    baseline_of: dict[int, int | None] = field(default_factory=dict)
    statistics_missing: str | None = None  # why there are no statistics, one line

    @property
    def failed_jobs(self) -> list[Job]:
        return [job for job in self.jobs if not job.completed]


# ---------------------------------------------------------------------------------------------
# Reading jobs


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """``["buffer=per", "+x=1", "~y"]`` -> ``{"buffer": "per", "x": "1", "y": "(deleted)"}``."""
    parsed: dict[str, str] = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        parsed[key.lstrip("+~")] = value if sep else "(deleted)"
    return parsed


def read_scalars(job_dir: Path) -> dict[str, Series]:
    """Every scalar in the job's TensorBoard event files, keyed by tag. TensorBoard reads a
    truncated or corrupt file up to its first bad record; RunDirError if it still fails."""
    files = sorted(job_dir.glob("events.out.tfevents.*"))
    if not files:
        return {}
    for path in files:
        if not path.is_file():  # a FIFO or a device would block the reader
            raise RunDirError(path, "not a regular file")
    # Imported here: tensorboard's import is slow and only needed once events exist.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # The whole dir, not file by file: a resumed run's second file supersedes the steps the
    # first one logged after its last checkpoint, and the accumulator drops those.
    acc = EventAccumulator(str(job_dir), size_guidance={"scalars": 0})
    try:
        acc.Reload()
        events = {tag: acc.Scalars(tag) for tag in acc.Tags().get("scalars", [])}
    except Exception as exc:  # tensorboard raises its own types for what it cannot read
        raise RunDirError(files[0], f"unreadable TensorBoard events ({exc})") from None
    scalars = {}
    for tag, tagged in events.items():
        steps = np.array([e.step for e in tagged], dtype=np.int64)
        values = np.array([e.value for e in tagged], dtype=np.float64)
        order = np.argsort(steps, kind="stable")
        scalars[tag] = Series(steps[order], values[order])
    return scalars


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_summary(path: Path) -> dict[str, Any]:
    """summary.json, its numbers checked: RunDirError for a field of the wrong type or NaN."""
    summary = read_json_object(path)
    for key in SUMMARY_NUMBERS:
        value = summary.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RunDirError(path, f"{key} is {describe(value)} ({_preview(value)}), not a number")
        if not math.isfinite(value):
            raise RunDirError(path, f"{key} is {value}, not a finite number")
    for key in ("status", "error"):
        value = summary.get(key)
        if value is not None and not isinstance(value, str):
            raise RunDirError(path, f"{key} is {describe(value)}, not a string")
    return summary


def read_config(job_dir: Path) -> dict[str, Any]:
    """The job's composed config; {} where Hydra wrote none (hydra.output_subdir=null)."""
    path = job_dir / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise RunDirError(path, f"holds {describe(config)}, not a mapping of config keys")
    return config


def load_job(job_dir: Path, sweep_dir: Path) -> Job:
    """A job's overrides, config, summary.json and events; a missing summary means failed.
    RunDirError, naming the file, where one of them exists but cannot be used."""
    overrides = parse_overrides(load_overrides(job_dir))
    config = read_config(job_dir)
    env = config.get("env")
    env_id = env.get("id") if isinstance(env, dict) else None
    if not isinstance(env_id, str | None):
        raise RunDirError(job_dir / ".hydra" / "config.yaml", f"env.id is {describe(env_id)}")
    configured_seed = config.get(SEED_KEY, "?")
    if not isinstance(configured_seed, int | str):
        raise RunDirError(
            job_dir / ".hydra" / "config.yaml", f"seed is {describe(configured_seed)}"
        )
    seed = overrides.get(SEED_KEY, str(configured_seed))

    summary: dict[str, Any] = {}
    error: str | None = None
    summary_path = job_dir / "summary.json"
    if summary_path.exists():
        summary = read_summary(summary_path)
        status = summary.get("status", "completed")
        if status != "completed":
            error = summary.get("error") or f"status {status}"
    else:
        last = last_log_line(job_dir)
        error = "no summary.json (killed, crashed or still running)" + (
            f"; last log line: {last}" if last else ""
        )
    name = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else job_dir.name
    return Job(
        path=job_dir,
        name=name,
        overrides=overrides,
        seed=seed,
        env_id=env_id,
        status="completed" if error is None else "failed",
        error=error,
        summary=summary,
        scalars=read_scalars(job_dir),
    )


# ---------------------------------------------------------------------------------------------
# Grouping and aggregation


def find_swept_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value is not the same in every job, seed excluded, in command order."""
    keys: list[str] = []
    for job in jobs:
        keys.extend(k for k in job.overrides if k not in keys and k != SEED_KEY)
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def _short(value: str) -> str:
    """Optuna's floats (lr=0.0006466422717414558) shortened for labels; other values as typed."""
    try:
        number = float(value)
    except ValueError:
        return value
    if re.fullmatch(r"[+-]?\d+", value) or len(value) <= 8:
        return value
    return f"{number:.4g}"


def config_label(swept: dict[str, str]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in swept.items()) or "all jobs"


def steps_to_reach(series: Series | None, threshold: float) -> int | None:
    """The env step of the first evaluation whose mean return is >= threshold."""
    if series is None:
        return None
    hits = np.flatnonzero(series.values >= threshold)
    return int(series.steps[hits[0]]) if hits.size else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def aggregate(
    label: str, swept: dict[str, str], jobs: list[Job], threshold: float | None
) -> ConfigStats:
    done = [job for job in jobs if job.completed]

    def collect(key: str) -> list[float]:
        return [float(job.summary[key]) for job in done if job.summary.get(key) is not None]

    finals = collect("final_eval_return_mean")
    bests = collect("best_eval_return_mean")
    reached_at: list[int] = []
    if threshold is not None:
        for job in done:
            step = steps_to_reach(job.scalars.get(EVAL_RETURN_TAG), threshold)
            if step is not None:
                reached_at.append(step)
    return ConfigStats(
        label=label,
        swept=swept,
        jobs=jobs,
        final_mean=_mean(finals),
        final_std=float(np.std(finals)) if finals else None,
        best=max(bests) if bests else None,
        steps_to_threshold=_mean(reached_at),
        reached=len(reached_at),
        wall_seconds=_mean(collect("wall_seconds")),
        steps_per_second=_mean(collect("steps_per_second")),
        finals=np.array(finals, dtype=np.float64),
        env=", ".join(sorted({job.env_id or "unknown env" for job in jobs})),
    )


def group_jobs(
    jobs: Sequence[Job], swept_keys: Sequence[str]
) -> list[tuple[dict[str, str], list[Job]]]:
    """Jobs with the same values of the swept keys, in order of first appearance."""
    groups: dict[tuple[str, ...], tuple[dict[str, str], list[Job]]] = {}
    for job in jobs:
        swept = {k: job.overrides.get(k, "default") for k in swept_keys}
        groups.setdefault(tuple(swept.values()), (swept, []))[1].append(job)
    return list(groups.values())


def default_threshold(jobs: Sequence[Job]) -> tuple[float | None, str]:
    """The env's registered reward threshold (CartPole-v1: 475) when every job has the same env."""
    env_ids = {job.env_id for job in jobs}
    if len(env_ids) != 1 or None in env_ids:
        return None, "none"
    env_id = str(next(iter(env_ids)))
    try:
        import gymnasium

        threshold = gymnasium.spec(env_id).reward_threshold
    except Exception:  # an unregistered id (its package not importable here): no default
        return None, "none"
    if threshold is None:
        return None, "none"
    return float(threshold), f"reward threshold of {env_id}"


def parse_baseline(text: str) -> dict[str, str]:
    """``"buffer=uniform target=soft"`` -> ``{"buffer": "uniform", "target": "soft"}``."""
    pairs = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ReportError(
                f"--baseline {text!r}: expected KEY=VALUE pairs such as buffer=uniform"
            )
        pairs[key] = value
    if not pairs:
        raise ReportError("--baseline is empty: give KEY=VALUE, e.g. --baseline buffer=uniform")
    return pairs


def match_baselines(
    configs: Sequence[ConfigStats], swept_keys: Sequence[str], text: str
) -> dict[int, int | None]:
    """Each configuration's baseline: the configuration whose swept values match ``text`` and
    equal its own on every other swept key (``--baseline buffer=uniform`` in a buffer x lr sweep
    compares each lr's buffers with the same lr's uniform buffer); None where no configuration
    matches so. The baselines themselves are not compared."""
    wanted = parse_baseline(text)
    for key, value in wanted.items():
        if key not in swept_keys:
            raise ReportError(
                f"--baseline {key}={value}: {key} is not a swept key "
                f"(swept: {', '.join(swept_keys) or 'seed only'})"
            )
        values = list(dict.fromkeys(c.swept[key] for c in configs))
        if value not in values:
            raise ReportError(
                f"--baseline {key}={value}: no configuration has it ({key}: {', '.join(values)})"
            )
    others = [k for k in swept_keys if k not in wanted]
    baselines = [
        i for i, c in enumerate(configs) if all(c.swept[k] == v for k, v in wanted.items())
    ]
    pairs: dict[int, int | None] = {}
    for i, config in enumerate(configs):
        if i in baselines:
            continue
        pairs[i] = None
        for b in baselines:
            if all(configs[b].swept[k] == config.swept[k] for k in others):
                if configs[b].env != config.env:
                    raise ReportError(
                        f"--baseline {text}: {config.label} ({config.env}) and its baseline "
                        f"{configs[b].label} ({configs[b].env}) run different envs, whose "
                        "returns are on different scales; compare configurations of one env"
                    )
                pairs[i] = b
    return pairs


def build_report(
    sweep_dir: Path,
    threshold: float | Literal["env"] | None = "env",
    baseline: str | None = None,
    bootstrap_reps: int | None = None,
) -> SweepReport:
    """Read and aggregate a sweep. ``threshold``: an eval return for the steps-to-threshold
    column, "env" for the env's registered reward threshold (if any), None for no column.
    ``baseline``: KEY=VALUE overrides naming the configuration(s) to compare the others with.
    ``bootstrap_reps``: bootstrap replicates for the intervals; None: no statistics at all."""
    if not sweep_dir.exists():
        raise ReportError(f"{sweep_dir}: no such directory")
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: not a directory")
    job_dirs = [sweep_dir] if is_run_dir(sweep_dir) else find_run_dirs(sweep_dir)
    if not job_dirs:
        raise ReportError(
            f"{sweep_dir}: no dqn-train jobs found (no .hydra/overrides.yaml below it); "
            "pass a multirun sweep dir such as multirun/DATE/TIME"
        )
    jobs, skipped = [], []
    for job_dir in job_dirs:
        try:
            jobs.append(load_job(job_dir, sweep_dir))
        except RunDirError as exc:
            skipped.append(f"{_relative(exc.path, sweep_dir)}: {exc.reason}")
    if not jobs:
        raise ReportError(
            f"{sweep_dir}: no job could be read ({len(skipped)} skipped; first: {skipped[0]})"
        )
    if threshold == "env":
        threshold, source = default_threshold(jobs)
    else:
        source = "none" if threshold is None else "--threshold"
    keys = find_swept_keys(jobs)
    configs = [
        aggregate(config_label(swept), swept, members, threshold)
        for swept, members in group_jobs(jobs, keys)
    ]
    report = SweepReport(sweep_dir, jobs, keys, configs, threshold, source, skipped)
    if baseline is not None:
        report.baseline = baseline
        report.baseline_of = match_baselines(configs, keys, baseline)
    if bootstrap_reps is not None:
        try:
            report.statistics = compute_statistics(
                [c.finals for c in configs],
                [c.env for c in configs],
                [(i, b) for i, b in report.baseline_of.items() if b is not None],
                reps=bootstrap_reps,
            )
        except StatisticsUnavailable as exc:
            if baseline is not None:
                raise ReportError(f"--baseline: {exc}") from None
            report.statistics_missing = str(exc)
    return report


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# Tables: the same cells for the terminal, report.md and (unformatted) report.csv


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def format_steps_to_threshold(stats: ConfigStats, threshold: float | None) -> str:
    if threshold is None or stats.completed == 0:
        return "-"
    if stats.reached == 0:
        return "never"
    text = f"{stats.steps_to_threshold:,.0f}"
    return (
        text if stats.reached == stats.completed else f"{text} ({stats.reached}/{stats.completed})"
    )


IQM_COLUMN = "IQM [95% CI]"
IMPROVEMENT_COLUMN = "P(better than baseline) [95% CI]"


def format_interval(interval: Interval | None, seeds: int, spec: str = ".1f") -> str:
    """``412.3 [398.0, 431.2]``; without the interval below MIN_SEEDS_FOR_INTERVAL seeds."""
    if interval is None:
        return "-"
    point = format(interval.point, spec)
    if seeds < MIN_SEEDS_FOR_INTERVAL:
        plural = "s" if seeds != 1 else ""
        return f"{point} (no CI: {seeds} seed{plural}, need {MIN_SEEDS_FOR_INTERVAL})"
    return f"{point} [{format(interval.low, spec)}, {format(interval.high, spec)}]"


def table_header(report: SweepReport) -> list[str]:
    threshold = "threshold" if report.threshold is None else f"{report.threshold:g}"
    return [
        *(report.swept_keys or ["config"]),
        "seeds",
        "final eval return",
        *([IQM_COLUMN] if report.statistics else []),
        "best eval",
        f"steps to {threshold}",
        "wall time",
        "steps/s",
        "status",
    ]


def table_rows(report: SweepReport) -> list[list[str]]:
    """One row of display strings per configuration, matching ``table_header``."""
    rows = []
    for i, c in enumerate(report.configs):
        names = [_short(v) for v in c.swept.values()] if report.swept_keys else [c.label]
        final = "-"
        if c.final_mean is not None:
            final = f"{c.final_mean:.1f} +- {_fmt(c.final_std)}"
        iqm = []
        if report.statistics:
            iqm = [format_interval(report.statistics.iqm[i], c.finals.size)]
        if c.failed == 0:
            status = "ok"
        elif c.completed == 0:
            status = "failed: " + "; ".join(c.errors)
        else:
            status = f"{c.failed} failed: " + "; ".join(c.errors)
        rows.append(
            [
                *names,
                str(c.seeds),
                final,
                *iqm,
                _fmt(c.best),
                format_steps_to_threshold(c, report.threshold),
                "-" if c.wall_seconds is None else f"{c.wall_seconds:.0f} s",
                _fmt(c.steps_per_second, ",.0f"),
                status,
            ]
        )
    return rows


def improvement_header() -> list[str]:
    return ["configuration", "baseline", IMPROVEMENT_COLUMN, "seeds"]


def improvement_rows(report: SweepReport) -> list[list[str]]:
    """Per configuration compared with a baseline: the probability that a seed of it ends with a
    higher final eval return than a seed of the baseline (ties count half)."""
    rows = []
    for i, b in report.baseline_of.items():
        config = report.configs[i]
        if b is None:
            others = [
                k for k in report.swept_keys if k not in parse_baseline(report.baseline or "")
            ]
            same = " ".join(f"{k}={config.swept[k]}" for k in others)
            rows.append([config.label, f"none with {same}", "-", str(config.finals.size)])
            continue
        base = report.configs[b]
        interval = report.statistics.improvement.get((i, b)) if report.statistics else None
        seeds = min(config.finals.size, base.finals.size)
        rows.append(
            [
                config.label,
                base.label,
                format_interval(interval, seeds, ".2f"),
                f"{config.finals.size} vs {base.finals.size}",
            ]
        )
    return rows


def job_overrides(report: SweepReport, job: Job) -> str:
    """What tells a job apart: its swept overrides and seed (all its overrides if none)."""
    keys = [*report.swept_keys, SEED_KEY] if report.swept_keys else list(job.overrides)
    return " ".join(f"{k}={job.overrides[k]}" for k in keys if k in job.overrides)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def statistics_note(report: SweepReport) -> str:
    """How the IQM and the probability of improvement are computed, in one paragraph."""
    if report.statistics is None:
        return f"No IQM or probability of improvement: {report.statistics_missing}."
    return (
        "IQM: interquartile mean of the seeds' final eval returns (the mean of the middle 50% "
        f"of seeds), with a 95% stratified-bootstrap percentile interval (rliable, "
        f"{report.statistics.reps} replicates, seeded); no interval below "
        f"{MIN_SEEDS_FOR_INTERVAL} seeds, where a nominal 95% interval covers the true IQM far "
        "less often than 95%."
    )


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows)
    return lines


def render_markdown(report: SweepReport, plots: Sequence[Path] = ()) -> str:
    n_failed = len(report.failed_jobs)
    lines = [
        f"# Sweep report: {report.sweep_dir}",
        "",
        f"{len(report.jobs)} jobs ({len(report.jobs) - n_failed} completed, {n_failed} failed) "
        f"in {len(report.configs)} configurations; swept: "
        f"{', '.join(report.swept_keys) or 'seed only'}.",
        "Final eval return: mean +- std across seeds of each seed's last greedy evaluation. "
        "Best eval: the highest evaluation any seed reached.",
        statistics_note(report),
        f"Steps to threshold: env steps to the first evaluation >= {_fmt(report.threshold, 'g')} "
        f"({report.threshold_source}), mean over the seeds that reached it (reached/completed).",
        "",
        *_md_table(table_header(report), table_rows(report)),
    ]
    if report.baseline is not None:
        lines += [
            "",
            f"## Probability of improvement over {report.baseline}",
            "",
            "The probability that a seed of the configuration ends with a higher final eval "
            "return than a seed of its baseline (ties count half); 0.5: no difference.",
            "",
            *_md_table(improvement_header(), improvement_rows(report)),
        ]
    if report.failed_jobs:
        lines += ["", "## Failed jobs", "", "| job | overrides | reason |", "|---|---|---|"]
        for job in report.failed_jobs:
            overrides = job_overrides(report, job)
            lines.append(
                f"| {_md_cell(job.name)} | {_md_cell(overrides)} | {_md_cell(job.error or '')} |"
            )
    if report.skipped:
        lines += ["", "## Skipped jobs (unreadable files)", ""]
        lines.extend(f"- {_md_cell(line)}" for line in report.skipped)
    if plots:
        lines += ["", "## Plots", ""]
        lines.extend(f"![{p.stem}]({p.name})" for p in plots)
    return "\n".join(lines) + "\n"


def render_csv(report: SweepReport) -> str:
    """One row per configuration with raw numbers (empty where there is none; intervals empty
    below MIN_SEEDS_FOR_INTERVAL seeds)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "config",
            *report.swept_keys,
            "seeds",
            "completed",
            "failed",
            "final_eval_return_mean",
            "final_eval_return_std",
            "iqm",
            "iqm_ci_low",
            "iqm_ci_high",
            "baseline",
            "p_improvement",
            "p_improvement_ci_low",
            "p_improvement_ci_high",
            "best_eval_return",
            "threshold",
            "steps_to_threshold",
            "reached_threshold",
            "wall_seconds",
            "steps_per_second",
            "errors",
        ]
    )

    def num(value: float | None) -> str:
        return "" if value is None or math.isnan(value) else repr(float(value))

    def interval(value: Interval | None, seeds: int) -> list[str]:
        if value is None:
            return ["", "", ""]
        if seeds < MIN_SEEDS_FOR_INTERVAL:
            return [num(value.point), "", ""]
        return [num(value.point), num(value.low), num(value.high)]

    stats = report.statistics
    for i, c in enumerate(report.configs):
        b = report.baseline_of.get(i)
        base = report.configs[b] if b is not None else None
        improvement = stats.improvement.get((i, b)) if stats and b is not None else None
        writer.writerow(
            [
                c.label,
                *c.swept.values(),
                c.seeds,
                c.completed,
                c.failed,
                num(c.final_mean),
                num(c.final_std),
                *interval(stats.iqm[i] if stats else None, c.finals.size),
                base.label if base else "",
                *interval(improvement, min(c.finals.size, base.finals.size) if base else 0),
                num(c.best),
                num(report.threshold),
                num(c.steps_to_threshold),
                c.reached if report.threshold is not None else "",
                num(c.wall_seconds),
                num(c.steps_per_second),
                "; ".join(c.errors),
            ]
        )
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Curves: per seed, a statistic at each env step; across seeds, mean and std on a common grid


@dataclass(frozen=True)
class Curve:
    """One configuration's statistic across seeds on an env-step grid (NaN: a seed has no data)."""

    label: str
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray  # across seeds (ddof=0); NaN with a single seed
    seeds: int


def rolling(values: np.ndarray, window: int, stat: str) -> np.ndarray:
    """Mean ("mean") or variance ("var", ddof=0) of the last ``window`` values at each index.

    The mean uses the episodes so far while fewer than ``window`` exist; the variance needs a
    full window (the variance of 2 or 3 episodes says little) and is NaN before it.
    """
    n = len(values)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    csum = np.concatenate([[0.0], np.cumsum(values)])
    csq = np.concatenate([[0.0], np.cumsum(values * values)])
    end = np.arange(1, n + 1)
    start = np.maximum(end - window, 0)
    count = end - start
    mean = (csum[end] - csum[start]) / count
    if stat == "mean":
        return mean
    var = np.maximum((csq[end] - csq[start]) / count - mean * mean, 0.0)
    out[count >= window] = var[count >= window]
    return out


def _on_grid(steps: np.ndarray, values: np.ndarray, grid: np.ndarray, end: float) -> np.ndarray:
    """Linear interpolation onto ``grid``: NaN before the first point, the last value held to
    ``end`` (a running statistic does not change until the next episode ends), NaN after it."""
    ok = ~np.isnan(values)
    steps, values = steps[ok], values[ok]
    out = np.full(grid.shape, np.nan)
    if steps.size == 0:
        return out
    inside = (grid >= steps[0]) & (grid <= max(end, steps[-1]))
    out[inside] = np.interp(grid[inside], steps, values)
    return out


def _job_statistic(job: Job, kind: str) -> tuple[np.ndarray, np.ndarray] | None:
    if kind == "eval":
        series = job.scalars.get(EVAL_RETURN_TAG)
        return None if series is None else (series.steps, series.values)
    series = job.scalars.get(TRAIN_RETURN_TAG)
    if series is None:
        return None
    stat = "mean" if kind == "train" else "var"
    return series.steps, rolling(series.values, RETURN_WINDOW, stat)


def config_curve(stats: ConfigStats, kind: str) -> Curve | None:
    """``kind``: "train" (return, mean of the last RETURN_WINDOW episodes), "eval" (greedy eval
    return) or "variance" (variance of the last RETURN_WINDOW episode returns)."""
    per_job = []
    for job in stats.jobs:
        data = _job_statistic(job, kind)
        if data is not None and data[0].size:
            end = float(job.summary.get("total_steps") or data[0][-1])
            per_job.append((data[0], data[1], end))
    if not per_job:
        return None
    last = max(end for _, _, end in per_job)
    grid = np.linspace(0.0, last, GRID_POINTS)
    # Eval points are few and the same for every seed: keep them exactly instead of a grid.
    if kind == "eval":
        grid = np.unique(np.concatenate([steps for steps, _, _ in per_job])).astype(np.float64)
    stacked = np.vstack([_on_grid(s, v, grid, end) for s, v, end in per_job])
    # Only where every seed has a value: a mean over a changing set of seeds jumps whenever a
    # seed joins (the running variance starts at each seed's 20th episode, at different steps).
    every = ~np.isnan(stacked).any(axis=0)
    mean = np.full(grid.shape, np.nan)
    std = np.full(grid.shape, np.nan)
    mean[every] = stacked[:, every].mean(axis=0)
    if len(per_job) > 1:
        std[every] = stacked[:, every].std(axis=0)
    return Curve(stats.label, grid, mean, std, len(per_job))


PLOTS = {
    # file stem: (curve kind, title, y label)
    "train_return": (
        "train",
        f"Training return (mean of the last {RETURN_WINDOW} episodes)",
        "episode return",
    ),
    "eval_return": ("eval", "Greedy evaluation return", "mean eval return"),
    "return_variance": (
        "variance",
        f"Running variance of episode return (last {RETURN_WINDOW} episodes)",
        "variance of episode return",
    ),
}


def _draw(ax: Axes, curve: Curve, color: Any, label: str | None, nonnegative: bool) -> None:
    # Markers where points are sparse (evaluations), so a straight segment is not mistaken for
    # measured data between them.
    marker = "o" if np.isfinite(curve.mean).sum() <= 30 else None
    ax.plot(curve.steps, curve.mean, color=color, linewidth=1.6, marker=marker, ms=3, label=label)
    if np.any(~np.isnan(curve.std)):
        low = curve.mean - curve.std
        ax.fill_between(
            curve.steps,
            np.maximum(low, 0.0) if nonnegative else low,  # a variance band stops at 0
            curve.mean + curve.std,
            color=color,
            alpha=0.2,
            linewidth=0,
        )


def _curve_name(curve: Curve) -> str:
    return f"{curve.label} ({curve.seeds} seed{'s' if curve.seeds != 1 else ''})"


def build_curve_figure(
    curves: Sequence[Curve], title: str, ylabel: str, nonnegative: bool = False
) -> Figure:
    """One axes with a line per configuration, or, beyond MAX_LINES_PER_AXES configurations,
    small multiples: one subplot per configuration on shared axes, the others in grey behind."""
    fig = Figure(layout="constrained")
    FigureCanvasAgg(fig)  # Agg: renders to PNG without any display or GUI toolkit
    colors = [f"C{i % 10}" for i in range(len(curves))]
    band = "line: mean across seeds, shaded: \u00b11 std"
    if len(curves) <= MAX_LINES_PER_AXES:
        fig.set_size_inches(8, 5)
        ax = fig.add_subplot()
        for curve, color in zip(curves, colors, strict=True):
            _draw(ax, curve, color, _curve_name(curve), nonnegative)
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}\n{band}", fontsize=11)
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=8, loc="best")
        return fig

    cols = math.ceil(math.sqrt(len(curves)))
    rows = math.ceil(len(curves) / cols)
    fig.set_size_inches(3.2 * cols + 0.6, 2.5 * rows + 0.9)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for i, (curve, color) in enumerate(zip(curves, colors, strict=True)):
        ax = axes[i]
        for other in curves:
            if other is not curve:
                ax.plot(other.steps, other.mean, color="0.8", linewidth=0.8)
        _draw(ax, curve, color, None, nonnegative)
        ax.set_title(_curve_name(curve), fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}\n{band}; grey: the other configurations", fontsize=11)
    fig.supxlabel("env steps", fontsize=9)
    fig.supylabel(ylabel, fontsize=9)
    return fig


PROFILE_STEM = "performance_profile"


def build_profile_figure(profiles: Sequence[tuple[str, Profile]], seeds: Sequence[int]) -> Figure:
    """Score distributions (rliable's performance profiles): per configuration, the fraction of
    its seeds whose final eval return is above each tau, with its 95% bootstrap band; one panel
    per env, since returns of different envs are on different scales."""
    fig = Figure(layout="constrained")
    FigureCanvasAgg(fig)
    envs = list(dict.fromkeys(profile.env for _, profile in profiles))
    fig.set_size_inches(8 if len(envs) == 1 else 5.5 * len(envs), 5)
    axes = fig.subplots(1, len(envs), squeeze=False).ravel()
    for ax, env in zip(axes, envs, strict=True):
        for i, ((label, profile), n) in enumerate(zip(profiles, seeds, strict=True)):
            if profile.env != env:
                continue
            color = f"C{i % 10}"
            name = f"{label} ({n} seed{'s' if n != 1 else ''})"
            ax.plot(
                profile.taus,
                profile.fraction,
                color=color,
                linewidth=1.6,
                label=name,
                drawstyle="steps-post",  # a fraction of seeds changes only at a seed's return
            )
            if n >= MIN_SEEDS_FOR_INTERVAL:
                ax.fill_between(
                    profile.taus,
                    profile.low,
                    profile.high,
                    color=color,
                    alpha=0.15,
                    linewidth=0,
                    step="post",
                )
        ax.set_xlabel(f"final eval return \u03c4 ({env})")
        ax.set_ylabel("fraction of seeds with final return > \u03c4")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(
        "Performance profile (score distribution) of the final eval return\n"
        f"shaded: 95% stratified-bootstrap interval ({MIN_SEEDS_FOR_INTERVAL}+ seeds)",
        fontsize=11,
    )
    return fig


def write_plots(report: SweepReport, out_dir: Path) -> list[Path]:
    """The PNGs of the report; a plot no job has data for is skipped."""
    written = []
    for stem, (kind, title, ylabel) in PLOTS.items():
        curves = [c for c in (config_curve(s, kind) for s in report.configs) if c is not None]
        if not curves:
            continue
        fig = build_curve_figure(curves, title, ylabel, nonnegative=kind == "variance")
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    if report.statistics is not None:
        drawn = [
            ((c.label, profile), c.finals.size)
            for c, profile in zip(report.configs, report.statistics.profiles, strict=True)
            if profile is not None
        ]
        if drawn:
            fig = build_profile_figure([d[0] for d in drawn], [d[1] for d in drawn])
            path = out_dir / f"{PROFILE_STEM}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
    return written


@dataclass(frozen=True)
class Outputs:
    markdown: Path
    csv: Path
    plots: list[Path]


def write_report(report: SweepReport, out_dir: Path) -> Outputs:
    """report.md, report.csv and the plots into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, out_dir)
    md = out_dir / "report.md"
    md.write_text(render_markdown(report, plots))
    table = out_dir / "report.csv"
    table.write_text(render_csv(report))
    return Outputs(md, table, plots)
