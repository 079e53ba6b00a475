"""The default configuration solves CartPole-v1 at the end of training, seed after seed.

Slow (about half a minute per seed): run with `make test-slow`.
"""

import json

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_default_config_solves_cartpole(run_dqn_train, tmp_path, seed):
    done = run_dqn_train(f"seed={seed}", f"hydra.run.dir={tmp_path / 'run'}", timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["total_steps"] <= 50_000
    assert summary["final_eval_episodes"] == 20
    assert summary["final_eval_return_mean"] >= 475
