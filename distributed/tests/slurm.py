"""A single-node SLURM for the tests, started as root in a private folder.

There is no systemd on the machines that run the tests, so the ``slurm``
fixture runs the daemons itself, each in the foreground as a child of the
test process:

- ``munged -F`` with a key made by ``mungekey`` and its own socket, pid, seed
  and log files (slurm finds that socket through ``AuthInfo`` in the
  configuration, so the system's munged, if any, is neither needed nor used);
- ``slurmctld -D`` and ``slurmd -D`` with their own state and spool folders,
  on free loopback ports, and a ``slurm.conf`` whose node line is the one
  ``slurmd -C`` prints for this machine.  ``SelectType=select/cons_tres``
  hands out single cores, so two 1-core jobs run at once.

``SLURM_CONF`` is set in ``os.environ`` while the fixture lives, so
``sbatch``/``squeue``/``scancel`` run by dask-jobqueue (and the jobs, which
inherit the submitter's environment) find this configuration.  At teardown
every job is cancelled first (a job's steps outlive ``slurmd``), then the
daemons are stopped and the folder removed.

The module is skipped, with the reason, when not root or when the binaries
are missing (Debian's ``slurm-wlm`` and ``munge``; ``.ci/run`` installs them).

Use it by importing the fixture into a test module::

    from distributed.tests.slurm import slurm  # noqa: F401  (the fixture)

    def test_sinfo(slurm):
        assert "idle" in slurm.run("sinfo", "-h", "-o", "%t")
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from distributed.utils import open_port

__all__ = ["SlurmNode", "slurm", "slurm_unavailable", "start_slurm"]

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")

CONFIG = """\
ClusterName=dtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Jobs end promptly when cancelled or when their worker exits.
KillWait=2
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def slurm_unavailable() -> str | None:
    """Why a private SLURM cannot run here, or None when it can.

    >>> slurm_unavailable() is None or isinstance(slurm_unavailable(), str)
    True
    """
    if os.name != "posix" or os.geteuid() != 0:
        return "the private SLURM runs its daemons as root (slurmd must start jobs as the submitting user)"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian's slurm-wlm and munge; .ci/run installs them)"
    return None


class SlurmNode:
    """A running single-node SLURM: its folder, configuration and client commands.

    >>> node = SlurmNode("/tmp/x", "vm", {})   # doctest: +SKIP
    >>> node.job_ids()                          # doctest: +SKIP
    []
    """

    def __init__(self, directory: str, node: str, env: dict[str, str]):
        self.directory = directory
        self.node = node
        self.env = env
        self.conf = os.path.join(directory, "slurm.conf")
        self.procs: dict[str, subprocess.Popen] = {}

    def run(self, *args: str, timeout: float = 30) -> str:
        """Run a SLURM client command against this node; its stdout (raises on failure)."""
        out = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited with {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def job_ids(self) -> list[str]:
        """Ids of the jobs SLURM knows (pending, running or completing)."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def jobs(self) -> dict[str, str]:
        """Job id -> state (``PENDING``, ``RUNNING``, ``COMPLETING``...)."""
        lines = self.run("squeue", "-h", "-o", "%i %T").splitlines()
        return dict(line.split() for line in lines if line.strip())

    def node_state(self) -> str:
        """The node's state as ``sinfo`` shows it (``idle``, ``mix``, ``alloc``, ``down*``...)."""
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%t").strip()

    def wait_for(self, predicate, what: str, timeout: float = 30) -> None:
        """Poll ``predicate()`` until true; AssertionError naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; jobs: {self.jobs()}")
            time.sleep(0.1)

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job and wait until SLURM has none left."""
        ids = self.job_ids()
        if ids:
            self.run("scancel", *ids)
        self.wait_for(lambda: not self.job_ids(), "every job to leave squeue after scancel", timeout)

    def log(self, name: str) -> str:
        """The tail of one daemon's log file (``slurmctld``, ``slurmd`` or ``munged``), for failure messages."""
        path = os.path.join(self.directory, f"{name}.log")
        try:
            with open(path) as f:
                return f.read()[-3000:]
        except OSError:
            return ""


def _node_line() -> tuple[str, str]:
    """This machine's node line from ``slurmd -C`` (without the UpTime line) and its node name."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    return line.strip(), line.split()[0].split("=", 1)[1]


def _stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextmanager
def start_slurm(timeout: float = 30) -> Iterator[SlurmNode]:
    """Start munged, slurmctld and slurmd in a temporary folder; stop them and remove it on exit.

    Waits (up to ``timeout`` seconds) until ``sinfo`` shows the node idle.
    ``SLURM_CONF`` is set in ``os.environ`` inside the block and restored after.

    >>> with start_slurm() as node:            # doctest: +SKIP
    ...     node.node_state()
    'idle'
    """
    reason = slurm_unavailable()
    if reason:
        raise RuntimeError(reason)
    directory = tempfile.mkdtemp(prefix="dtest-slurm-")
    os.chmod(directory, 0o755)  # slurmd and the jobs read the configuration
    for sub in ("munge", "state", "spool"):
        os.makedirs(os.path.join(directory, sub), mode=0o700)
    line, name = _node_line()
    env = {**os.environ, "SLURM_CONF": os.path.join(directory, "slurm.conf")}
    node = SlurmNode(directory, name, env)
    with open(node.conf, "w") as f:
        f.write(CONFIG.format(dir=directory, node=name, node_line=line, ctld_port=open_port(),
                              slurmd_port=open_port()))
    old_conf = os.environ.get("SLURM_CONF")
    try:
        munge = os.path.join(directory, "munge")
        key = os.path.join(munge, "munge.key")
        subprocess.run(["mungekey", "--create", "--keyfile", key], check=True, capture_output=True, timeout=30)
        os.chmod(key, 0o600)
        devnull = subprocess.DEVNULL
        node.procs["munged"] = subprocess.Popen(
            ["munged", "-F", "--force", f"--socket={munge}/munge.socket", f"--key-file={key}",
             f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/munged.seed",
             f"--log-file={directory}/munged.log"], stdout=devnull, stderr=devnull)
        deadline = time.monotonic() + timeout
        while not os.path.exists(f"{munge}/munge.socket"):
            if node.procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start (waited for its socket):\n{node.log('munged')}")
            time.sleep(0.02)
        # -i: a fresh state folder, nothing to recover.
        node.procs["slurmctld"] = subprocess.Popen(["slurmctld", "-D", "-i", "-f", node.conf], env=env,
                                                   stdout=devnull, stderr=devnull)
        node.procs["slurmd"] = subprocess.Popen(["slurmd", "-D", "-f", node.conf], env=env,
                                                stdout=devnull, stderr=devnull)
        os.environ["SLURM_CONF"] = node.conf

        def idle() -> bool:
            for daemon, proc in node.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{daemon} exited with {proc.returncode}:\n{node.log(daemon)}")
            try:
                return node.node_state() == "idle"
            except RuntimeError:  # slurmctld not answering yet
                return False

        deadline = time.monotonic() + timeout
        while not idle():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SLURM node was not idle after {timeout} s:\n{node.log('slurmctld')}")
            time.sleep(0.1)
        yield node
    finally:
        try:
            if node.procs.get("slurmctld") and node.procs["slurmctld"].poll() is None:
                # Before slurmd stops: a running job's steps would outlive it.
                node.cancel_all()
        finally:
            for daemon in ("slurmd", "slurmctld", "munged"):
                if daemon in node.procs:
                    _stop(node.procs[daemon])
            if old_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old_conf
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmNode]:
    """A private single-node SLURM for the whole test module (skipped, with the reason, when it cannot run)."""
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    with start_slurm() as node:
        yield node
