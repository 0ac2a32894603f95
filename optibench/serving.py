"""The API's processes: uvicorn, with one listening socket per worker process where the OS allows it."""

from __future__ import annotations

import socket

import uvicorn

APP = "api.main:app"


class ProcessSocket(socket.socket):
    """The API's address, bound with SO_REUSEPORT, and bound anew in each uvicorn worker process that
    receives it (``__reduce__``), where uvicorn's workers would share one socket. Processes sharing a
    socket race to accept, so a burst of keep-alive connections can go mostly to one process, which
    keeps them: 21 of the bench's 32 on one of two processes, whose requests then waited twice as long.
    With a socket each, the kernel spreads new connections over the processes by hash."""

    @classmethod
    def bind_to(cls, host: str, port: int) -> ProcessSocket:
        sock = cls(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        return sock

    def __reduce__(self):
        host, port = self.getsockname()[:2]
        return ProcessSocket.bind_to, (host, port)


def run_api(host: str, port: int, workers: int) -> None:
    """Serve the API with ``workers`` processes until stopped. Binding the address here, before any
    worker starts, reports a port in use at once; the parent's socket never listens."""
    if workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(APP, host=host, port=port, log_level="info", workers=workers)
        return
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(APP, host=host, port=port, log_level="info", workers=workers)
    Multiprocess(config, sockets=[ProcessSocket.bind_to(host, port)]).run()
