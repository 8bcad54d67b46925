"""SSHCluster against a real sshd on loopback.

The ``sshd`` fixture generates a host key and a user key in a temporary
folder and runs ``/usr/sbin/sshd -D`` (Debian's openssh-server; ``.ci/run``
installs it when missing) with its own configuration, bound to 127.0.0.1 on
a free port, as root (it logs in as root with the generated key only), and
stops it afterwards.  Skipped, with the reason, where that cannot run.
"""
import asyncio
import os
import subprocess
import sys
import time

import psutil
import pytest

from distributed import Client
from distributed.utils import open_port
from distributed.utils_test import gen_test, inc, wait_for_port

asyncssh = pytest.importorskip("asyncssh", reason="SSHCluster needs asyncssh (pip install 'distributed[ssh]')")

from distributed.deploy.ssh import SSHCluster  # noqa: E402

SSHD = "/usr/sbin/sshd"

CONFIG = """\
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
"""


class Sshd:
    def __init__(self, proc, port, key_file):
        self.proc = proc
        self.port = port
        self.key_file = key_file

    def connect_options(self, **extra):
        return {"port": self.port, "username": "root", "client_keys": [self.key_file], "known_hosts": None,
                **extra}

    def sessions(self) -> list:
        """Processes started through this sshd (its sessions and their children)."""
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def wait_no_sessions(self, timeout=20):
        deadline = time.monotonic() + timeout
        while self.sessions():
            if time.monotonic() > deadline:
                raise AssertionError(f"processes left after close: {[p.cmdline() for p in self.sessions()]}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD):
        pytest.skip(f"no {SSHD} (Debian's openssh-server; .ci/run installs it when it can)")
    if os.geteuid() != 0:
        pytest.skip("the loopback sshd runs as root (it must switch to the user it logs in)")
    d = tmp_path_factory.mktemp("sshd")
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(d / "host_key"))
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key.write_private_key(str(d / "user_key"))
    (d / "authorized_keys").write_bytes(user_key.export_public_key())
    os.chmod(d / "host_key", 0o600)
    os.chmod(d / "user_key", 0o600)
    (d / "sshd_config").write_text(CONFIG.format(dir=d))
    os.makedirs("/run/sshd", exist_ok=True)  # its privilege-separation folder
    port = open_port("127.0.0.1")
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        try:
            wait_for_port(f"127.0.0.1:{port}", timeout=10)
        except Exception:
            proc.kill()
            proc.wait()
            log.close()
            pytest.skip(f"sshd did not start: {(d / 'sshd.log').read_text()[-2000:]}")
        yield Sshd(proc, port, str(d / "user_key"))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_ssh_cluster_runs_a_job_and_leaves_no_process(sshd):
    with SSHCluster(["127.0.0.1", "127.0.0.1", "localhost"], connect_options=sshd.connect_options(),
                    scheduler_options={"port": 0}, worker_options={"nthreads": 1},
                    remote_python=sys.executable) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with Client(cluster) as c:
            assert c.submit(inc, 1).result() == 2
            assert sum(c.gather(c.map(inc, range(20)))) == sum(range(1, 21))
            info = c.scheduler_info()
            assert {w["name"] for w in info["workers"].values()} == {0, 1}
            # the workers run under sshd, not under this process
            pids = {w["pid"] for w in info["workers"].values()}
            assert pids <= {p.pid for p in sshd.sessions()}
        with pytest.raises(ValueError, match="cannot scale"):
            cluster.scale(4)
    sshd.wait_no_sessions()


@gen_test(timeout=120)
async def test_ssh_cluster_async_several_workers_per_host(sshd):
    async with SSHCluster(["127.0.0.1", "127.0.0.1"], connect_options=[sshd.connect_options()] * 2,
                          scheduler_options={"port": 0}, worker_options={"nthreads": 1, "n_workers": 2},
                          worker_class="distributed.Worker", remote_python=[sys.executable] * 2,
                          asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as c:
            await c.wait_for_workers(2)
            info = await c.scheduler_info()
            assert {w["name"] for w in info["workers"].values()} == {"0-0", "0-1"}
            assert await c.submit(inc, 41) == 42
    await asyncio.get_running_loop().run_in_executor(None, sshd.wait_no_sessions)


def test_failed_login_raises_and_leaves_nothing(sshd, tmp_path):
    other = asyncssh.generate_private_key("ssh-ed25519")
    other.write_private_key(str(tmp_path / "other"))
    options = sshd.connect_options(client_keys=[str(tmp_path / "other")])
    with pytest.raises(asyncssh.PermissionDenied):
        SSHCluster(["127.0.0.1", "127.0.0.1"], connect_options=options, remote_python=sys.executable)
    sshd.wait_no_sessions()


def test_bad_arguments_raise_before_connecting():
    with pytest.raises(ValueError, match="at least two hosts"):
        SSHCluster(["127.0.0.1"])
    with pytest.raises(ValueError, match="one per host"):
        SSHCluster(["a", "b"], connect_options=[{}])
    with pytest.raises(NotImplementedError, match="security"):
        SSHCluster(["a", "b"], security=object())
    with pytest.raises(TypeError, match="JSON"):
        SSHCluster(["a", "b"], worker_options={"x": object()})


def test_remote_processes_end_when_the_cluster_process_dies(sshd):
    """SIGKILL of the process holding the SSHCluster: the sessions close, the
    remote processes read the end of their stdin and exit."""
    script = (
        "import sys, time\n"
        "from distributed.deploy.ssh import SSHCluster\n"
        f"c = SSHCluster(['127.0.0.1', '127.0.0.1'], connect_options={sshd.connect_options()!r},\n"
        "                scheduler_options={'port': 0}, remote_python=sys.executable)\n"
        "print('READY', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        assert len(sshd.sessions()) >= 3  # scheduler, nanny, worker (and their shells)
    finally:
        proc.kill()
        proc.wait()
    sshd.wait_no_sessions()
