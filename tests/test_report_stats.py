"""dqn-report's statistics: IQM, probability of improvement, performance profile, their bootstrap
intervals (rliable), the --baseline matching and the too-few-seeds rule."""

import csv
import sys
import time

import numpy as np
import pytest
from rliable import library, metrics

from dqn_cli.cli.report import main
from dqn_cli.report import build_profile_figure, build_report, write_report
from dqn_cli.report_stats import (
    DEFAULT_BOOTSTRAP_REPS,
    MIN_SEEDS_FOR_INTERVAL,
    compute_statistics,
    interquartile_mean,
    probability_of_improvement,
    score_distribution,
)
from tests.sweep_factory import write_sweep

UNIFORM = [180.0, 420.0, 500.0, 310.0, 455.0]
NONE = [95.0, 130.0, 120.0, 101.0, 240.0]


def run_report(capfd, *argv):
    """dqn-report in this process (the installed command is tested in test_report*.py):
    ``(exit code, stdout, stderr)``."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture
def replay_sweep(tmp_path):
    return write_sweep(tmp_path / "sweep", {"buffer=uniform": UNIFORM, "buffer=none": NONE})


def test_statistics_are_rliables_on_each_configuration():
    rng = np.random.default_rng(3)
    finals = [rng.normal(100 + 20 * i, 40, size=n) for i, n in enumerate([5, 5, 7, 3])]
    stats = compute_statistics(finals, ["CartPole-v1"] * 4, [(1, 0), (2, 0), (3, 0)])
    for i, scores in enumerate(finals):
        assert stats.iqm[i].point == pytest.approx(metrics.aggregate_iqm(scores[:, None]))
        assert interquartile_mean(scores[:, None])[0] == pytest.approx(
            metrics.aggregate_iqm(scores[:, None])
        )
    for i in (1, 2, 3):
        expected = metrics.probability_of_improvement(finals[i][:, None], finals[0][:, None])
        assert stats.improvement[(i, 0)].point == pytest.approx(expected)
        assert probability_of_improvement(finals[i][:, None], finals[0][:, None])[0] == (
            pytest.approx(expected)
        )
    taus = stats.profiles[2].taus
    assert stats.profiles[2].fraction == pytest.approx(
        library.score_distributions(finals[2][:, None], taus)
    )
    assert score_distribution(finals[2][:, None], taus[None, :])[0] == pytest.approx(
        stats.profiles[2].fraction
    )


def test_intervals_agree_with_rliables_bootstrap_of_one_configuration():
    rng = np.random.default_rng(5)
    finals = [rng.normal(200, 60, size=8), rng.normal(260, 60, size=8)]
    stats = compute_statistics(finals, ["CartPole-v1"] * 2, [(1, 0)], reps=4000)
    np.random.seed(1)
    _, reference = library.get_interval_estimates(
        {"a": finals[1][:, None]}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=4000
    )
    low, high = reference["a"][:, 0]
    ours = stats.iqm[1]
    width = high - low
    # Two independent 4000-replicate bootstraps: the ends agree to a few percent of the width.
    assert ours.low == pytest.approx(low, abs=0.1 * width)
    assert ours.high == pytest.approx(high, abs=0.1 * width)
    assert ours.low < ours.point < ours.high


def test_bootstrap_is_seeded_and_leaves_numpys_global_generator_alone():
    finals = [np.array(UNIFORM), np.array(NONE)]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = compute_statistics(finals, ["CartPole-v1"] * 2, [(1, 0)])
    assert (np.random.get_state()[1] == before).all()
    second = compute_statistics(finals, ["CartPole-v1"] * 2, [(1, 0)])
    assert first.iqm == second.iqm and first.improvement == second.improvement


def test_ten_configurations_of_five_seeds_take_under_two_seconds():
    rng = np.random.default_rng(0)
    finals = [rng.normal(100 + 10 * i, 30, size=5) for i in range(10)]
    pairs = [(i, 0) for i in range(1, 10)]
    compute_statistics(finals, ["CartPole-v1"] * 10, pairs, reps=100)  # imports rliable
    start = time.perf_counter()
    stats = compute_statistics(finals, ["CartPole-v1"] * 10, pairs)
    assert time.perf_counter() - start < 2.0
    assert stats.reps == DEFAULT_BOOTSTRAP_REPS == 2000
    assert all(interval is not None for interval in stats.iqm)


def test_report_table_has_iqm_intervals_and_a_probability_of_improvement_table(replay_sweep, capfd):
    code, out, err = run_report(capfd, replay_sweep, "--baseline", "buffer=uniform")
    assert code == 0, err
    assert err == ""
    stats = compute_statistics([np.array(UNIFORM), np.array(NONE)], ["CartPole-v1"] * 2, [(1, 0)])
    iqm = stats.iqm[0]
    assert "IQM [95% CI]" in out
    assert f"{iqm.point:.1f} [{iqm.low:.1f}, {iqm.high:.1f}]" in out
    assert f"{np.mean(UNIFORM):.1f} +- {np.std(UNIFORM):.1f}" in out  # mean +- std stays
    assert "probability of improvement over buffer=uniform" in out
    poi = stats.improvement[(1, 0)]
    # The share of (none seed, uniform seed) pairs that the none seed wins: here 1 of 25.
    pairs_won = sum(n > u for n in NONE for u in UNIFORM)
    assert pairs_won == 1 and poi.point == pytest.approx(pairs_won / 25)
    assert f"{poi.point:.2f} [{poi.low:.2f}, {poi.high:.2f}]" in out
    rows = {r["buffer"]: r for r in csv.DictReader((replay_sweep / "report.csv").open())}
    assert float(rows["uniform"]["iqm"]) == pytest.approx(iqm.point)
    assert float(rows["uniform"]["iqm_ci_low"]) == pytest.approx(iqm.low)
    assert rows["uniform"]["baseline"] == "" and rows["none"]["baseline"] == "buffer=uniform"
    assert float(rows["none"]["p_improvement"]) == pytest.approx(poi.point)
    md = (replay_sweep / "report.md").read_text()
    assert "## Probability of improvement over buffer=uniform" in md
    assert "](performance_profile.png)" in md


def test_fewer_than_five_seeds_get_no_interval_and_the_table_says_so(tmp_path, capfd):
    sweep = write_sweep(tmp_path / "s", {"buffer=uniform": UNIFORM, "buffer=none": NONE[:3]})
    assert MIN_SEEDS_FOR_INTERVAL == 5
    code, out, _ = run_report(capfd, sweep, "--baseline", "buffer=uniform")
    assert code == 0
    assert "no CI: 3 seeds, need 5" in out
    row = next(r for r in csv.DictReader((sweep / "report.csv").open()) if r["buffer"] == "none")
    assert row["iqm"] != "" and row["iqm_ci_low"] == "" and row["iqm_ci_high"] == ""
    assert row["p_improvement"] != "" and row["p_improvement_ci_low"] == ""


def test_baseline_is_matched_on_the_other_swept_keys(tmp_path):
    finals = {
        f"buffer={b} lr={lr}": [base + k for k in range(5)]
        for b, base in (("uniform", 300.0), ("none", 100.0))
        for lr in ("0.001", "0.01")
    }
    finals["buffer=per lr=0.1"] = [1.0] * 5  # no uniform run at lr=0.1
    report = build_report(
        write_sweep(tmp_path / "s", finals), baseline="buffer=uniform", bootstrap_reps=200
    )
    labels = [c.label for c in report.configs]
    pairs = {
        labels[i]: (labels[b] if b is not None else None) for i, b in report.baseline_of.items()
    }
    assert pairs == {
        "buffer=none lr=0.001": "buffer=uniform lr=0.001",
        "buffer=none lr=0.01": "buffer=uniform lr=0.01",
        "buffer=per lr=0.1": None,
    }
    assert report.statistics.improvement[(2, 0)].point == 0.0  # every uniform seed beats none


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ("lr=0.1", "lr is not a swept key (swept: buffer)"),
        ("buffer=per", "no configuration has it (buffer: uniform, none)"),
        ("buffer", "expected KEY=VALUE pairs"),
    ],
)
def test_a_baseline_that_matches_nothing_is_one_line_and_exit_2(
    replay_sweep, capfd, baseline, message
):
    code, _, err = run_report(capfd, replay_sweep, "--baseline", baseline)
    assert code == 2
    assert err.startswith("dqn-report: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_several_envs_get_a_profile_panel_each_and_no_comparison_across_them(tmp_path, capfd):
    sweep = tmp_path / "s"
    write_sweep(sweep / "a", {"env=cartpole": UNIFORM})
    write_sweep(sweep / "b", {"env=acrobot": [-500.0, -120.0, -90.0, -100.0, -85.0]}, "Acrobot-v1")
    report = build_report(sweep, bootstrap_reps=200)
    assert [c.env for c in report.configs] == ["CartPole-v1", "Acrobot-v1"]
    outputs = write_report(report, tmp_path / "out")
    assert "performance_profile.png" in [p.name for p in outputs.plots]
    profiles = [
        (c.label, p) for c, p in zip(report.configs, report.statistics.profiles, strict=True)
    ]
    fig = build_profile_figure(profiles, [5, 5])
    assert [ax.get_xlabel() for ax in fig.axes] == [
        "final eval return \u03c4 (CartPole-v1)",
        "final eval return \u03c4 (Acrobot-v1)",
    ]
    code, _, err = run_report(capfd, sweep, "--baseline", "env=cartpole")
    assert code == 2 and "run different envs" in err


def test_without_rliable_the_report_still_prints_and_says_what_to_install(
    replay_sweep, capfd, monkeypatch
):
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable raises ImportError
    code, out, err = run_report(capfd, replay_sweep)
    assert code == 0
    assert err.splitlines() == [
        "dqn-report: warning: no IQM, intervals or performance profile: rliable is not "
        "installed: pip install -c constraints.txt -e '.[report]'"
    ]
    assert "final eval return" in out and "IQM" not in out
    code, _, err = run_report(capfd, replay_sweep, "--baseline", "buffer=uniform")
    assert code == 2 and "pip install -c constraints.txt -e '.[report]'" in err


def test_a_broken_rliable_install_is_one_warning_line(replay_sweep, capfd, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def arch_under_pandas_3(name, *args, **kwargs):
        if name == "rliable":
            raise TypeError("deprecate_kwarg() missing 1 required positional argument")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", arch_under_pandas_3)
    code, _, err = run_report(capfd, replay_sweep)
    assert code == 0
    assert err.splitlines() == [
        "dqn-report: warning: no IQM, intervals or performance profile: rliable fails to import "
        "(TypeError: deprecate_kwarg() missing 1 required positional argument): "
        "pip install -c constraints.txt -e '.[report]'"
    ]


def test_bootstrap_reps_below_100_are_refused(replay_sweep, capfd):
    code, _, err = run_report(capfd, replay_sweep, "--bootstrap-reps", "10")
    assert code == 2 and "must be at least 100" in err
