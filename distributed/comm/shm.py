"""Same-host transfers of large frames: the receiver copies them straight
out of the sender's memory (Linux cross-memory attach).

Two processes on one machine that talk over ``tcp://`` copy every byte
twice through the kernel's loopback (into the socket, out of it) with TCP's
flow control in between, which on a loaded machine stalls now and then.
For a frame of ``distributed.comm.shm.threshold`` bytes or more (1 MiB by
default) the writer here sends a small descriptor instead (flagged
``SHM_FRAME`` in the frame table): its pid, the frame's address and length.
The reader copies the frame with one ``process_vm_readv`` call into fresh
memory of its own (huge pages, see ``distributed.protocol.buffers``; a new
``bytes`` object for frames that were ``bytes``) and acknowledges on a
datagram socket the writer opened for that message.  The writer keeps the
frames alive and unchanged until then: its ``write`` returns when the peer
has the bytes, as with TCP.  One copy instead of two, no socket buffers,
nothing on disk.

Why not files in ``/dev/shm``
-----------------------------
The first version wrote each frame into a ``/dev/shm`` file that the
reader mapped.  The writer's copy into tmpfs allocates a 4 KiB page at a
time (tmpfs huge pages are off on most machines): 70-120 ms per 100 MB on
the 2-core test machine, slower than the loopback socket it replaced.
``process_vm_readv`` into a huge-page buffer takes 20-40 ms, and leaves no
file to leak when a process dies.

Deciding "same host"
--------------------
An address alone cannot tell: a peer in another container may share our
IP and not our pid namespace.  A ``Channel`` exists only on a plain
``tcp://`` connection (never TLS: its peers expect the data to be
protected, and we keep that promise simple) whose two ends are loopback or
share one IP (so one network namespace), and it is used only after proof:
the connecting end's first message carries a ``CONTROL_FRAME`` *hello*
(the accepting end answers with its own) with its user
and group ids, host id (kernel boot id and hostname), pid namespace, pid,
and the address of a random token in its memory.  The receiver of a hello
sends large frames to that peer only if all match and it can read the
token out of the peer's memory: then both run as the same user in one pid
namespace, and the kernel lets each read the other.  Otherwise (another
host, another container, a different user, ``process_vm_readv`` blocked by
a seccomp profile, Yama's ptrace restrictions) the connection stays on TCP.

Failures
--------
The reader checks the byte count the kernel copied and, after the copy,
that the writer's token is still where it was (so a pid reused by another
process cannot hand over its memory): a writer that died gives a closed
connection (``CommClosedError``), never a wrong value; callers already
retry or recompute.  A writer whose reader died stops waiting as soon as it
sees the pid gone, and gives up after ``distributed.comm.timeouts.tcp``
without an acknowledgement from a live one.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import secrets
import socket
import struct
import sys
from collections.abc import Sequence

from distributed import config
from distributed.comm.errors import CommClosedError
from distributed.protocol import ProtocolError, buffers
from distributed.protocol.frames import AS_BYTES, CONTROL_FRAME, SHM_FRAME

__all__ = ["Channel", "available", "host_id", "stats"]

logger = logging.getLogger(__name__)

_HELLO_VERSION = 2
#: One descriptor: pid, address, length.
_DESCRIPTOR = struct.Struct("<QQQ")
#: Descriptors of one message come with the name of the socket to acknowledge on.
_ACK_PREFIX = b"\0dsk-ack-"
#: How often a waiting writer checks that its reader is still alive.
_POLL = 0.25

#: Counters the tests and benchmarks read: frames sent and received by
#: copy, frames or connections that used TCP instead, hellos accepted.
stats = {"sent": 0, "received": 0, "fallback": 0, "verified": 0, "refused": 0}


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


_libc = None
_token: ctypes.Array | None = None  # our token, at a fixed address for peers to read
_token_pid = 0


def _process_vm_readv():
    """libc's ``process_vm_readv`` (None where there is none)."""
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            func = libc.process_vm_readv
        except (OSError, AttributeError):
            _libc = False
            return None
        func.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong,
                         ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.c_ulong]
        func.restype = ctypes.c_ssize_t
        _libc = func
    return _libc or None


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def host_id() -> str:
    """This machine's identity in a hello: kernel boot id and hostname.

    >>> host_id() == host_id()
    True
    """
    return f"{_read_text('/proc/sys/kernel/random/boot_id')}/{socket.gethostname()}"


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def available() -> bool:
    """Whether this process can take part at all: Linux with
    ``process_vm_readv``, and no Yama restriction (``ptrace_scope`` above 0
    lets a process read only its descendants, which breaks the symmetry the
    hello relies on).

    >>> isinstance(available(), bool)
    True
    """
    if not sys.platform.startswith("linux") or _process_vm_readv() is None:
        return False
    return _read_text("/proc/sys/kernel/yama/ptrace_scope") in ("", "0")


def _identity() -> dict:
    """Our hello contents (a token placed in memory on first use, and again
    in a forked child, whose token would otherwise be its parent's)."""
    global _token, _token_pid
    if _token is None or _token_pid != os.getpid():
        _token = ctypes.create_string_buffer(secrets.token_bytes(16), 16)
        _token_pid = os.getpid()
    return {"v": _HELLO_VERSION, "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
            "host": host_id(), "pidns": _pid_namespace(), "pid": os.getpid(),
            "addr": ctypes.addressof(_token), "token": bytes(_token).hex()}


def _read_remote(pid: int, address: int, target: memoryview) -> None:
    """Copy ``len(target)`` bytes at ``address`` in process ``pid`` into
    ``target``; ``OSError`` if the kernel copies fewer."""
    n = len(target)
    if n == 0:
        return
    func = _process_vm_readv()
    if func is None:
        raise OSError("process_vm_readv is not available")
    local_address = _address_of(target)
    done = 0
    while done < n:
        local = _IOVec(local_address + done, n - done)
        remote = _IOVec(address + done, n - done)
        got = func(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            err = ctypes.get_errno()
            raise OSError(err, f"could not read {n} bytes from process {pid}: "
                          f"{os.strerror(err) if err else 'nothing copied'}")
        done += got


def _address_of(frame) -> int:
    """Address of a contiguous buffer (read-only ones too)."""
    view = _PyBuffer()
    if ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(frame), ctypes.byref(view), 0) != 0:
        raise BufferError("not a contiguous buffer")
    try:
        return view.buf or 0
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


def _check_hello(data) -> dict | None:
    """The peer's identity if it runs as us in our pid namespace on this
    host and we can read its memory (then it can read ours); else None."""
    try:
        peer = json.loads(bytes(data))
    except ValueError:
        return None
    me = _identity()
    if not isinstance(peer, dict) or peer.get("v") != _HELLO_VERSION:
        return None
    if any(peer.get(k) != me[k] for k in ("ids", "host", "pidns")):
        return None
    pid, address, token = peer.get("pid"), peer.get("addr"), peer.get("token")
    if type(pid) is not int or type(address) is not int or not isinstance(token, str):
        return None
    got = memoryview(bytearray(16))
    try:
        _read_remote(pid, address, got)
    except OSError as e:
        logger.debug("same-host transfers with process %d refused: %s", pid, e)
        return None
    return peer if got.tobytes().hex() == token else None


class Channel:
    """The same-host side of one ``tcp://`` connection.

    ``Comm`` asks ``Channel.for_socket`` for one when it is created (None:
    not a candidate), passes outgoing frames through ``prepare`` and, once
    they are written, ``wait_acknowledged``; incoming frames through
    ``resolve``.

    >>> Channel.for_socket(None, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2") is None
    True
    """

    def __init__(self, threshold: int, timeout: float):
        self.threshold = threshold
        self.timeout = timeout
        self.hello_sent = False
        self.hello_seen = False  # the peer sent its hello: it speaks this protocol
        self.peer: dict | None = None  # the peer's identity, once its hello checked out

    @classmethod
    def for_socket(cls, sock, local_address: str, peer_address: str) -> Channel | None:
        """A channel when the fast path may be used on this connection:
        enabled by config, plain ``tcp://`` at both ends, a peer at our own
        IP or both on loopback, and ``available()``."""
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        if not (local_address.startswith("tcp://") and peer_address.startswith("tcp://")):
            return None
        if not config.get("distributed.comm.shm.enabled"):
            return None
        try:
            local_ip, peer_ip = sock.getsockname()[0], sock.getpeername()[0]
        except OSError:
            return None
        if local_ip != peer_ip and not (_loopback(local_ip) and _loopback(peer_ip)):
            return None
        if not available():
            return None
        threshold = config.get_bytes("distributed.comm.shm.threshold")
        if threshold is None or threshold < 0:
            raise ValueError("distributed.comm.shm.threshold must be a size such as '1MiB', "
                             f"not {config.get('distributed.comm.shm.threshold')!r}")
        timeout = config.get_timedelta("distributed.comm.timeouts.tcp") or 30
        return cls(max(threshold, 1), timeout)

    def prepare(self, frames: list, accepted: bool = False
                ) -> tuple[list, list[int] | None, socket.socket | None]:
        """Frames and flags to write, and the socket the peer acknowledges
        on (None: nothing to wait for).  Large frames become descriptors
        once the peer's hello checked out.  The side that connected sends
        its hello with its first message; the side that ``accepted`` the
        connection only answers one, so a client that does not speak this
        protocol (a tool reading raw frames) never sees a flagged frame."""
        flags: list[int] | None = None
        ack = None
        if self.peer is not None:
            pid = os.getpid()
            for i, frame in enumerate(frames):
                nbytes = len(frame) if type(frame) is bytes else memoryview(frame).nbytes
                if nbytes < self.threshold:
                    continue
                if flags is None:
                    try:
                        ack = _ack_socket()
                    except OSError as e:  # out of file descriptors: this message over TCP
                        stats["fallback"] += 1
                        logger.debug("message sent over TCP: no acknowledgement socket: %s", e)
                        break
                    frames = list(frames)
                    flags = [0] * len(frames)
                flags[i] = SHM_FRAME | (AS_BYTES if type(frame) is bytes else 0)
                frames[i] = _DESCRIPTOR.pack(pid, _address_of(frame), nbytes)
                stats["sent"] += 1
            if ack is not None:
                frames.append(ack.getsockname())
                flags.append(CONTROL_FRAME)
        if not self.hello_sent and (not accepted or self.hello_seen):
            self.hello_sent = True
            frames = [*frames, json.dumps(_identity()).encode()]
            flags = [*(flags or [0] * (len(frames) - 1)), CONTROL_FRAME]
        return frames, flags, ack

    async def wait_acknowledged(self, ack: socket.socket, peer_address: str) -> None:
        """Wait until the peer has copied this message's frames (the caller
        keeps them alive meanwhile, and closes ``ack`` before it releases
        them); ``CommClosedError`` if the peer died or failed, or did not
        answer in ``distributed.comm.timeouts.tcp``."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_readable() -> None:
            try:
                answer = ack.recv(16)
            except BlockingIOError:
                return
            if not done.done():
                done.set_result(answer)

        loop.add_reader(ack.fileno(), on_readable)
        try:
            deadline = loop.time() + self.timeout
            pid = self.peer["pid"] if self.peer else 0
            while True:
                try:
                    answer = await asyncio.wait_for(asyncio.shield(done), _POLL)
                    break
                except asyncio.TimeoutError:
                    if not _pid_alive(pid):
                        raise CommClosedError(f"{peer_address} (process {pid}) died before "
                                              "copying the frames we sent it") from None
                    if loop.time() > deadline:
                        raise CommClosedError(
                            f"{peer_address} did not take the frames we sent it within "
                            f"{self.timeout:g} s (distributed.comm.timeouts.tcp)") from None
            if answer != b"ok":
                raise CommClosedError(f"{peer_address} could not copy the frames we sent it")
        finally:
            loop.remove_reader(ack.fileno())

    def resolve(self, frames: list, flags: Sequence[int], max_size: int) -> list:
        """Incoming frames with hellos checked and descriptors replaced by
        the bytes copied from the peer.  Raises ``OSError`` when the copy
        fails (the peer died), ``ProtocolError`` on malformed input."""
        ack_name = None
        for frame, flag in zip(frames, flags):
            if flag & CONTROL_FRAME:
                data = bytes(frame)
                if data.startswith(_ACK_PREFIX):
                    ack_name = data
                else:
                    self.hello_seen = True
                    self.peer = _check_hello(data)
                    stats["verified" if self.peer else "refused"] += 1
        if ack_name is None and any(flag & SHM_FRAME for flag in flags):
            raise ProtocolError("same-host frames without an acknowledgement socket")
        out = []
        total = 0
        try:
            for frame, flag in zip(frames, flags):
                if flag & CONTROL_FRAME:
                    continue
                if flag & SHM_FRAME:
                    frame = self._copy(frame, bool(flag & AS_BYTES))
                    total += len(frame)
                    if total > max_size:
                        from distributed.protocol.frames import MessageTooLargeError

                        raise MessageTooLargeError(total, max_size, "receive")
                    stats["received"] += 1
                out.append(frame)
            if ack_name is not None:
                self._check_still_there()
        except BaseException:
            try:
                _acknowledge(ack_name, b"fail")
            except OSError:  # the writer gave up (or died): nothing waits
                pass
            raise
        _acknowledge(ack_name, b"ok")  # OSError: the writer gave up, drop the copy
        return out

    def _copy(self, frame, as_bytes: bool):
        if len(frame) != _DESCRIPTOR.size:
            raise ProtocolError("malformed same-host frame descriptor")
        pid, address, nbytes = _DESCRIPTOR.unpack(bytes(frame))
        if self.peer is None or pid != self.peer["pid"]:
            raise ProtocolError("same-host frame from a peer that did not prove it is one")
        # Untouched: the copy faults the pages in itself (touching first
        # cost as long as the copy, 25 ms per 100 MB, in a profile).
        if as_bytes and buffers.SUPPORTED:
            value, target = buffers.new_bytes(nbytes, touch=False)
        else:
            target = value = buffers.new_buffer(nbytes, touch=False)
        _read_remote(pid, address, target)
        del target
        return bytes(value) if as_bytes and type(value) is not bytes else value

    def _check_still_there(self) -> None:
        """The peer's token is still in place after the copy: the pid was
        not reused by another process while we read."""
        peer = self.peer
        if peer is None:
            return
        got = memoryview(bytearray(16))
        _read_remote(peer["pid"], peer["addr"], got)
        if got.tobytes().hex() != peer["token"]:
            raise OSError(f"process {peer['pid']} is not the peer that sent the frames")


def _ack_socket() -> socket.socket:
    """A datagram socket with a fresh abstract name for one message's
    acknowledgement (nothing on disk, gone when closed)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(_ACK_PREFIX + secrets.token_hex(12).encode())
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _acknowledge(name: bytes | None, answer: bytes) -> None:
    """Tell the writer; ``OSError`` if it no longer listens.  The writer
    closes the socket before it lets its frames go, so an "ok" that cannot
    be delivered means the copy may have read released memory: the caller
    must then drop what it copied."""
    if name is None:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(answer, name)


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by its parent)
    does not: its memory is gone already."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _read_text(f"/proc/{pid}/stat")
    state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] if ")" in stat else ""
    return state not in ("Z", "X")
