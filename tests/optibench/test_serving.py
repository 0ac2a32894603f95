"""The API's processes each listen on their own socket of one address, so the kernel spreads
connections over them instead of letting the process that accepts first take a burst."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import httpx

from optibench.serving import ProcessSocket

REPO = Path(__file__).resolve().parents[2]


def _listening_sockets(port: int) -> int:
    """LISTEN entries for ``port`` in /proc/net/tcp (Linux): one per listening socket, of any process."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A")


def test_a_process_socket_is_bound_anew_where_it_is_received():
    parent = ProcessSocket.bind_to("127.0.0.1", 0)
    port = parent.getsockname()[1]
    received = [ForkingPickler.loads(ForkingPickler.dumps(parent)) for _ in range(2)]  # as a spawned worker gets it
    try:
        for sock in received:
            assert sock.getsockname() == ("127.0.0.1", port) and sock.fileno() != parent.fileno()
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            sock.listen(64)
            sock.setblocking(False)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        time.sleep(0.2)
        accepted = []
        for sock in received:
            count = 0
            while True:
                try:
                    sock.accept()[0].close()
                except BlockingIOError:
                    break
                count += 1
            accepted.append(count)
        assert sum(accepted) == 64 and min(accepted) > 0, accepted  # the parent's socket never listens
        for client in clients:
            client.close()
    finally:
        for sock in (parent, *received):
            sock.close()


def test_serve_with_two_api_workers_listens_once_per_process_and_stops_on_sigterm(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "OPTIBENCH_DATA_DIR": str(tmp_path),
        "OPTIBENCH_PORT": str(port),
        "OPTIBENCH_API_WORKERS": "2",
        "OPTIBENCH_DATABASE_URL": f"sqlite:///{tmp_path / 'optibench.db'}",
    }
    cli = [sys.executable, "-m", "optibench.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, cwd=REPO, capture_output=True)
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [*cli, "serve", "--no-worker"], env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 90
        while _listening_sockets(port) < 2:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        assert _listening_sockets(port) == 2
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert all(client.get("/healthz").status_code == 200 for _ in range(10))
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()[-3000:]
        assert _listening_sockets(port) == 0
    finally:
        if process.poll() is None:
            process.kill()
