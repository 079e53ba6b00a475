"""dqn-report on job dirs with odd but parseable content: never a traceback; each bad job is
skipped with one warning line naming its file and why, or, with nothing usable left, one error
line and exit code 2. Also `dqn-report SWEEP | head -1`."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqn_cli.cli.report import main
from tests.helpers import installed_command, run_installed
from tests.sweep_factory import write_sweep

FINALS = {"buffer=uniform": [300.0, 320.0], "buffer=none": [100.0, 120.0]}


def run_report(capfd, *argv):
    try:
        main([str(a) for a in [*argv, "--bootstrap-reps", "100"]])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capfd.readouterr()
    return code, out, err


def write_events(job: Path) -> Path:
    """A real TensorBoard event file with a training-return curve."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(job))
    for step in range(0, 1000, 10):
        writer.add_scalar("charts/episodic_return", step / 10, step)
    writer.close()
    return next(job.glob("events.out.tfevents.*"))


FIFO = b"<fifo>"  # stands for a named pipe: reading one would block for ever

# What a user may find in place of a file: bytes, None for a directory, or FIFO
CORRUPTIONS = {
    "a JSON list": b"[1, 2, 3]",
    "a JSON number": b"42",
    "JSON null": b"null",
    "a JSON string": b'"completed"',
    "not UTF-8": b"\xff\xfe\x00garbage\x80",
    "empty": b"",
    "whitespace": b"\n  \n",
    "truncated JSON": b'{"status": "comp',
    "YAML mapping": b"a: 1\nb: [2, 3]\n",
    "YAML garbage": b"- [unclosed\n  : :\n",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "a directory": None,
    "a named pipe": FIFO,
}


def corrupt(path: Path, content: bytes | None) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if content is None:
        path.mkdir()
    elif content == FIFO:
        os.mkfifo(path)
    else:
        path.write_bytes(content)


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.parametrize("name", ["summary.json", ".hydra/overrides.yaml", ".hydra/config.yaml"])
def test_a_corrupt_file_skips_its_job_with_one_warning(tmp_path, capfd, name, kind):
    sweep = write_sweep(tmp_path / "sweep", FINALS)
    corrupt(sweep / "1" / name, CORRUPTIONS[kind])
    code, out, err = run_report(capfd, sweep)
    # A YAML mapping is a config (without an env): odd, but readable, so the job stays.
    if (name, kind) == (".hydra/config.yaml", "YAML mapping"):
        assert code == 0 and err == "" and "4 jobs" in out
        return
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dqn-report: warning: skipped job: 1/{name}: ")
    assert "Traceback" not in out + err
    # The other jobs are all there: 3 jobs in 2 configurations.
    assert "3 jobs, 2 configurations" in out


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("412", "final_eval_return_mean is a string ('412'), not a number"),
        (float("nan"), "final_eval_return_mean is nan, not a finite number"),
        (float("inf"), "final_eval_return_mean is inf, not a finite number"),
        ([1.0], "final_eval_return_mean is a list ([1.0]), not a number"),
        (True, "final_eval_return_mean is a boolean (True), not a number"),
    ],
)
def test_a_summary_field_of_the_wrong_type_skips_its_job(tmp_path, capfd, value, reason):
    sweep = write_sweep(tmp_path / "sweep", FINALS)
    path = sweep / "2" / "summary.json"
    summary = json.loads(path.read_text())
    summary["final_eval_return_mean"] = value
    path.write_text(json.dumps(summary))  # json writes NaN and Infinity, as Python reads them
    code, _, err = run_report(capfd, sweep)
    assert code == 0
    assert err == f"dqn-report: warning: skipped job: 2/summary.json: {reason}\n"


def test_truncated_or_garbage_event_files_lose_curves_not_the_job(tmp_path, capfd):
    sweep = write_sweep(tmp_path / "sweep", FINALS)
    events = [write_events(sweep / str(i)) for i in range(3)]
    data = events[0].read_bytes()
    events[0].write_bytes(data[: len(data) // 2])  # killed mid-write
    events[1].write_bytes(b"\x00not an event file" * 20)
    (sweep / "3" / "events.out.tfevents.0.host.1.0").write_bytes(b"")
    code, out, err = run_report(capfd, sweep, "--out", tmp_path / "out")
    assert code == 0 and err == ""
    assert "4 jobs, 2 configurations" in out
    assert (tmp_path / "out" / "train_return.png").is_file()  # jobs 0 (its first half) and 2


def test_an_event_file_that_is_a_named_pipe_skips_its_job(tmp_path, capfd):
    sweep = write_sweep(tmp_path / "sweep", FINALS)
    os.mkfifo(sweep / "0" / "events.out.tfevents.0.host.1.0")
    code, _, err = run_report(capfd, sweep)
    assert code == 0
    assert err == (
        "dqn-report: warning: skipped job: 0/events.out.tfevents.0.host.1.0: not a regular file\n"
    )


def test_dirs_that_hold_no_job_are_not_jobs_and_an_empty_hydra_dir_is_skipped(tmp_path, capfd):
    sweep = write_sweep(tmp_path / "sweep", FINALS)
    (sweep / "7").mkdir()  # nothing in it
    (sweep / "8" / ".hydra").mkdir(parents=True)  # Hydra's dir, without its files
    code, out, err = run_report(capfd, sweep)
    assert code == 0
    assert err == "dqn-report: warning: skipped job: 8/.hydra/overrides.yaml: missing\n"
    assert "4 jobs" in out


def test_nothing_usable_left_is_one_error_line_and_exit_2(tmp_path, capfd):
    sweep = write_sweep(tmp_path / "sweep", {"buffer=uniform": [1.0, 2.0]})
    for job in ("0", "1"):
        (sweep / job / "summary.json").write_text("[]")
    code, out, err = run_report(capfd, sweep)
    assert code == 2
    assert err == (
        f"dqn-report: error: {sweep}: no job could be read (2 skipped; first: "
        "0/summary.json: holds a list, not a JSON object)\n"
    )
    assert out == ""


def test_the_installed_command_skips_bad_jobs_without_a_traceback(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", {"buffer=uniform": [1.0, 2.0, 3.0, 4.0, 5.0]})
    (sweep / "0" / "summary.json").write_text("null")
    (sweep / "1" / ".hydra" / "overrides.yaml").write_bytes(b"- buffer=\xe9\n")
    (sweep / "2" / ".hydra" / "config.yaml").write_text("")
    done = run_installed("dqn-report", str(sweep), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "dqn-report: warning: skipped job: 0/summary.json: holds null, not a JSON object",
        "dqn-report: warning: skipped job: 1/.hydra/overrides.yaml: not UTF-8 text (byte 9)",
        "dqn-report: warning: skipped job: 2/.hydra/config.yaml: empty",
    ]
    assert "2 jobs, 1 configurations" in done.stdout


def test_piping_into_head_ends_quietly(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", FINALS)
    for job in sweep.iterdir():
        write_events(job)
    command = f"'{installed_command('dqn-report')}' '{sweep}' | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stderr == ""
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1 and "dqn-report" in done.stdout


# ---------------------------------------------------------------------------------------------
# Property: any corruption of any job's files ends in exit 0 or 2, one line per problem

FILES = ["summary.json", ".hydra/overrides.yaml", ".hydra/config.yaml"]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
CONTENTS = st.one_of(
    st.sampled_from(list(CORRUPTIONS.values())),
    st.binary(max_size=40),
    VALUES.map(lambda v: json.dumps(v).encode()),
)
SUMMARY_EDITS = st.tuples(
    st.sampled_from(
        ["final_eval_return_mean", "best_eval_return_mean", "wall_seconds", "status", "error"]
    ),
    VALUES,
)
CORRUPTION = st.one_of(
    st.tuples(st.just("replace"), st.sampled_from(FILES), CONTENTS),
    st.tuples(st.just("delete"), st.sampled_from(FILES), st.none()),
    st.tuples(st.just("field"), st.just("summary.json"), SUMMARY_EDITS),
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: tests here are deterministic
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(damage=st.dictionaries(st.integers(0, 3), CORRUPTION, min_size=1, max_size=4))
def test_any_corruption_of_job_files_is_exit_0_or_2_with_one_line_per_problem(
    tmp_path_factory, capfd, damage
):
    sweep = write_sweep(tmp_path_factory.mktemp("prop") / "sweep", FINALS)
    for job, (action, name, payload) in damage.items():
        path = sweep / str(job) / name
        if action == "replace":
            corrupt(path, payload)
        elif action == "delete":
            path.unlink()
        else:
            key, value = payload
            summary = json.loads(path.read_text())
            summary[key] = value
            path.write_text(json.dumps(summary))
    code, out, err = run_report(capfd, sweep)
    assert code in (0, 2)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert all(line.startswith("dqn-report: ") for line in lines), err
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("dqn-report: error: ")
    else:
        # At most one warning per damaged job; an undamaged job is never skipped.
        skipped = [line.split(": ")[3].split("/")[0] for line in lines]
        assert len(skipped) == len(set(skipped)) and set(skipped) <= {str(j) for j in damage}
        assert f"{4 - len(skipped)} jobs" in out
