"""Hydra's Ray launcher plugin (`hydra/launcher=ray`, the optional `ray` extra)."""

import importlib.util
import json

import pytest

from dqn_cli.cli.sweeps import check_launcher_installed
from dqn_cli.config import ConfigError
from tests.helpers import TINY_RUN_ARGS, run_installed

RAY_PLUGIN = "hydra_plugins.hydra_ray_launcher"


def test_the_ray_preset_without_its_extra_is_one_line_naming_the_extra(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == RAY_PLUGIN else real_find_spec(name, *args),
    )
    with pytest.raises(ConfigError, match=r"ray needs the optional `ray` extra: pip install"):
        check_launcher_installed(["seed=0,1", "hydra/launcher=ray"])
    check_launcher_installed(["hydra/launcher=parallel"])  # plugins that come with dqn-cli


@pytest.mark.cluster
@pytest.mark.skipif(
    importlib.util.find_spec(RAY_PLUGIN) is None,
    reason="the ray extra is not installed (pip install -c constraints.txt -e '.[ray]', "
    "or make test-cluster)",
)
def test_a_sweep_runs_as_ray_tasks_and_dqn_report_reads_it(tmp_path):
    """On a local Ray that the sweep starts with ray.init and stops at its end."""
    sweep = tmp_path / "sweep"
    done = run_installed(
        "dqn-train",
        "-m",
        "hydra/launcher=ray",
        "hydra.launcher.ray.init.num_cpus=2",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        *TINY_RUN_ARGS,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "schema" not in done.stderr  # no deprecation warning about the preset's name
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["total_steps"] == 1500
        assert "RayLauncher" in (sweep / job / ".hydra" / "hydra.yaml").read_text()
    # Ray ran them in its worker processes (it prefixes their output with the task's name).
    assert "(_run_job pid=" in done.stdout + done.stderr
    report = run_installed("dqn-report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "2 jobs, 1 configurations" in report.stdout
