"""Models through the installed commands: a user's own network trained, resumed and evaluated,
and checkpoints from before models were configurable still evaluated."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_RUN_ARGS, run_installed

USER_MODELS = Path(__file__).parent / "user_models"


@pytest.fixture(scope="module")
def user_model_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_model")
    env = {**os.environ, "PYTHONPATH": str(USER_MODELS)}
    run_dir = root / "run"
    args = ["model=custom", "model._target_=tiny_qnet.TinyQNet", "~model.hidden", "+model.width=12"]
    done = run_installed(
        "dqn-train", *TINY_RUN_ARGS, *args, f"hydra.run.dir={run_dir}", cwd=root, env=env
    )
    return done, run_dir, env


def test_a_user_model_trains_resumes_and_evaluates(user_model_run, tmp_path):
    done, run_dir, env = user_model_run
    assert done.returncode == 0, done.stderr
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert payload["config"]["model"] == {
        "_target_": "tiny_qnet.TinyQNet",
        "head": "linear",
        "width": 12,
    }
    assert "learner: autograd" in (run_dir / "train.log").read_text()
    resumed = run_installed(
        "dqn-train", f"resume={run_dir}", "total_steps=2000", cwd=tmp_path, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    evaluated = run_installed("dqn-eval", str(run_dir), "--json", cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.splitlines()[-1])["episodes"] > 0


def test_a_user_model_that_cannot_be_imported_is_one_line(user_model_run, tmp_path):
    _, run_dir, _ = user_model_run
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = run_installed(
        "dqn-eval", str(run_dir / "checkpoints" / "best.pt"), cwd=tmp_path, env=env
    )
    assert done.returncode == 2
    assert "cannot import module 'tiny_qnet'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    train = run_installed(
        "dqn-train",
        *TINY_RUN_ARGS,
        "model=custom",
        "model._target_=nowhere.Net",
        "~model.hidden",
        cwd=tmp_path,
    )
    assert train.returncode == 2 and "cannot import module 'nowhere'" in train.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=custom"], "model._target_: model=custom needs your class"),
        (["model=nature_cnn"], "model.hidden: not an argument of dqn_cli.networks.NatureCNN"),
        (["model=nature_cnn", "~model.hidden"], "NatureCNN needs image observations"),
        (["model.head=dueling", "learner=fast"], "learner: fast cannot train this model"),
        (["model.hidden=[8,0]"], "model.hidden[1]: must be an integer > 0"),
    ],
)
def test_bad_model_config_is_refused_before_any_run_dir(args, message, tmp_path):
    done = run_installed("dqn-train", *TINY_RUN_ARGS, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


def test_a_format_2_checkpoint_still_evaluates(user_model_run, tmp_path):
    """Before models were configurable, checkpoints held the MLP's own keys and
    config.model = {hidden: [...]}."""
    run_dir = tmp_path / "run"
    done = run_installed(
        "dqn-train", *TINY_RUN_ARGS, "total_steps=600", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    best = run_dir / "checkpoints" / "best.pt"
    payload = torch.load(best, weights_only=True)
    old = dict(payload, format=2)
    old["model"] = {k.removeprefix("net."): v for k, v in payload["model"].items()}
    old["config"] = dict(payload["config"], model={"hidden": payload["config"]["model"]["hidden"]})
    shutil.copy(best, tmp_path / "new.pt")
    torch.save(old, tmp_path / "old.pt")
    results = []
    for name in ("new.pt", "old.pt"):
        evaluated = run_installed("dqn-eval", str(tmp_path / name), "--json", cwd=tmp_path)
        assert evaluated.returncode == 0, evaluated.stderr
        results.append(json.loads(evaluated.stdout.splitlines()[-1])["return_mean"])
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("key", "target", "message"),
    [
        ("model", "os.system", "model._target_: os.system is not a torch.nn.Module class"),
        ("wrapper", "os.system", "env.wrappers[0]._target_: os.system is not a gymnasium.Wrapper"),
    ],
)
def test_a_checkpoint_naming_a_function_to_call_is_refused_unrun(
    user_model_run, tmp_path, key, target, message
):
    """A checkpoint's config names the classes dqn-eval builds; one edited to name any other
    callable (here os.system, whose call would leave a marker file) is refused, not called."""
    _, run_dir, env = user_model_run
    payload = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    marker = tmp_path / "ran"
    if key == "model":
        payload["config"]["model"]["_target_"] = target
    else:
        payload["config"]["env"]["wrappers"] = [{"_target_": target, "command": f"touch {marker}"}]
    forged = tmp_path / "forged.pt"
    torch.save(payload, forged)
    done = run_installed("dqn-eval", str(forged), cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not marker.exists()
