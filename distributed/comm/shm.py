"""Same-host transfers of large frames through shared memory (``/dev/shm``).

Two processes on one machine that talk over ``tcp://`` still copy every
byte through the kernel's loopback: into the socket, out of it, through
TCP's flow control.  For a frame of ``distributed.comm.shm.threshold``
bytes or more (1 MiB by default) the writer instead copies it once into a
new file in ``/dev/shm`` (a *segment*) and sends a small descriptor in its
place, flagged ``SHM_FRAME`` in the frame table.  The reader maps the
segment, unlinks it at once (the mapping keeps the pages alive) and hands
the mapping up as the frame: arrays deserialized from it use it in place.
Frames that were ``bytes`` must arrive as ``bytes``: those are read from
the segment straight into a new ``bytes`` object instead of being mapped.

Deciding "same host"
--------------------
An address alone cannot tell: a peer in another container or network
namespace may share our IP and not our ``/dev/shm``.  So a ``Channel``
exists only on a plain ``tcp://`` connection (never TLS: its peers expect
confidentiality that files readable by the same user do not give) whose
two ends are loopback or share one IP, and it is used only after proof:
each end's first message carries a ``CONTROL_FRAME`` *hello* with its user
id, its host id (kernel boot id and hostname) and the name of a small
*probe* file it created in ``/dev/shm`` holding a random token.  The
receiver of a hello uses shared memory towards that peer only if the user
and host match and it can open the probe and read the same token: then
both ends see the same ``/dev/shm`` as the same user, so the peer can open
our segments too.  Otherwise the connection stays on TCP for good.

No loss, no leak
----------------
A descriptor is sent only once its segment is fully written, and the
reader checks the segment's size and owner, so a dead or failing writer
can never hand over a partial value; a missing segment is a closed
connection (``CommClosedError``), the same as a peer that dies mid-read,
and callers already retry or recompute.  Segments are created mode 0600
and unlinked by the reader right after mapping, by the writer when the
write fails or its connection is aborted (a receiver that died), and at
exit.  A process killed before that leaves segments whose names carry its
pid and the boot and pid namespace it ran in: ``sweep_dead_segments``,
run whenever a listener starts, removes those whose creator is gone.
Failing to create a segment (``/dev/shm`` full or missing) sends that
frame over TCP.
"""

from __future__ import annotations

import atexit
import errno
import itertools
import json
import logging
import mmap
import os
import re
import secrets
import socket
import stat
import struct
from collections.abc import Sequence

from distributed import config
from distributed.protocol import ProtocolError, buffers
from distributed.protocol.frames import AS_BYTES, CONTROL_FRAME, SHM_FRAME

__all__ = [
    "Channel",
    "host_id",
    "segment_prefix",
    "stats",
    "sweep_dead_segments",
]

logger = logging.getLogger(__name__)

#: Where segments live (a tmpfs on Linux).
SHM_DIR = "/dev/shm"
_NAME_PREFIX = "dsk-"
#: dsk-<boot>-<pid namespace>-<pid>-<rest>: what ``sweep_dead_segments`` may remove.
_NAME_RE = re.compile(r"dsk-([0-9a-f]{8}|noboot)-(\d+)-(\d+)-[0-9a-z-]+")
_DESCRIPTOR_MAGIC = b"DSKSHM1\0"
_DESCRIPTOR = struct.Struct("<8sQ")
_HELLO_VERSION = 1
_TOKEN_BYTES = 16
#: Most bytes one ``os.write``/``os.readv`` moves on Linux.
_IO_CHUNK = 1 << 30

#: Counters the tests and benchmarks read: frames sent and received through
#: segments, frames that fell back to TCP, connections that proved same-host.
stats = {"sent": 0, "received": 0, "fallback": 0, "verified": 0, "refused": 0}

_counter = itertools.count()
#: Segments this process created and has not seen removed (unlinked at exit).
_created: set[str] = set()
_local: dict | None = None  # this process's identity, probe name and token


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def host_id() -> str:
    """This machine's identity for the hello: kernel boot id and hostname
    (containers share the first, may differ in the second).

    >>> host_id() == host_id()
    True
    """
    return f"{_read_text('/proc/sys/kernel/random/boot_id')}/{socket.gethostname()}"


def _pid_namespace() -> int:
    """The inode of our pid namespace: pids are only comparable within one."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def segment_prefix() -> str:
    """The start of every segment name this process creates, minus the pid:
    ``dsk-<boot>-<pid namespace>-``; a name then goes on ``<pid>-<n>``.

    >>> segment_prefix().startswith("dsk-")
    True
    """
    boot = _read_text("/proc/sys/kernel/random/boot_id").replace("-", "")[:8] or "noboot"
    return f"{_NAME_PREFIX}{boot}-{_pid_namespace()}-"


def _usable() -> bool:
    return os.name == "posix" and os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def _local_identity() -> dict | None:
    """Our hello contents, creating the probe file on first use (None when
    this process cannot create files in ``/dev/shm``)."""
    global _local
    if _local is not None and _local.get("pid") == os.getpid():
        return _local
    if not _usable():
        return None
    token = secrets.token_hex(_TOKEN_BYTES)
    probe = f"{segment_prefix()}{os.getpid()}-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(os.path.join(SHM_DIR, probe),
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, token.encode())
        finally:
            os.close(fd)
    except OSError as e:
        logger.debug("no shared-memory transfers: cannot create a probe in %s: %s", SHM_DIR, e)
        return None
    _created.add(probe)
    _local = {"v": _HELLO_VERSION, "uid": os.getuid(), "host": host_id(), "probe": probe,
              "token": token, "pid": os.getpid()}
    return _local


def _read_probe(name: str) -> str | None:
    """The token in a peer's probe file, or None if we cannot read it."""
    try:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return None
        return os.read(fd, 256).decode("ascii", "replace")
    finally:
        os.close(fd)


def _valid_name(name: str) -> bool:
    return (name.startswith(_NAME_PREFIX) and "/" not in name and "\0" not in name
            and len(name) < 200)


def _check_hello(data: bytes | memoryview) -> bool:
    """Whether the peer that sent this hello shares our ``/dev/shm``."""
    try:
        peer = json.loads(bytes(data))
        if not isinstance(peer, dict) or peer.get("v") != _HELLO_VERSION:
            return False
        if peer.get("uid") != os.getuid() or peer.get("host") != host_id():
            return False
        name = peer.get("probe")
        if not isinstance(name, str) or not _valid_name(name):
            return False
        return _read_probe(name) == peer.get("token")
    except (ValueError, TypeError):
        return False


def _new_name() -> str:
    return f"{segment_prefix()}{os.getpid()}-{next(_counter)}-{secrets.token_hex(4)}"


def _write_all(fd: int, view: memoryview) -> None:
    """Write all of ``view`` to ``fd`` (``os.write`` may write less)."""
    offset, n = 0, len(view)
    while offset < n:
        offset += os.write(fd, view[offset : offset + _IO_CHUNK])


def _write_segment(frame: memoryview) -> str:
    """A new segment holding ``frame``; unlinked again if writing fails."""
    name = _new_name()
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    try:
        _created.add(name)
        _write_all(fd, frame)
    except BaseException:
        _unlink(name)
        raise
    finally:
        os.close(fd)
    return name


def _unlink(name: str) -> None:
    _created.discard(name)
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:  # the reader took it: the usual case
        pass
    except OSError as e:
        logger.warning("could not remove shared-memory segment %s: %s", name, e)


def _prune_created() -> None:
    """Forget segments readers have already unlinked (keeps ``_created`` small)."""
    for name in [n for n in _created if "-probe-" not in n]:
        if not os.path.exists(os.path.join(SHM_DIR, name)):
            _created.discard(name)


def _open_segment(name: str, nbytes: int, as_bytes: bool):
    """The segment's contents (a mapping, or ``bytes``), unlinking it.

    Raises ``FileNotFoundError`` when it is gone, ``ProtocolError`` when it
    is not what the descriptor announced.
    """
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size != nbytes:
            raise ProtocolError(f"shared-memory segment {name} is not the announced "
                                f"{nbytes} bytes of a file of ours")
        if as_bytes and buffers.SUPPORTED:
            frame, view = buffers.new_bytes(nbytes)
            _read_all(fd, view, nbytes)
            del view
        else:
            # No MAP_POPULATE: pages are mapped as they are used, and a value
            # that is only passed along (or measured) never faults them in.
            frame = memoryview(mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED))
            if as_bytes:
                frame = bytes(frame)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return frame
    finally:
        os.close(fd)


def _read_all(fd: int, view: memoryview, nbytes: int) -> None:
    offset = 0
    while offset < nbytes:
        got = os.preadv(fd, [view[offset : offset + _IO_CHUNK]], offset)
        if got <= 0:
            raise ProtocolError("shared-memory segment shorter than announced")
        offset += got


class Channel:
    """The shared-memory side of one ``tcp://`` connection.

    ``Comm`` asks ``Channel.for_socket`` for one when it is created (None:
    not a candidate), passes every outgoing frame list through ``prepare``
    and every incoming one through ``resolve``, and calls ``release`` when
    the connection is aborted.

    >>> Channel.for_socket(None, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2") is None
    True
    """

    def __init__(self, threshold: int):
        self.threshold = threshold
        self.hello_sent = False
        self.peer_ok = False  # the peer proved it shares our /dev/shm
        self.sent: list[str] = []  # our segments the peer may not have taken yet

    @classmethod
    def for_socket(cls, sock, local_address: str, peer_address: str) -> Channel | None:
        """A channel when shared memory may be used on this connection:
        enabled by config, plain ``tcp://`` at both ends, and a peer at our
        own IP or both on loopback."""
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
        threshold = config.get_bytes("distributed.comm.shm.threshold")
        if threshold is None or threshold < 0:
            raise ValueError("distributed.comm.shm.threshold must be a size such as '1MiB', "
                             f"not {config.get('distributed.comm.shm.threshold')!r}")
        return cls(max(threshold, 1))

    def prepare(self, frames: list) -> tuple[list, list[int] | None]:
        """Frames and flags to write: large frames become segment
        descriptors once the peer proved it can read them, and the first
        message carries our hello.  Byte-like frames in, flags None when
        nothing changed."""
        flags: list[int] | None = None
        if self.peer_ok:
            for i, frame in enumerate(frames):
                nbytes = len(frame) if type(frame) is bytes else memoryview(frame).nbytes
                if nbytes < self.threshold:
                    continue
                try:
                    name = _write_segment(memoryview(frame).cast("B"))
                except OSError as e:  # /dev/shm full or gone: this frame over TCP
                    stats["fallback"] += 1
                    logger.debug("frame of %d bytes sent over TCP: %s", nbytes, e)
                    if e.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT):
                        self.peer_ok = False
                    break
                if flags is None:
                    frames = list(frames)
                    flags = [0] * len(frames)
                flags[i] = SHM_FRAME | (AS_BYTES if type(frame) is bytes else 0)
                frames[i] = _DESCRIPTOR.pack(_DESCRIPTOR_MAGIC, nbytes) + name.encode()
                self.sent.append(name)
                stats["sent"] += 1
        if not self.hello_sent:
            self.hello_sent = True
            me = _local_identity()
            if me is not None:
                hello = json.dumps({k: v for k, v in me.items() if k != "pid"}).encode()
                frames = [*frames, hello]
                flags = [*(flags or [0] * (len(frames) - 1)), CONTROL_FRAME]
        if len(self.sent) > 64:
            self.sent = [n for n in self.sent if os.path.exists(os.path.join(SHM_DIR, n))]
            if len(_created) > 256:
                _prune_created()
        return frames, flags

    def written(self, ok: bool, frames: Sequence, flags: Sequence[int] | None) -> None:
        """After the write: a failed one unlinks the segments it created."""
        if ok or flags is None:
            return
        for frame, flag in zip(frames, flags):
            if flag & SHM_FRAME:
                name = bytes(frame[_DESCRIPTOR.size :]).decode()
                _unlink(name)
                if name in self.sent:
                    self.sent.remove(name)

    def resolve(self, frames: list, flags: Sequence[int], max_size: int) -> list:
        """Incoming frames with hellos consumed and descriptors replaced by
        the segments' contents.  A segment that is gone raises
        ``FileNotFoundError``; malformed input raises ``ProtocolError``."""
        out = []
        total = 0
        for frame, flag in zip(frames, flags):
            if flag & CONTROL_FRAME:
                ok = _check_hello(frame)
                self.peer_ok = ok and _local_identity() is not None
                stats["verified" if self.peer_ok else "refused"] += 1
                continue
            if flag & SHM_FRAME:
                name, nbytes = _parse_descriptor(frame)
                total += nbytes
                if total > max_size:
                    from distributed.protocol.frames import MessageTooLargeError

                    raise MessageTooLargeError(total, max_size, "receive")
                frame = _open_segment(name, nbytes, bool(flag & AS_BYTES))
                stats["received"] += 1
            out.append(frame)
        return out

    def release(self) -> None:
        """Unlink our segments the peer has not taken (the connection died)."""
        sent, self.sent = self.sent, []
        for name in sent:
            _unlink(name)


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")


def _parse_descriptor(frame) -> tuple[str, int]:
    data = bytes(frame)
    if len(data) <= _DESCRIPTOR.size:
        raise ProtocolError("malformed shared-memory descriptor")
    magic, nbytes = _DESCRIPTOR.unpack_from(data)
    try:
        name = data[_DESCRIPTOR.size :].decode()
    except UnicodeDecodeError:
        name = ""
    if magic != _DESCRIPTOR_MAGIC or not _valid_name(name):
        raise ProtocolError("malformed shared-memory descriptor")
    return name, nbytes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_dead_segments() -> int:
    """Remove segments (and probes) whose creator died without cleaning up:
    ours by user, from this boot and pid namespace with a pid no longer
    alive, or from another boot.  Returns how many were removed.

    >>> sweep_dead_segments() >= 0
    True
    """
    if not _usable():
        return 0
    match = _NAME_RE.fullmatch(segment_prefix() + "0-x")
    assert match is not None
    boot, namespace = match.group(1), match.group(2)
    removed = 0
    uid = os.getuid()
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        match = _NAME_RE.fullmatch(name)
        if match is None:
            continue
        if match.group(1) == boot:
            if match.group(2) != namespace:
                continue  # another pid namespace: its pids are not ours to judge
            if _pid_alive(int(match.group(3))):
                continue
        path = os.path.join(SHM_DIR, name)
        try:
            if os.lstat(path).st_uid != uid:
                continue
            os.unlink(path)
            removed += 1
        except OSError:
            continue
    if removed:
        logger.info("removed %d shared-memory segments left by dead processes", removed)
    return removed


@atexit.register
def _cleanup_at_exit() -> None:
    if _local is not None and _local.get("pid") != os.getpid():
        return  # a forked child: the names are its parent's
    for name in list(_created):
        _unlink(name)
