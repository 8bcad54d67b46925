"""How fast this machine can receive 100 MB over loopback TCP, by kind of
destination buffer: one reused (already in memory) or fresh (every page
faulted in as the data arrives, as any received value must be).

    python benchmarks/recv_ceiling.py

This bounds the transfer rows: a value received by a worker or client
always lands in fresh memory.  "fresh new_buffer" is what our comms use
(``distributed.protocol.buffers.new_buffer``: private memory with
transparent huge pages); a shared mmap or a bytearray is faulted in 4 KiB
at a time.  Loopback on this VM also reorders packets now and then
(``TCPSACKReorder`` in /proc/net/netstat), which costs a transfer 100-200
ms; hence best and median.
"""
from __future__ import annotations

import mmap
import multiprocessing
import socket
import time

from distributed.protocol.buffers import new_buffer

N = 100 * 2**20


def _send(port: int, rounds: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    data = memoryview(bytes(N))
    for _ in range(rounds):
        sock.sendall(data)
        sock.recv(1)


def main(rounds_per_kind: int = 3) -> None:
    kinds = ["reused bytearray", "fresh new_buffer", "fresh shared mmap", "fresh bytearray"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    sender = multiprocessing.Process(target=_send,
                                     args=(server.getsockname()[1], rounds_per_kind * len(kinds)))
    sender.start()
    conn, _ = server.accept()
    reused = bytearray(N)
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds_per_kind):
        for kind in kinds:
            start = time.perf_counter()
            buf = {"reused bytearray": lambda: reused, "fresh new_buffer": lambda: new_buffer(N),
                   "fresh shared mmap": lambda: mmap.mmap(-1, N),
                   "fresh bytearray": lambda: bytearray(N)}[kind]()
            view, got = memoryview(buf), 0
            while got < N:
                got += conn.recv_into(view[got:], N - got)
            results[kind].append(N / 2**20 / (time.perf_counter() - start))
            del view
            conn.send(b"k")
    sender.join()
    for kind, rates in results.items():
        print(f"{kind:18s} best {max(rates):6.0f} MB/s  median {sorted(rates)[len(rates) // 2]:6.0f} MB/s")


if __name__ == "__main__":
    main()
