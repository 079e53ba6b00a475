"""dqn-eval: checkpoints, run dirs and sweeps evaluated from what the checkpoints carry.

One small sweep (two jobs, seed=0,1) is trained once for the module; every job dir is also a run
dir. Most checks call ``main()`` in-process (fast); those about what a user's shell sees (exit
code, stdout purity, tracebacks, a hostile file) run the installed ``dqn-eval``.
"""

import importlib.util
import json
import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from dqn_cli.cli.evaluate import main
from dqn_cli.training import EVAL_SEED_OFFSET
from tests.helpers import TINY_RUN_ARGS

KEYS = {
    "checkpoint",
    "step",
    "episodes",
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "length_mean",
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, run_command):
    root = tmp_path_factory.mktemp("trained")
    sweep_dir = root / "multirun"
    done = run_command(
        "dqn-train", "-m", "seed=0,1", *TINY_RUN_ARGS, f"hydra.sweep.dir={sweep_dir}", cwd=root
    )
    assert done.returncode == 0, done.stderr
    return sweep_dir


def dqn_eval(capsys, *args):
    """``dqn-eval ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own exits (--help, bad values)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def rows(capsys, *args):
    code, out, err = dqn_eval(capsys, *args, "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def without_path(row):
    return {k: v for k, v in row.items() if k != "checkpoint"}


def assert_one_line_error(code, out, err, expected):
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dqn-eval: error: ")
    assert expected in lines[0]


def assert_process_one_line_error(done, expected):
    assert_one_line_error(done.returncode, done.stdout, done.stderr, expected)


# --- what a run dir, a file and a sweep give -------------------------------------------------


def test_run_dir_prints_a_table_of_its_best_checkpoint(run_dqn_eval, sweep):
    best = torch.load(sweep / "0" / "checkpoints" / "best.pt", weights_only=True)
    done = run_dqn_eval("0", "--episodes", "3", cwd=sweep)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "dqn-eval: CartPole-v1" in done.stdout
    header = next(line for line in done.stdout.splitlines() if " run " in line)
    assert header.split()[1::2] == ["run", "step", "episodes", "return", "min", "max", "length"]
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("│ 0 ")]
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[:3] == ["0", f"{best['env_step']:,}", "3"]
    assert "+-" in cells[3]
    assert "checkpoints/best.pt, episodes seeded 0..2, greedy" in done.stdout
    assert "\x1b[" not in done.stdout  # not a terminal: no colour codes


def test_last_selects_the_last_checkpoint_of_a_run_dir(capsys, sweep):
    run = sweep / "0"
    (best,) = rows(capsys, run, "--episodes", 2)
    (last,) = rows(capsys, run, "--episodes", 2, "--last")
    assert best["checkpoint"] == str(run / "checkpoints" / "best.pt")
    best_step = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["env_step"]
    assert best["step"] == best_step
    assert last["checkpoint"] == str(run / "checkpoints" / "last.pt")
    assert last["step"] == 1500


def test_best_checkpoint_repeats_the_training_evaluation_that_chose_it(capsys, sweep):
    # Job 0 trained with seed=0 and eval.episodes=2, so its evaluations used seeds 1000000 + i:
    # the same episodes through the rebuilt env and network must give the same mean, exactly.
    path = sweep / "0" / "checkpoints" / "best.pt"
    recorded = torch.load(path, weights_only=True)["eval_return"]
    (row,) = rows(capsys, path, "--seed", EVAL_SEED_OFFSET, "--episodes", 2)
    assert row["return_mean"] == recorded


def test_checkpoint_copied_alone_elsewhere_evaluates_the_same(capsys, monkeypatch, sweep, tmp_path):
    original = sweep / "1" / "checkpoints" / "last.pt"
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(original, tmp_path / "elsewhere" / "agent.pt")
    monkeypatch.chdir(tmp_path)
    (at_home,) = rows(capsys, original, "--episodes", 5, "--seed", 11)
    (copied,) = rows(capsys, "elsewhere/agent.pt", "--episodes", 5, "--seed", 11)
    assert copied["checkpoint"] == "elsewhere/agent.pt"
    assert without_path(copied) == without_path(at_home)


def test_sweep_dir_has_one_row_per_run_labelled_by_its_own_overrides(capsys, sweep):
    code, out, err = dqn_eval(capsys, sweep, "--episodes", 2)
    assert code == 0, err
    assert err == ""
    labels = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert labels == ["0 seed=0", "1 seed=1"]
    assert "total_steps" not in out  # shared by every job, so it tells no row apart
    assert [row["checkpoint"] for row in rows(capsys, sweep, "--episodes", 2)] == [
        str(sweep / job / "checkpoints" / "best.pt") for job in ("0", "1")
    ]


def test_sweep_jobs_sort_by_number_and_jobs_without_the_checkpoint_are_skipped(
    capsys, sweep, tmp_path
):
    copy = tmp_path / "sweep"
    for job in ("2", "10"):
        shutil.copytree(sweep / "0", copy / job)
    shutil.copytree(sweep / "1" / ".hydra", copy / "3" / ".hydra")  # died before a checkpoint
    code, out, err = dqn_eval(capsys, copy, "--episodes", 1, "--json")
    assert code == 0, err
    jobs = [Path(json.loads(line)["checkpoint"]).parts[-3] for line in out.splitlines()]
    assert jobs == ["2", "10"]
    assert err == f"dqn-eval: warning: skipping {copy / '3'}: no checkpoints/best.pt\n"


def test_json_is_one_object_per_checkpoint_per_line_and_nothing_else(run_dqn_eval, sweep):
    done = run_dqn_eval(str(sweep), "--json", "--episodes", "3")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        row = json.loads(line)
        assert set(row) == KEYS
        assert row["episodes"] == 3
        assert row["step"] % 500 == 0  # an evaluation step: best.pt is written after one
        assert row["return_min"] <= row["return_mean"] <= row["return_max"]
        assert row["return_std"] >= 0 and row["length_mean"] > 0


def test_progress_is_shown_while_evaluating_on_a_terminal(run_dqn_eval, sweep):
    # TTY_COMPATIBLE=1 makes rich treat both streams as a terminal.
    done = run_dqn_eval(
        str(sweep), "--json", "--episodes", "1", env={**os.environ, "TTY_COMPATIBLE": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert "evaluating" in done.stderr
    assert "2/2" in done.stderr
    assert [set(json.loads(line)) for line in done.stdout.splitlines()] == [KEYS, KEYS]


# --- seeds and epsilon ---------------------------------------------------------------------


def test_same_seed_same_returns_and_other_seeds_other_episodes(capsys, sweep):
    path = sweep / "0" / "checkpoints" / "last.pt"
    first = rows(capsys, path, "--seed", 3)
    assert rows(capsys, path, "--seed", 3) == first
    assert any(rows(capsys, path, "--seed", seed) != first for seed in (4, 5, 6))


def test_epsilon_sets_random_actions_and_stays_seeded(capsys, sweep):
    path = sweep / "0" / "checkpoints" / "last.pt"
    greedy = rows(capsys, path)
    uniform = rows(capsys, path, "--epsilon", 1)
    assert rows(capsys, path, "--epsilon", 1) == uniform
    assert uniform != greedy
    assert rows(capsys, path, "--epsilon", 0) == greedy
    code, out, _ = dqn_eval(capsys, path, "--epsilon", 0.05, "--episodes", 2)
    assert code == 0
    assert "epsilon 0.05" in out


# --- safety: hostile, damaged and unusable inputs ------------------------------------------


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: what a hostile checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_the_hostile_payload_does_create_its_file_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(CreatesFile(marker))).close()
    assert marker.exists()  # so the tests below would see the code run


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_checkpoint_carrying_code_is_refused_and_the_code_never_runs(
    run_dqn_eval, tmp_path, writer
):
    marker = tmp_path / "pwned"
    payload = {"format": 1, "model": CreatesFile(marker), "config": {"env": {"id": "CartPole-v1"}}}
    evil = tmp_path / "run" / "checkpoints" / "best.pt"
    evil.parent.mkdir(parents=True)
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    for path in (evil, evil.parent.parent):  # the file, and the run dir holding it
        done = run_dqn_eval(str(path))
        assert_process_one_line_error(done, f"checkpoint {evil} was refused")
        assert "possibly code" in done.stderr
        assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("half", "is truncated or corrupted"),
        ("empty", "is truncated or corrupted"),
        ("garbage", "was refused: it is not a torch checkpoint file"),
        ("not a checkpoint", "is not a dqn-cli checkpoint"),
    ],
)
def test_truncated_or_corrupted_checkpoint_is_one_line(capsys, sweep, tmp_path, damage, expected):
    data = (sweep / "0" / "checkpoints" / "best.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    if damage == "not a checkpoint":
        torch.save({"weights": torch.zeros(3)}, bad)
    else:
        bad.write_bytes(
            {"half": data[: len(data) // 2], "empty": b"", "garbage": b"garbage\n"}[damage]
        )
    assert_one_line_error(*dqn_eval(capsys, bad), f"checkpoint {bad} {expected}")


def test_missing_path_is_one_line_from_the_installed_command(run_dqn_eval):
    done = run_dqn_eval("no/such/run")
    assert_process_one_line_error(done, "no/such/run does not exist")


def _empty_dir(sweep, root):
    (root / "empty").mkdir()
    return root / "empty", "holds no checkpoints"


def _run_with_last_only(sweep, root):
    shutil.copytree(sweep / "0", root / "run")
    (root / "run" / "checkpoints" / "best.pt").unlink()
    return root / "run", "has no checkpoints/best.pt (it has last.pt: run with --last)"


def _run_without_checkpoints(sweep, root):
    shutil.copytree(sweep / "0" / ".hydra", root / "run" / ".hydra")
    return root / "run", "has no checkpoints/best.pt"


def _sweep_without_checkpoints(sweep, root):
    for job in ("0", "1"):
        shutil.copytree(sweep / job / ".hydra", root / "sweep" / job / ".hydra")
    return root / "sweep", "none of its 2 runs has checkpoints/best.pt"


@pytest.mark.parametrize(
    "make",
    [_empty_dir, _run_with_last_only, _run_without_checkpoints, _sweep_without_checkpoints],
)
def test_directory_without_the_checkpoint_is_one_line(capsys, sweep, tmp_path, make):
    path, expected = make(sweep, tmp_path)
    assert_one_line_error(*dqn_eval(capsys, path), expected)


def _mujoco_missing():
    return importlib.util.find_spec("mujoco") is None


@pytest.mark.parametrize(
    ("env_id", "expected"),
    [
        ("NoSuchEnv-v0", "env.id: 'NoSuchEnv-v0' is not a registered gymnasium env"),
        pytest.param(
            "HalfCheetah-v5",
            "env.id: 'HalfCheetah-v5' needs an extra package",
            marks=pytest.mark.skipif(not _mujoco_missing(), reason="mujoco is installed"),
        ),
        ("Acrobot-v1", "the checkpoint was trained on observations of shape [4]"),
    ],
)
def test_checkpoint_whose_env_is_not_available_is_one_line(
    capsys, sweep, tmp_path, env_id, expected
):
    payload = torch.load(sweep / "0" / "checkpoints" / "best.pt", weights_only=True)
    payload["config"]["env"]["id"] = env_id
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    code, out, err = dqn_eval(capsys, edited)
    assert_one_line_error(code, out, err, f"checkpoint {edited}: ")
    assert expected in err


def _wider_network(payload):
    payload["config"]["model"]["hidden"] = [64]


def _no_env_spec(payload):
    del payload["env_spec"]


def _newer_format(payload):
    payload["format"] = 99


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_wider_network, "have shape [32, 4], the network its config describes needs [64, 4]"),
        (_no_env_spec, "is not a dqn-cli checkpoint (bad or missing 'env_spec')"),
        (_newer_format, "has format 99, newer than this dqn-cli reads"),
    ],
)
def test_checkpoint_whose_contents_do_not_fit_is_one_line(capsys, sweep, tmp_path, edit, expected):
    payload = torch.load(sweep / "0" / "checkpoints" / "best.pt", weights_only=True)
    edit(payload)
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    assert_one_line_error(*dqn_eval(capsys, edited), expected)


def as_if_saved_on_cuda(src, dst):
    """Rewrite a checkpoint so its tensors say ``cuda:0``, as torch.save writes them on a GPU.

    No GPU here: the storage location is a pickled string, and pickle streams have no offsets,
    so BINUNICODE 'cpu' can be swapped for 'cuda:0' in place.
    """
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                assert cpu in data
                data = data.replace(cpu, cuda)
            zout.writestr(info, data)


def test_cuda_trained_checkpoint_evaluates_on_cpu(capsys, sweep, tmp_path):
    original = sweep / "0" / "checkpoints" / "best.pt"
    on_cuda = tmp_path / "cuda.pt"
    as_if_saved_on_cuda(original, on_cuda)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # the file really names a CUDA device
            torch.load(on_cuda, weights_only=True)
    (expected,) = rows(capsys, original, "--episodes", 4)
    (row,) = rows(capsys, on_cuda, "--episodes", 4)
    assert without_path(row) == without_path(expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--episodes", "0"], "argument --episodes: must be in [1, 100000], got 0"),
        (["--episodes", "10**11"], "argument --episodes: expected an integer"),
        (["--episodes", "100000000000"], "argument --episodes: must be in [1, 100000]"),
        (["--episodes", "many"], "argument --episodes: expected an integer, got 'many'"),
        (["--seed", "-1"], "argument --seed: must be in [0, 4294967295], got -1"),
        (["--epsilon", "1.5"], "argument --epsilon: must be in [0, 1], got 1.5"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        pytest.param(
            ["--device", "cuda"],
            "--device cuda: no CUDA device is available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available"),
        ),
    ],
)
def test_bad_option_is_one_line(capsys, sweep, args, expected):
    assert_one_line_error(*dqn_eval(capsys, sweep / "0", *args), expected)


def test_help_shows_the_options_and_examples(capsys):
    code, out, _ = dqn_eval(capsys, "--help")
    assert code == 0
    for text in ("--last", "--episodes", "--seed", "--epsilon", "--json", "--video", "--device"):
        assert text in out
    assert "dqn-eval multirun/2026-11-21/10-00-00" in out


# --- videos ---------------------------------------------------------------------------------


def test_video_without_the_extra_is_one_line_naming_it(capsys, monkeypatch, sweep, tmp_path):
    monkeypatch.setitem(sys.modules, "moviepy", None)  # `import moviepy` now fails
    videos = tmp_path / "videos"
    assert_one_line_error(
        *dqn_eval(capsys, sweep / "0", "--video", videos), "pip install 'dqn-cli[video]'"
    )
    assert not videos.exists()


def test_video_writes_one_mp4_per_episode_and_keeps_the_returns(
    capsys, run_dqn_eval, sweep, tmp_path
):
    pytest.importorskip("moviepy", reason="the video extra is not installed")
    videos = tmp_path / "videos"
    done = run_dqn_eval(str(sweep), "--episodes", "2", "--json", "--video", str(videos))
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"dqn-eval: videos written to {videos}\n"
    recorded = [json.loads(line) for line in done.stdout.splitlines()]
    assert recorded == rows(capsys, sweep, "--episodes", 2)  # greedy: same episodes as without
    written = sorted(p.relative_to(videos).as_posix() for p in videos.rglob("*.mp4"))
    assert written == [f"{job}/best-episode-{i}.mp4" for job in ("0", "1") for i in (0, 1)]
    for mp4 in videos.rglob("*.mp4"):
        assert mp4.read_bytes()[4:8] == b"ftyp"  # an MP4 container, not an empty file
