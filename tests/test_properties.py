"""Property-based checks of the bad-input promise, through the real entry points.

Random config overrides and randomly damaged checkpoints must end in one of two ways: exit 0
with a correct run, or a non-zero exit with exactly one line on stderr and no traceback. And no
file of an existing run may change, unless the user said overwrite=true. Examples are few,
tiny and derandomized, so the suite stays fast and deterministic.
"""

import contextlib
import itertools
import json
import math
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqn_cli.checkpoint import load_checkpoint
from dqn_cli.cli import evaluate
from dqn_cli.config import RunOptions, config_keys
from tests.helpers import TINY_RUN_ARGS, run_installed, run_main, snapshot

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

BASE = [*TINY_RUN_ARGS, "total_steps=300", "learning_starts=64", "eval.every=300"]
# Misspelled, nested too deep, a section as a value: keys a user might type.
ODD_KEYS = ["lr_rate", "buffer.capcity", "seed.value", "eval", "capacity", "model.hidden"]
# Keys whose cost grows with their value: drawn from a few values that keep every example a
# tiny run, valid and invalid (huge ones only where a check must refuse them, or they are free).
COST_VALUES = {
    "total_steps": [-1, 0, 1, 64, 300],
    "num_envs": [-1, 0, 1, 3, 10**13],
    "gradient_steps": [-1, 0, 1, 2],
    "eval.episodes": [-1, 0, 1, 3, 10**13],
    "eval.every": [-1, 0, 50, 300, 10**13],
    "checkpoint.every": [-1, 0, 50, 300, 10**13],
    "buffer.n_step": [-1, 0, 1, 3, 10**13],
    "torch_threads": [-1, 0, 1, 10**13],
    "buffer.capacity": [-1, 0, 16, 5000, 10**13],
    "model.hidden": ["[]", "[0]", "[8,8]", "[1000000000]", "abc", "[1.5]"],
}
TEXT_VALUES = ["true", "false", "null", "abc", "''", "[]", "[1,2]", "{}", "1e400", "-0", "ü", "a b"]
KEYS = sorted(
    {k.name for k in config_keys()}
    | {k.name for k in config_keys(RunOptions)}
    | set(ODD_KEYS) - {"resume"}
)


def rendered(value):
    return repr(value) if isinstance(value, float) else str(value)


@st.composite
def override(draw):
    key = draw(st.sampled_from(KEYS))
    if key in COST_VALUES:
        value = draw(st.sampled_from(COST_VALUES[key]))
    else:
        value = draw(
            st.one_of(
                st.integers(-(2**40), 2**40),
                st.floats(allow_nan=True, allow_infinity=True),
                st.sampled_from(TEXT_VALUES),
            )
        )
    return f"{key}={rendered(value)}"


def args_with(overrides):
    given_keys = {o.split("=", 1)[0] for o in overrides}
    return [a for a in BASE if a.split("=", 1)[0] not in given_keys] + overrides


def assert_outcome(code, err, run_dir):
    """Exit 0 with a complete run, or one line and no traceback."""
    if code == 0:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed", summary
        last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert last["env_step"] == summary["total_steps"]
        return
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dqn-train: error: "), err
    assert code in (1, 2)  # 1: training diverged, 2: bad input


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("existing") / "run"
    done = run_installed(
        "dqn-train",
        *TINY_RUN_ARGS,
        "total_steps=1000",
        f"hydra.run.dir={run_dir}",
        cwd=run_dir.parent,
    )
    assert done.returncode == 0, done.stderr
    return run_dir


_counter = itertools.count()


@SETTINGS
@given(overrides=st.lists(override(), min_size=1, max_size=4), into_existing=st.booleans())
def test_random_config_overrides_train_or_fail_in_one_line(
    overrides, into_existing, existing_run, tmp_path_factory, capfd
):
    before = snapshot(existing_run)
    if into_existing:  # a new run aimed at a dir that holds one must be refused
        overrides = [o for o in overrides if not o.startswith("overwrite=")]
        run_dir = existing_run
    else:
        run_dir = tmp_path_factory.getbasetemp() / f"config-{next(_counter)}"
    code, _, err = run_main(*args_with(overrides), f"hydra.run.dir={run_dir}", capfd=capfd)
    if into_existing:
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert code == 2 and "dqn-train: error: " in err
    else:
        assert_outcome(code, err, run_dir)
    assert snapshot(existing_run) == before


@settings(SETTINGS, max_examples=4)
@given(overrides=st.lists(override(), min_size=1, max_size=3))
def test_random_config_overrides_through_the_installed_command(overrides, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / f"installed-{next(_counter)}"
    root.mkdir()
    done = run_installed("dqn-train", *args_with(overrides), "hydra.run.dir=run", cwd=root)
    assert_outcome(done.returncode, done.stderr, root / "run")


# -- damaged checkpoints ------------------------------------------------------------------------


def paths_in(tree, prefix=()):
    """Every key path of a checkpoint payload (dicts and lists, tensors as leaves)."""
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return found
    for key, value in items:
        found += paths_in(value, (*prefix, key))
    return found


REPLACEMENTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(-3, 3), max_size=3),
    st.builds(
        lambda shape, dtype, fill: torch.full(shape, fill).to(dtype),
        st.sampled_from([(), (0,), (3,), (2, 2), (7, 4), (1, 1001)]),
        st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]),
        st.sampled_from([0.0, 1.0, -1.0, math.nan, math.inf, 1e38]),
    ),
)


@st.composite
def damage(draw, paths):
    """Delete a key or replace a value (with another type, shape, range) at a random path."""
    path = draw(st.sampled_from(paths))
    delete = draw(st.booleans())
    replacement = None if delete else draw(REPLACEMENTS)
    return path, delete, replacement


def apply(payload, path, delete, replacement):
    node = payload
    for key in path[:-1]:
        if not isinstance(node, dict | list):
            raise KeyError(key)  # an earlier damage replaced the parent
        node = node[key]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = replacement


@pytest.fixture(scope="module")
def last_payload(existing_run):
    return torch.load(existing_run / "checkpoints" / "last.pt", weights_only=True)


@SETTINGS
@given(data=st.data())
def test_damaged_checkpoints_resume_or_fail_in_one_line_changing_nothing(
    data, existing_run, last_payload, tmp_path_factory, capfd
):
    run_dir = tmp_path_factory.getbasetemp() / f"damaged-{next(_counter)}"
    shutil.copytree(existing_run, run_dir)
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    for path, delete, replacement in data.draw(
        st.lists(damage(paths_in(last_payload)), min_size=1, max_size=3)
    ):
        with contextlib.suppress(KeyError, IndexError, TypeError):  # parent already gone
            apply(payload, path, delete, replacement)
    torch.save(payload, run_dir / "checkpoints" / "last.pt")
    before = snapshot(run_dir)
    code, _, err = run_main(f"resume={run_dir}", "total_steps=1100", capfd=capfd)
    if code == 0:
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["env_step"] == 1100
    else:
        assert_outcome(code, err, run_dir)
        if code == 2:
            assert snapshot(run_dir) == before


@pytest.fixture(scope="module")
def best_payload(existing_run):
    return torch.load(existing_run / "checkpoints" / "best.pt", weights_only=True)


@SETTINGS
@given(data=st.data())
def test_damaged_checkpoints_evaluate_or_fail_in_one_line(
    data, existing_run, best_payload, tmp_path_factory, capsys
):
    payload = torch.load(existing_run / "checkpoints" / "best.pt", weights_only=True)
    for path, delete, replacement in data.draw(
        st.lists(damage(paths_in(best_payload)), min_size=1, max_size=3)
    ):
        with contextlib.suppress(KeyError, IndexError, TypeError):
            apply(payload, path, delete, replacement)
    target = tmp_path_factory.getbasetemp() / f"eval-{next(_counter)}.pt"
    torch.save(payload, target)
    capsys.readouterr()
    code = evaluate.main([str(target), "--episodes", "2"])
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    if code != 0:
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("dqn-eval: error: ")
