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


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant", [["model.head=dueling"], ["buffer.n_step=3"], ["learner=autograd"]], ids=" ".join
)
def test_variants_solve_cartpole_on_most_seeds(run_dqn_train, tmp_path, variant):
    """Each network/return variant reaches the solved threshold within 50k env steps on at
    least 4 of seeds 0-4, with the CartPole preset unchanged."""
    solved = []
    for seed in range(5):
        run_dir = tmp_path / f"seed{seed}"
        done = run_dqn_train(*variant, f"seed={seed}", f"hydra.run.dir={run_dir}", timeout=900)
        assert done.returncode == 0, done.stderr
        summary = json.loads((run_dir / "summary.json").read_text())
        solved.append(summary["total_steps"] <= 50_000 and summary["final_eval_return_mean"] >= 475)
    assert sum(solved) >= 4, solved
