"""Issue 13: no run overwritten, no bad checkpoint called good, no traceback on any input.

Most cases run ``dqn-train``'s real entry point in-process (``train_main``): the same argv
handling, preflight and Hydra job as the installed command, without a process start each.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import dqn_cli.checkpoint as checkpoint_module
from dqn_cli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dqn_cli.cli import evaluate
from dqn_cli.cli.compose import compose_run
from dqn_cli.config import parse_train_config
from dqn_cli.env_spec import EnvSpec
from dqn_cli.run_lock import LOCK_NAME, RunDirError, RunLock
from dqn_cli.run_planning import available_memory_bytes, required_replay_bytes
from tests.helpers import TINY, TINY_RUN_ARGS, installed_command, run_installed, run_main, snapshot

RUN_ARGS = [*TINY_RUN_ARGS, "total_steps=1000", "checkpoint.every=500"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed tiny run (made once) and the hashes of all its files."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    done = run_installed("dqn-train", *RUN_ARGS, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture
def run_copy(tmp_path, finished_run):
    """A fresh copy of the finished run, free to damage."""
    copy = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished_run), str(copy)], check=True)
    return copy


def assert_one_line_error(code, err, expected, exit_code=2):
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dqn-train: error: "), err
    assert expected in lines[0]


# -- a run dir belongs to one run ---------------------------------------------------------------


def test_a_new_run_in_a_dir_holding_a_run_is_refused_and_the_run_kept(run_copy, capfd):
    before = snapshot(run_copy)
    code, _, err = run_main(*RUN_ARGS, f"hydra.run.dir={run_copy}", capfd=capfd)
    assert_one_line_error(code, err, "already holds a run")
    assert f"resume={run_copy}" in err and "overwrite=true" in err
    assert snapshot(run_copy) == before


def test_overwrite_true_replaces_the_old_run_entirely(run_copy, capfd):
    old_periodic = run_copy / "checkpoints" / "step_000000500.pt"
    assert old_periodic.is_file()
    (run_copy / "notes.txt").write_text("mine")
    code, _, err = run_main(
        *TINY_RUN_ARGS,
        "total_steps=600",
        f"hydra.run.dir={run_copy}",
        "overwrite=true",
        capfd=capfd,
    )
    assert code == 0, err
    assert not old_periodic.exists()  # no step_*.pt of the old run mixed in
    assert json.loads((run_copy / "summary.json").read_text())["total_steps"] == 600
    assert len(list(run_copy.glob("events.out.tfevents.*"))) == 1
    assert (run_copy / "notes.txt").read_text() == "mine"  # not a run file: kept


def test_default_run_dirs_differ_for_runs_started_in_the_same_second():
    first = compose_run([])[1]
    second = compose_run([])[1]
    assert first != second
    assert first.startswith("outputs/") and second.startswith("outputs/")
    assert sorted([second, first]) == [first, second]  # names sort in start order


def test_a_second_process_on_a_run_dir_is_refused_naming_the_holder(run_copy, tmp_path):
    with RunLock.acquire(run_copy) as lock:
        lock.record_holder()
        before = snapshot(run_copy)
        resumed = run_installed("dqn-train", f"resume={run_copy}", "total_steps=2000", cwd=tmp_path)
        assert_one_line_error(resumed.returncode, resumed.stderr, f"PID {os.getpid()}")
        assert snapshot(run_copy) == before
    # Released: the same resume now runs.
    resumed = run_installed("dqn-train", f"resume={run_copy}", "total_steps=1100", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from dqn_cli.run_lock import RunLock; "
            "RunLock.acquire(Path(sys.argv[1])).record_holder(); print('held', flush=True); "
            "time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirError, match=f"PID {holder.pid}"):
        RunLock.acquire(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with RunLock.acquire(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(holder.pid)  # stale content only


@pytest.mark.parametrize(
    ("make_dir", "expected"),
    [
        (lambda tmp: "/proc/x", "cannot create run dir /proc/x"),
        (lambda tmp: (tmp / "a_file").write_text("") or tmp / "a_file" / "run", "cannot create"),
        (
            lambda tmp: (
                (tmp / "run").mkdir() or (tmp / "run" / "checkpoints").write_text("") or tmp / "run"
            ),
            "checkpoints is a file",
        ),
    ],
    ids=["proc", "under-a-file", "file-named-checkpoints"],
)
def test_a_run_dir_that_cannot_be_used_is_one_line(tmp_path, capfd, make_dir, expected):
    run_dir = make_dir(tmp_path)
    code, _, err = run_main(*RUN_ARGS, f"hydra.run.dir={run_dir}", capfd=capfd)
    assert_one_line_error(code, err, expected)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only dirs")
def test_a_read_only_run_dir_is_one_line(tmp_path, capfd):
    tmp_path.chmod(0o555)
    try:
        code, _, err = run_main(*RUN_ARGS, f"hydra.run.dir={tmp_path / 'run'}", capfd=capfd)
    finally:
        tmp_path.chmod(0o755)
    assert_one_line_error(code, err, "cannot create run dir")


# -- a refused resume changes nothing -----------------------------------------------------------


def edit_last(run_dir, edit):
    last = run_dir / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    edit(payload)
    torch.save(payload, last)


def set_in(path, value):
    def edit(payload):
        node = payload
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def delete_in(path):
    def edit(payload):
        node = payload
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


DAMAGE = {
    "model-shape": (
        set_in(["model", "net.layers.0.weight"], torch.zeros(7, 4)),
        "have shape [7, 4]",
    ),
    "model-missing": (delete_in(["model", "net.layers.0.bias"]), "missing 'net.layers.0.bias'"),
    "model-nan": (set_in(["model", "net.layers.0.bias"], torch.full((32,), float("nan"))), "NaN"),
    "target-type": (set_in(["target_model"], [1, 2]), "target network weights"),
    "optimizer-shape": (set_in(["optimizer", "exp_avg", 0], torch.zeros(3)), "does not fit"),
    "optimizer-missing": (delete_in(["optimizer", "step"]), "does not fit"),
    "loop-type": (set_in(["loop", "episodes"], "many"), "'episodes' is 'many'"),
    "loop-range": (set_in(["loop", "episodes"], -4), "expected an integer >= 0"),
    "loop-returns": (set_in(["loop", "recent_returns"], [1.0] * 10_000), "recent_returns"),
    "loop-missing": (delete_in(["loop", "obs"]), "'obs'"),
    "rng-damaged": (set_in(["rng", "python"], "abc"), "does not fit"),
    "replay-type": (set_in(["replay"], 3), "replay state is not a dict"),
    "replay-size": (set_in(["replay", "storage", "size"], 10**12), "does not fit"),
    "snapshots-type": (set_in(["env_snapshots"], "abc"), "env state was refused"),
    "snapshots-bytes": (set_in(["env_snapshots"], [b"garbage"]), "env state was refused"),
    "env-step-negative": (set_in(["env_step"], -5), "env_step is -5"),
    "env-step-type": (set_in(["env_step"], "500"), "env_step is '500'"),
    "env-spec-huge": (set_in(["env_spec", "obs_shape"], [10**9]), "it was trained on"),
    "config-type": (set_in(["config", "lr"], "fast"), "its config is refused"),
    "config-model-huge": (set_in(["config", "model", "hidden"], [10**9]), "have shape"),
    "not-full-state": (delete_in(["optimizer"]), "holds weights only"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_in_one_line_and_changes_nothing(run_copy, capfd, damage):
    edit, expected = DAMAGE[damage]
    edit_last(run_copy, edit)
    before = snapshot(run_copy)
    code, _, err = run_main(f"resume={run_copy}", "total_steps=2000", capfd=capfd)
    assert_one_line_error(code, err, expected)
    assert snapshot(run_copy) == before  # summary.json, train.log, .hydra/ untouched


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["lr=0.1"], "only total_steps=N may be given with resume="),
        (["total_steps=500"], "give total_steps > 1000"),
        (["overwrite=true"], "remove: overwrite=true"),
    ],
)
def test_a_resume_with_a_wrong_config_changes_nothing(run_copy, capfd, args, expected):
    before = snapshot(run_copy)
    code, _, err = run_main(f"resume={run_copy}", *args, capfd=capfd)
    assert_one_line_error(code, err, expected)
    assert snapshot(run_copy) == before


def test_a_truncated_checkpoint_refused_on_resume_changes_nothing(run_copy, capfd):
    last = run_copy / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:2000])
    before = snapshot(run_copy)
    code, _, err = run_main(f"resume={run_copy}", "total_steps=2000", capfd=capfd)
    assert_one_line_error(code, err, "truncated or corrupted")
    assert snapshot(run_copy) == before


# -- checkpoint write failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed"),
        OSError(28, "No space left on device"),
        ValueError("something else"),
    ],
    ids=["runtime-disk-full", "oserror", "other"],
)
def test_any_write_failure_removes_the_temp_file_and_keeps_the_previous(
    tmp_path, monkeypatch, failure
):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "env_step": 1}, path)

    def fail(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise failure

    monkeypatch.setattr(checkpoint_module.torch, "save", fail)
    with pytest.raises(CheckpointError, match=rf"cannot write checkpoint {path}") as info:
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}, "env_step": 2}, path)
    assert "\n" not in str(info.value)
    assert load_checkpoint(path)["env_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_failed_checkpoint_write_is_one_line_exit_2_and_on_record(tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "run"
    real_save, calls = torch.save, []

    def disk_full_on_second_last(obj, f):
        calls.append(f.name)
        if sum(".last.pt." in name for name in calls) == 2:
            f.write(b"partial")
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        return real_save(obj, f)

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full_on_second_last)
    code, _, err = run_main(*RUN_ARGS, f"hydra.run.dir={run_dir}", capfd=capfd)
    last = run_dir / "checkpoints" / "last.pt"
    assert_one_line_error(code, err, f"cannot write checkpoint {last}: RuntimeError")
    assert load_checkpoint(last)["env_step"] == 500  # the previous one, intact
    assert not list(run_dir.rglob("*.tmp"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and str(last) in summary["error"]
    assert f"cannot write checkpoint {last}" in (run_dir / "train.log").read_text()


def test_temp_files_of_a_killed_write_are_removed_at_the_next_resume(run_copy, tmp_path):
    leftover = run_copy / "checkpoints" / ".last.pt.4242.tmp"
    leftover.write_bytes(b"half a checkpoint")
    done = run_installed("dqn-train", f"resume={run_copy}", "total_steps=1100", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not leftover.exists()


# -- no non-finite state in a checkpoint --------------------------------------------------------


def test_a_diverging_run_never_writes_non_finite_state(tmp_path, capfd):
    run_dir = tmp_path / "run"
    code, _, err = run_main(
        *TINY_RUN_ARGS,
        "total_steps=3000",
        "lr=1e30",
        "max_grad_norm=null",
        "loss=mse",
        "checkpoint.every=500",
        "log.every=100",
        f"hydra.run.dir={run_dir}",
        capfd=capfd,
    )
    assert_one_line_error(code, err, "training diverged", exit_code=1)
    written = list((run_dir / "checkpoints").glob("*.pt"))
    assert written
    for path in written:
        payload = load_checkpoint(path)
        parts = [payload["model"], payload.get("target_model", {})]
        parts += [payload.get("optimizer", {}).get(k, []) for k in ("exp_avg", "exp_avg_sq")]
        tensors = [t for part in parts for t in (part.values() if isinstance(part, dict) else part)]
        assert all(torch.isfinite(t).all() for t in tensors), path


def test_dqn_eval_refuses_non_finite_weights(finished_run, tmp_path, capsys):
    payload = torch.load(finished_run / "checkpoints" / "best.pt", weights_only=True)
    payload["model"]["net.layers.0.weight"][0, 0] = float("inf")
    torch.save(payload, tmp_path / "bad.pt")
    assert evaluate.main([str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err
    assert "hold NaN or inf values" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (set_in(["config", "model", "hidden"], [10**9]), "have shape [32, 4]"),
        (set_in(["env_spec", "obs_shape"], [10**9]), "the checkpoint was trained on"),
        (set_in(["model", "net.layers.0.weight"], "weights"), "are not a tensor"),
    ],
    ids=["declared-model-size", "declared-obs-size", "weights-type"],
)
def test_dqn_eval_checks_declared_sizes_before_allocating(
    finished_run, tmp_path, capsys, edit, expected
):
    payload = torch.load(finished_run / "checkpoints" / "best.pt", weights_only=True)
    edit(payload)
    torch.save(payload, tmp_path / "bad.pt")
    assert evaluate.main([str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_checkpoints_are_read_memory_mapped(finished_run, monkeypatch):
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", spy)
    load_checkpoint(finished_run / "checkpoints" / "last.pt")
    assert seen == [{"map_location": "cpu", "weights_only": True, "mmap": True}]


# -- memory ------------------------------------------------------------------------------------


def test_required_replay_bytes_is_what_the_storage_allocates():
    from dqn_cli.buffers.storage import TransitionStorage

    for spec in (EnvSpec((4,), "float32", 2), EnvSpec((4, 84, 84), "uint8", 6)):
        config = parse_train_config({**TINY, "buffer": {"capacity": 100}})
        storage = TransitionStorage(100, spec.obs_shape, np.dtype(spec.obs_dtype))
        assert required_replay_bytes(config, spec) == storage.nbytes
    available = available_memory_bytes()
    assert available is not None and 0 < available < 2**50


def test_a_replay_buffer_beyond_memory_is_refused_before_any_run_dir(tmp_path):
    done = run_installed("dqn-train", *RUN_ARGS, "buffer.capacity=1000000000000", cwd=tmp_path)
    assert_one_line_error(
        done.returncode, done.stderr, "buffer.capacity: 1000000000000 replay transitions"
    )
    assert "bytes" in done.stderr and "available" in done.stderr
    assert not (tmp_path / "outputs").exists()


# -- paths -------------------------------------------------------------------------------------


def test_plain_paths_with_spaces_and_non_ascii_letters_work(tmp_path):
    run_dir = tmp_path / "my runs (ü, é)" / "run 1"
    done = run_installed("dqn-train", *RUN_ARGS, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    resumed = run_installed("dqn-train", f"resume={run_dir}", "total_steps=1100", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["env_step"] == 1100
    quoted = run_installed("dqn-train", f"resume='{run_dir}'", "total_steps=1200", cwd=tmp_path)
    assert quoted.returncode == 0, quoted.stderr


def test_the_installed_command_refuses_a_busy_dir_while_a_run_is_going(tmp_path):
    run_dir = tmp_path / "run"
    running = subprocess.Popen(
        [
            installed_command("dqn-train"),
            *TINY_RUN_ARGS,
            "total_steps=200000",
            f"hydra.run.dir={run_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "train.log").exists():
            assert running.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = run_installed(
            "dqn-train", *RUN_ARGS, f"hydra.run.dir={run_dir}", "overwrite=true", cwd=tmp_path
        )
        assert_one_line_error(second.returncode, second.stderr, f"PID {running.pid}")
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait(timeout=30)


# -- sweeps -------------------------------------------------------------------------------------


def test_a_sweep_into_a_dir_of_runs_is_refused_unless_overwrite(tmp_path, capfd):
    sweep = tmp_path / "sweep"
    old_job = sweep / "0"
    (old_job / "checkpoints").mkdir(parents=True)
    (old_job / "checkpoints" / "step_000000500.pt").write_bytes(b"an old run's checkpoint")
    (old_job / "summary.json").write_text('{"status": "completed"}')
    before = snapshot(sweep)
    args = ["-m", *TINY_RUN_ARGS, "total_steps=600", "seed=0", f"hydra.sweep.dir={sweep}"]
    code, _, err = run_main(*args, capfd=capfd)
    assert_one_line_error(code, err, f"sweep dir {sweep} already holds 1 run(s)")
    assert snapshot(sweep) == before
    code, _, err = run_main(*args, "overwrite=true", capfd=capfd)
    assert code == 0, err
    assert not (old_job / "checkpoints" / "step_000000500.pt").exists()
    assert json.loads((old_job / "summary.json").read_text())["total_steps"] == 600


def test_a_sweep_job_whose_own_dir_holds_a_run_leaves_it_alone(tmp_path, capfd):
    sweep = tmp_path / "sweep"
    old = sweep / "job-0" / "checkpoints" / "last.pt"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an old run's checkpoint")
    _, _, err = run_main(
        "-m",
        *TINY_RUN_ARGS,
        "total_steps=600",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=job-${hydra.job.num}",
        capfd=capfd,
    )
    assert f"job dir {old.parent.parent} already holds a run" in err, err
    assert old.read_bytes() == b"an old run's checkpoint"
    assert not (sweep / "job-0" / "summary.json").exists()
    assert json.loads((sweep / "job-1" / "summary.json").read_text())["status"] == "completed"


def test_an_interpolated_run_dir_is_checked_where_hydra_writes(tmp_path, capfd):
    pattern = f"hydra.run.dir={tmp_path}/${{hydra.job.name}}-${{seed}}"
    code, _, err = run_main(*RUN_ARGS, "seed=3", pattern, capfd=capfd)
    assert code == 0, err
    assert (tmp_path / "train-3" / "summary.json").is_file()
    code, _, err = run_main(*RUN_ARGS, "seed=3", pattern, capfd=capfd)
    assert_one_line_error(code, err, f"run dir {tmp_path / 'train-3'} already holds a run")
