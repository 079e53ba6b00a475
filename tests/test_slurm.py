"""Sweeps on a real one-node SLURM cluster (slurmctld + slurmd + munge on this machine), through
the `slurm` launcher preset, and jobs that are preempted (SIGTERM) or warned of their time limit
(SIGUSR2) and then finish on their own: checkpoint, requeue, resume, same weights as a run that
was never stopped.

The cluster needs root and Debian's `slurm-wlm` and `munge` packages, installed with apt-get
when missing (about 30 s); elsewhere these tests skip, saying why. Marked `cluster` and left out of
the default suite (`make test-cluster` runs them, about two minutes with the install).
The cluster has no accounting database: submitit, which would ask `sacct` how a job ended,
then learns it only from the result file the job writes, so every way a dqn-train job can end
(done, failed, signalled) writes one or has the job requeued.
"""

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import TINY_RUN_ARGS, installed_command, logged_step, run_installed

pytestmark = pytest.mark.cluster

PACKAGES = ["slurm-wlm", "munge"]
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def _apt_install() -> str | None:
    """Install the packages; the reason it could not, or None."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return None
    if not shutil.which("apt-get"):
        return "slurmctld is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", *PACKAGES]
    done = subprocess.run(install, capture_output=True, text=True, env=env)
    if done.returncode != 0:  # stale or missing package lists
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        done = subprocess.run(install, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-300:]}"
    return None


def _write_conf(root: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    total_kib = int(Path("/proc/meminfo").read_text().split()[1])
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=dqntest
SlurmctldHost={host}
AuthType=auth/munge
# A requeued job waits this long (default 120 s) before it may start again.
AuthInfo=cred_expire=10
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
# No accounting database (slurmdbd + MariaDB): see the module docstring.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
NodeName={host} CPUs={os.cpu_count()} RealMemory={total_kib // 1024 * 8 // 10} State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


def _munge_works() -> bool:
    return subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0


def _start_munged() -> int | None:
    """Start munged unless one answers; the PID to stop at the end, if this started it."""
    if _munge_works():
        return None
    MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
    key = Path("/etc/munge/munge.key")  # Debian's package creates it; other set-ups may not
    if not key.exists():
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
        shutil.chown(key, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
    for _ in range(50):
        if _munge_works():
            return _read_pid(Path("/run/munge/munged.pid"))
        time.sleep(0.1)
    raise RuntimeError("munged started but does not answer")


def _read_pid(pidfile: Path) -> int:
    """The PID a daemon writes once it has forked into the background."""
    for _ in range(100):
        if pidfile.is_file() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.1)
    raise RuntimeError(f"{pidfile} was never written")


def _wait_idle(env: dict[str, str], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
        if done.returncode == 0 and "idle" in done.stdout:
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """The environment (SLURM_CONF) of a one-node cluster the tests submit to; it is started
    here, with its state in a temp dir, and its daemons stopped at the end."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (slurmd runs jobs as any user)")
    reason = _apt_install()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    conf = _write_conf(root)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    if _answers(env):
        pytest.skip("a SLURM controller already runs on this machine; these tests start their own")
    started: list[int] = []
    try:
        munged = _start_munged()
        started += [munged] if munged else []
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], check=True, env=env)
            started.append(_read_pid(root / f"{daemon}.pid"))
        if not _wait_idle(env):
            log = (root / "log" / "slurmctld.log").read_text()[-2000:]
            pytest.fail(f"the local SLURM node never became idle:\n{log}")
        yield env
    finally:
        # Jobs a failed test left behind go first. A job's processes outlive the result it
        # wrote for submitit, and a step that cannot report its end (munged or slurmd gone)
        # hangs for ever: stop the daemons only once every job process has exited.
        subprocess.run(["scancel", "--user=root"], capture_output=True, env=env)
        _wait_for(lambda: not _processes_of(conf, jobs_only=True), seconds=60)
        for pid in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # Gone, and their ports free, before anything starts another cluster.
        _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in started), seconds=10)
        for pid in _processes_of(conf):  # whatever a stuck step left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def _processes_of(conf: Path, jobs_only: bool = False) -> list[int]:
    """Processes of this cluster, all started with SLURM_CONF pointing at its slurm.conf: its
    daemons, job steps (slurmstepd) and the jobs' processes, or (``jobs_only``) the last two."""
    marker = f"SLURM_CONF={conf}".encode() + b"\0"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            is_job = b"SLURM_JOB_ID=" in environ or (entry / "comm").read_text() == "slurmstepd\n"
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if marker in environ and (is_job or not jobs_only):
            pids.append(int(entry.name))
    return pids


def _answers(env: dict[str, str]) -> bool:
    return subprocess.run(["sinfo", "-h"], capture_output=True, env=env).returncode == 0


def cluster_state(env: dict[str, str]) -> str:
    """What SLURM says about its node and jobs, for a failing assertion's message."""
    conf = Path(env["SLURM_CONF"])
    shown = [
        subprocess.run(command, capture_output=True, text=True, env=env).stdout
        for command in (["sinfo", "-N", "-l"], ["squeue", "-l"], ["scontrol", "show", "job"])
    ]
    log = (conf.parent / "log" / "slurmctld.log").read_text()[-3000:]
    return "\n".join([*shown, log])


# Jobs one CPU each (torch_threads=1) and little memory, so two fit a 2-core machine.
SLURM_ARGS = [
    "hydra/launcher=slurm",
    "hydra.launcher.mem_gb=1",
    # submitit calls a job signalled in the last 20% of its time limit timed out, else preempted.
    "hydra.launcher.timeout_min=60",
]


def test_a_sweep_runs_on_slurm_and_dqn_report_reads_it(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_installed(
        "dqn-train",
        "-m",
        *SLURM_ARGS,
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        *TINY_RUN_ARGS,
        cwd=tmp_path,
        env=slurm_env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        hydra_yaml = (sweep / job / ".hydra" / "hydra.yaml").read_text()
        assert "SlurmLauncher" in hydra_yaml
    # SLURM ran them: submitit keeps each array task's scheduler logs.
    assert len(list((sweep / ".submitit").glob("*_*/*_log.out"))) == 2
    report = run_installed("dqn-report", str(sweep), cwd=tmp_path, env=slurm_env)
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader(io.StringIO((sweep / "report.csv").read_text())))
    assert len(rows) == 1  # one configuration, two seeds, both completed
    assert (rows[0]["seeds"], rows[0]["completed"], rows[0]["failed"]) == ("2", "2", "0")


# Long enough (a few seconds a job here) to be signalled well before its end, with the
# learner and the optimizer well under way when it is.
PREEMPTED_ARGS = [*TINY_RUN_ARGS, "total_steps=12000", "log.every=250", "checkpoint.every=1000"]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (weights, target, optimizer, replay, RNG), by its path."""
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(f"{prefix}/{i}", item)

    walk("", torch.load(path, weights_only=False))
    return flat


def slurm_job_id(job_dir: Path) -> str:
    """The SLURM id of a job of the array ("12_0"), as Hydra recorded it for the job."""
    hydra_yaml = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())
    return str(hydra_yaml["hydra"]["job"]["id"])


def test_signalled_jobs_are_requeued_and_end_as_if_never_stopped(slurm_env, tmp_path):
    """USR2 (submitit's time-limit warning) to job 0, TERM (preemption) to job 1."""
    sweep = tmp_path / "sweep"
    sweep_args = [*SLURM_ARGS, "seed=3,4", f"hydra.sweep.dir={sweep}", *PREEMPTED_ARGS]
    launch = subprocess.Popen(
        [installed_command("dqn-train"), "-m", *sweep_args],
        cwd=tmp_path,
        env=slurm_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    signals = {"0": "USR2", "1": "TERM"}
    signalled = {}
    try:
        deadline = time.monotonic() + 240
        while min(logged_step(sweep / job) for job in signals) < 1000:
            assert launch.poll() is None, launch.communicate()[0][-3000:]
            assert time.monotonic() < deadline, cluster_state(slurm_env)
            time.sleep(0.2)
        for job, signame in signals.items():
            job_id = slurm_job_id(sweep / job)
            scancel = ["scancel", f"--signal={signame}", job_id]
            subprocess.run(scancel, check=True, env=slurm_env)
            signalled[job] = (job_id, logged_step(sweep / job))
        # The reference, meanwhile: the same two configs, never interrupted, here in turn.
        reference = tmp_path / "reference"
        plain = run_installed(
            "dqn-train",
            "-m",
            "seed=3,4",
            f"hydra.sweep.dir={reference}",
            *PREEMPTED_ARGS,
            cwd=tmp_path,
            timeout=300,
        )
        assert plain.returncode == 0, plain.stderr[-3000:]
        try:
            output, _ = launch.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep did not end:\n{cluster_state(slurm_env)}")
    finally:
        launch.kill()
    assert launch.returncode == 0, output[-3000:]

    for job, (job_id, step) in signalled.items():
        job_dir = sweep / job
        log = (job_dir / "train.log").read_text()
        assert "interrupted at env step" in log
        assert "this job is preempted" in log and f"Requeued job {job_id}" in log
        assert f"resuming {job_dir}" in log
        stderr = (sweep / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
        assert f"SIG{signals[job]} received: finishing this step" in stderr
        shown = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True, env=slurm_env
        ).stdout
        assert "Restarts=1" in shown, shown
        ours, theirs = (
            tensors(job_dir / "checkpoints" / "last.pt"),
            tensors(reference / job / "checkpoints" / "last.pt"),
        )
        assert ours.keys() == theirs.keys() and ours
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"job {job} ({job_id}): {key} differs"
        print(
            f"job {job}: SLURM job {job_id} signalled at step ~{step}, restarts 1, "
            f"{len(ours)} tensors bitwise equal"
        )
