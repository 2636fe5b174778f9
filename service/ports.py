"""Listening ports shared by worker processes (SO_REUSEPORT).

Each worker binds its own socket on the same port and the kernel spreads new connections over
the listening ones. Each worker's backlog is its own, so the drain's "accept what is queued,
then close" (`service.server.UvicornListener.stop_accepting`) keeps its guarantee per worker:
once a worker closes, new connections go to the others. A socket in a SO_REUSEPORT group that
is bound but not listening receives no connections; the supervisor holds one per port, so that
the port stays this gateway's (a process without SO_REUSEPORT cannot bind it) and port 0 is
resolved once for every worker.
"""

from __future__ import annotations

import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` in the port's SO_REUSEPORT group (not yet listening)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """Hold `host:port` for this gateway's workers; port 0 picks a free one.

    Raises OSError when anything already listens there: first a bind without SO_REUSEPORT, which
    fails against a listener of any kind (another gateway's workers included), then the group's
    own bind."""
    if port != 0:
        with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    return reuse_port_socket(host, port)


def bound_port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port
