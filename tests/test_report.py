"""dqn-report: grouping, aggregation, report files and plots, on a real (tiny) joblib sweep."""

import csv
import json
import shutil

import numpy as np
import pytest
import yaml

from dqn_cli.report import (
    MAX_LINES_PER_AXES,
    RETURN_WINDOW,
    Curve,
    build_curve_figure,
    build_report,
    config_curve,
    rolling,
    write_report,
)


def summaries_by_buffer(sweep):
    by_buffer = {}
    for job in sweep.iterdir():
        if not (job / ".hydra" / "overrides.yaml").is_file():
            continue
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        buffer = next(o.split("=", 1)[1] for o in overrides if o.startswith("buffer="))
        by_buffer.setdefault(buffer, []).append(json.loads((job / "summary.json").read_text()))
    return by_buffer


@pytest.fixture(scope="module")
def reported(grid_sweep, run_command):
    """dqn-report run once on the 2 configurations x 2 seeds sweep, writing into the sweep dir."""
    done, sweep = grid_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    report = run_command("dqn-report", str(sweep), cwd=sweep.parent, timeout=120)
    return report, sweep


def test_table_has_one_row_per_configuration_with_seed_means(reported):
    done, sweep = reported
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for column in ("buffer", "seeds", "final eval return", "best eval", "steps to 475", "steps/s"):
        assert column in out
    lines = {
        name: line for line in out.splitlines() for name in ("uniform", "none") if name in line
    }
    assert set(lines) == {"uniform", "none"}
    for buffer, summaries in summaries_by_buffer(sweep).items():
        finals = [s["final_eval_return_mean"] for s in summaries]
        assert len(finals) == 2
        cells = [c.strip() for c in lines[buffer].split("\u2502")]
        assert "2" in cells  # seeds
        assert f"{np.mean(finals):.1f} +- {np.std(finals):.1f}" in lines[buffer]


def test_csv_numbers_match_the_summaries(reported):
    _, sweep = reported
    with (sweep / "report.csv").open() as f:
        rows = {row["buffer"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"uniform", "none"}
    for buffer, summaries in summaries_by_buffer(sweep).items():
        row = rows[buffer]
        finals = [s["final_eval_return_mean"] for s in summaries]
        assert row["config"] == f"buffer={buffer}"
        assert (row["seeds"], row["completed"], row["failed"]) == ("2", "2", "0")
        assert float(row["final_eval_return_mean"]) == pytest.approx(np.mean(finals))
        assert float(row["final_eval_return_std"]) == pytest.approx(np.std(finals))
        best = max(s["best_eval_return_mean"] for s in summaries)
        assert float(row["best_eval_return"]) == pytest.approx(best)
        wall = np.mean([s["wall_seconds"] for s in summaries])
        assert float(row["wall_seconds"]) == pytest.approx(wall)
        sps = np.mean([s["steps_per_second"] for s in summaries])
        assert float(row["steps_per_second"]) == pytest.approx(sps)
        assert float(row["threshold"]) == 475.0  # CartPole-v1's reward threshold
        assert row["errors"] == ""


def test_markdown_report_and_plots_are_written(reported):
    import matplotlib.image

    _, sweep = reported
    md = (sweep / "report.md").read_text()
    assert "| buffer | seeds | final eval return |" in md
    assert "| uniform | 2 |" in md and "| none | 2 |" in md
    for name in ("train_return", "eval_return", "return_variance"):
        png = sweep / f"{name}.png"
        assert f"]({name}.png)" in md
        assert png.stat().st_size > 20_000
        pixels = matplotlib.image.imread(png)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500
        assert pixels[..., :3].std() > 0.05  # drawn, not a blank canvas


def test_threshold_column_counts_env_steps_to_the_first_good_evaluation(grid_sweep, tmp_path):
    _, sweep = grid_sweep
    # Every tiny run's first evaluation (at step 500) already returns more than 1.
    report = build_report(sweep, threshold=1.0)
    assert [c.steps_to_threshold for c in report.configs] == [500.0, 500.0]
    assert [c.reached for c in report.configs] == [2, 2]
    never = build_report(sweep, threshold=1e6)
    assert all(c.steps_to_threshold is None and c.reached == 0 for c in never.configs)
    none = build_report(sweep, threshold=None)
    assert none.threshold is None
    write_report(none, tmp_path)
    assert "steps to threshold" in (tmp_path / "report.md").read_text()


def test_curves_average_seeds_on_a_common_step_grid(grid_sweep):
    _, sweep = grid_sweep
    report = build_report(sweep)
    assert report.swept_keys == ["buffer"]
    assert [len(c.jobs) for c in report.configs] == [2, 2]
    for stats in report.configs:
        for kind in ("train", "eval", "variance"):
            curve = config_curve(stats, kind)
            assert curve is not None and curve.seeds == 2
            finite = np.isfinite(curve.mean)
            assert finite.sum() >= 3
            assert curve.steps[finite].max() == 1500
            assert np.isfinite(curve.std[finite]).all()
        evals = config_curve(stats, "eval")
        assert list(evals.steps) == [500, 1000, 1500]


def fake_sweep(source_job, root, values):
    """A sweep dir of copies of one real job, one per target.period value (no training)."""
    root.mkdir()
    for i, value in enumerate(values):
        job = root / str(i)
        shutil.copytree(source_job, job, ignore=shutil.ignore_patterns("checkpoints"))
        overrides = [f"target.period={value}", "seed=0", "total_steps=1500"]
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return root


def test_nine_configurations_are_drawn_as_small_multiples(grid_sweep, tmp_path):
    _, sweep = grid_sweep
    values = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
    fake = fake_sweep(sweep / "0", tmp_path / "nine", values)
    report = build_report(fake)
    assert report.swept_keys == ["target.period"]
    assert len(report.configs) == 9
    curves = [config_curve(c, "train") for c in report.configs]
    fig = build_curve_figure(curves, "Training return", "return")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 9  # one per configuration, on a 3 x 3 grid
    assert [ax.get_title() for ax in visible] == [f"target.period={v} (1 seed)" for v in values]
    assert len({ax.get_subplotspec().get_geometry()[:2] for ax in visible}) == 1
    assert visible[0].get_shared_x_axes().joined(visible[0], visible[8])
    assert fig._suptitle is not None and "Training return" in fig._suptitle.get_text()
    outputs = write_report(report, tmp_path / "out")
    assert [p.name for p in outputs.plots] == [
        "train_return.png",
        "eval_return.png",
        "return_variance.png",
    ]  # no performance profile: build_report computes statistics only when asked


def test_few_configurations_share_one_axes_with_a_legend_of_swept_values():
    steps = np.linspace(0, 1000, 50)
    curves = [
        Curve(f"buffer={name}", steps, np.sin(steps / 100) + i, np.full(50, 0.1), 3)
        for i, name in enumerate(["uniform", "per", "none"])
    ]
    assert len(curves) <= MAX_LINES_PER_AXES
    fig = build_curve_figure(curves, "Training return", "episode return")
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlabel() == "env steps" and ax.get_ylabel() == "episode return"
    assert "Training return" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["buffer=uniform (3 seeds)", "buffer=per (3 seeds)", "buffer=none (3 seeds)"]


def test_a_job_killed_without_summary_is_reported_failed_with_its_last_log_line(
    grid_sweep, tmp_path
):
    _, sweep = grid_sweep
    fake = fake_sweep(sweep / "0", tmp_path / "killed", [100, 200])
    (fake / "1" / "summary.json").unlink()
    with (fake / "1" / "train.log").open("a") as log:
        log.write("[2026-11-21 10:00:00,000][INFO] step 1000/1500  900 steps/s\n")
    report = build_report(fake)
    ok, killed = report.configs
    assert ok.failed == 0 and killed.failed == 1
    (job,) = report.failed_jobs
    assert job.name == "1"
    assert "no summary.json" in job.error
    assert "step 1000/1500" in job.error
    # Its events are still there: the plots keep its partial curves.
    assert config_curve(killed, "train") is not None


def test_rolling_mean_and_variance_over_a_window_of_episodes():
    values = np.arange(30, dtype=float)
    mean = rolling(values, RETURN_WINDOW, "mean")
    assert mean[0] == 0 and mean[1] == 0.5  # partial windows at the start
    assert mean[29] == pytest.approx(values[10:30].mean())
    var = rolling(values, RETURN_WINDOW, "var")
    assert np.isnan(var[: RETURN_WINDOW - 1]).all()  # needs a full window
    assert var[29] == pytest.approx(values[10:30].var())
    assert var[RETURN_WINDOW - 1] == pytest.approx(values[:RETURN_WINDOW].var())


@pytest.mark.parametrize("setup", ["missing", "empty", "file"])
def test_bad_sweep_dir_is_one_line_and_exit_2(setup, run_command, tmp_path):
    target = tmp_path / "target"
    if setup == "empty":
        target.mkdir()
    elif setup == "file":
        target.write_text("not a dir")
    done = run_command("dqn-report", str(target), cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("dqn-report: error: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_out_dir_is_created_and_threshold_none_drops_the_column(grid_sweep, run_command, tmp_path):
    _, sweep = grid_sweep
    out = tmp_path / "a" / "b"
    done = run_command(
        "dqn-report", str(sweep), "--out", str(out), "--threshold", "none", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.csv",
        "train_return.png",
        "eval_return.png",
        "return_variance.png",
        "performance_profile.png",
    }
    assert "steps to threshold" in done.stdout
    # 2 seeds per configuration: an IQM, but too few seeds for an interval.
    assert "no CI: 2 seeds, need 5" in done.stdout
