"""A URL on 127.0.0.1 where every connection is refused, for the tests of failed downloads.

It was http://127.0.0.1:9/ ("nothing listens"): true on most machines, but port 9 is the
discard service's, and where something listens there each download waited out its 60 s
timeout per file, or got an answer. Here the port is bound by this process and never listened
on: the kernel refuses every connection to it (in a subprocess too) for as long as the test
session runs, and no other process can take it meanwhile."""

from __future__ import annotations

import socket

_HELD: list[socket.socket] = []


def dead_url() -> str:
    """http://127.0.0.1:PORT/ with PORT bound here and never listened on."""
    if not _HELD:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        _HELD.append(sock)
    return f"http://127.0.0.1:{_HELD[0].getsockname()[1]}/"
