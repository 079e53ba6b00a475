"""Experiment trackers beside TensorBoard, through the installed dqn-train: a W&B offline run
and an MLflow run against a real local store, each read back and compared with the TensorBoard
scalars of the same run; sweeps grouped; a missing extra is one line before any run dir."""

import json
import os
import struct
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import TINY_RUN_ARGS, run_installed

pytest.importorskip("wandb")
pytest.importorskip("mlflow")


def tensorboard_scalars(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def assert_same_curves(tracker, tensorboard):
    assert set(tracker) == set(tensorboard)
    for tag, points in tensorboard.items():
        got = tracker[tag]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        # TensorBoard stores float32; the trackers keep the float64 that was logged.
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag


# -- W&B ------------------------------------------------------------------------------------------


def wandb_records(path):
    """The records of an offline run file (run-ID.wandb): a 7-byte header, then LevelDB-log
    framing (32 KiB blocks of [crc32 u32, length u16, type u8] chunks) around protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if room < 7 or (length == 0 and kind == 0):  # the rest of the block is padding
            pos += room
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_wandb_run(run_dir, part=0):
    """(run record, {metric: [(step, value)]}, config, summary) of the run's offline files
    (a resumed run adds a part: one more offline-run dir of the same run id)."""
    path = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))[part]
    run, curves, config, summary = None, {}, {}, {}

    def key(item):
        return item.key or ".".join(item.nested_key)

    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            row = {key(i): json.loads(i.value_json) for i in record.history.item}
            for name, value in row.items():
                if not name.startswith("_"):
                    curves.setdefault(name, []).append((row["_step"], value))
        elif kind == "config":
            config.update({key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            summary.update({key(i): json.loads(i.value_json) for i in record.summary.update})
    return run, curves, config, summary


@pytest.fixture(scope="module")
def hermetic_env(tmp_path_factory):
    """No tracker reads or writes the user's home: W&B's settings and caches go to a temp dir."""
    home = tmp_path_factory.mktemp("tracker_home")
    return {
        **os.environ,
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
    }


def test_wandb_offline_run_holds_every_scalar_the_config_and_the_summary(tmp_path, hermetic_env):
    run_dir = tmp_path / "run"
    args = ["logger=wandb", "logger.mode=offline", "logger.project=tests", "buffer=per"]
    done = run_installed(
        "dqn-train",
        *TINY_RUN_ARGS,
        *args,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env=hermetic_env,
    )
    assert done.returncode == 0, done.stderr
    run, curves, config, summary = read_wandb_run(run_dir)
    assert run.project == "tests" and run.display_name == "run"  # the run dir, from the cwd
    assert_same_curves(curves, tensorboard_scalars(run_dir))
    assert "replay/beta" in curves  # buffer=per's own scalars go too
    assert config["lr"] == 0.002 and config["buffer.kind"] == "per"
    assert not any(name.startswith("logger.") for name in config)
    assert summary == {**summary, **json.loads((run_dir / "summary.json").read_text())}

    # Resuming continues the same W&B run, from the checkpoint's step on.
    resumed = run_installed(
        "dqn-train", f"resume={run_dir}", "total_steps=2000", cwd=tmp_path, env=hermetic_env
    )
    assert resumed.returncode == 0, resumed.stderr
    again, more, _, _ = read_wandb_run(run_dir, part=1)
    assert again.run_id == run.run_id
    assert more["charts/epsilon"][0][0] > 1500 and more["charts/epsilon"][-1][0] == 2000


def test_a_wandb_sweep_groups_its_jobs_by_sweep_dir(tmp_path, hermetic_env):
    sweep = tmp_path / "sweep"
    args = ["logger=wandb", "logger.mode=offline", "seed=0,1", "total_steps=600"]
    done = run_installed(
        "dqn-train",
        "-m",
        *TINY_RUN_ARGS,
        *args,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=hermetic_env,
    )
    assert done.returncode == 0, done.stderr
    runs = [read_wandb_run(sweep / job)[0] for job in ("0", "1")]
    assert {r.run_group for r in runs} == {str(sweep)}
    assert {r.display_name for r in runs} == {"0", "1"}  # the jobs' dirs in the sweep


# -- MLflow ---------------------------------------------------------------------------------------


def mlflow_client(store):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.as_uri())


def mlflow_curves(client, run_id, names):
    return {
        name: [(m.step, m.value) for m in client.get_metric_history(run_id, name)] for name in names
    }


def test_mlflow_run_in_the_local_store_holds_every_scalar_params_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    done = run_installed(
        "dqn-train", *TINY_RUN_ARGS, "logger=mlflow", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    client = mlflow_client(tmp_path / "mlruns")  # the default store: ./mlruns
    experiment = client.get_experiment_by_name("dqn-cli")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    tensorboard = tensorboard_scalars(run_dir)
    assert_same_curves(mlflow_curves(client, run.info.run_id, tensorboard), tensorboard)
    assert run.data.params["lr"] == "0.002" and run.data.params["env.id"] == "CartPole-v1"
    summary = json.loads((run_dir / "summary.json").read_text())
    final = run.data.metrics["summary/final_eval_return_mean"]
    assert final == pytest.approx(summary["final_eval_return_mean"])
    assert json.loads((run_dir / "tracker.json").read_text()) == {"mlflow": run.info.run_id}

    # Resuming continues the same MLflow run.
    resumed = run_installed("dqn-train", f"resume={run_dir}", "total_steps=2000", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (after,) = client.search_runs([experiment.experiment_id])
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "charts/epsilon")]
    assert steps[-1] == 2000 and steps == sorted(steps)


def test_an_mlflow_sweep_hangs_its_jobs_under_one_parent_run(tmp_path):
    sweep, store = tmp_path / "sweep", tmp_path / "store"
    done = run_installed(
        "dqn-train",
        "-m",
        *TINY_RUN_ARGS,
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "logger=mlflow",
        f"logger.tracking_uri={store.as_uri()}",
        "seed=0,1",
        "total_steps=600",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    client = mlflow_client(store)
    experiment = client.get_experiment_by_name("dqn-cli")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags["dqn.sweep"] for r in children} == {str(sweep)}


def test_an_mlflow_run_that_never_closes_is_marked_failed_at_exit(tmp_path):
    # As when training raises (divergence, a crash): the logger is opened, never closed.
    code = (
        "from pathlib import Path\n"
        "from dqn_cli.config import LoggerConfig\n"
        "from dqn_cli.loggers import RunIdentity, open_logger\n"
        "logger = open_logger(LoggerConfig(kind='mlflow'), Path('run'), None, RunIdentity('r'))\n"
        "logger.scalar('losses/td_loss', 1.5, 10)\n"
        "raise SystemExit(1)\n"
    )
    (tmp_path / "run").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    client = mlflow_client(tmp_path / "mlruns")
    (run,) = client.search_runs([client.get_experiment_by_name("dqn-cli").experiment_id])
    assert run.info.status == "FAILED"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "losses/td_loss")] == [1.5]


# -- a tracker that is not installed ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("tracker", "args"),
    [("wandb", []), ("mlflow", []), ("wandb", ["-m", "seed=0,1"])],
)
def test_a_missing_tracker_extra_is_one_line_before_any_run_dir(tmp_path, tracker, args):
    # The package is blocked in sys.modules, as if it were not installed.
    code = (
        "import sys\n"
        f"sys.modules[{tracker!r}] = None\n"
        f"sys.argv = ['dqn-train', 'logger={tracker}', *{args!r}]\n"
        "from dqn_cli.cli.train import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert f"logger={tracker} needs the {tracker} extra: pip install -e '.[{tracker}]'" in (
        done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
