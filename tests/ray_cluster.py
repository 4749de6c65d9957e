"""A real 2-node Ray cluster on this machine for tests: a head and a worker node started with
`ray start` (two raylets, 1 CPU each, loopback only), used only through subprocesses (`ray job
submit`, `ray list`), never by `ray.init` in the test process, so the test session's own embedded
Ray is untouched.

It is stopped by killing the processes it started, never with `ray stop`: `ray stop` kills every
Ray process on the machine by name (whatever --temp-dir it was started with), which would take
down the test session's Ray and anyone else's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class LocalCluster:
    """``start()`` a head (--num-cpus=1) and a worker node (--num-cpus=1, resource worker_node),
    ``stop()`` them (always call it, in a finally or a fixture teardown)."""

    def __init__(self, marker: str | Path):
        # Ray's unix sockets live under the temp dir: keep its path short (sockets max ~107 chars)
        self.temp_dir = tempfile.mkdtemp(prefix="smxray-", dir="/tmp")
        self.marker = str(marker)  # a path in the command line of every job driver of ours
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PATH": path,
                    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.pgids: list[int] = []
        self.logs: list[str] = []

    def _ray_start(self, *args: str) -> None:
        # a session of its own: every daemon this `ray start` leaves behind is in its process group
        proc = subprocess.Popen([str(BIN / "ray"), "start", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                                 f"--temp-dir={self.temp_dir}", "--object-store-memory=150000000",
                                 f"--dashboard-agent-listen-port={free_port()}", *args],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.pgids.append(proc.pid)
        out, _ = proc.communicate(timeout=120)
        self.logs.append(out)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{out[-3000:]}")

    def start(self) -> LocalCluster:
        self._ray_start("--head", f"--port={self.port}", "--include-dashboard=true",
                        f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
                        "--disable-usage-stats")
        self._ray_start(f"--address={self.address}", '--resources={"worker_node": 1}')
        return self

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def ray_json(self, *args: str) -> list[dict]:
        r = self.ray(*args, "--format", "json")
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)

    def nodes(self) -> list[dict]:
        return self.ray_json("list", "nodes", "--address", self.address, "--detail")

    def tasks(self) -> list[dict]:
        return self.ray_json("list", "tasks", "--address", self.address, "--detail", "--limit", "10000")

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: the daemons of both `ray start`s (their process
        groups), the job drivers (their command line names ``marker``), and their children."""
        found = {}
        for p in psutil.process_iter(["cmdline"]):
            try:
                mine = os.getpgid(p.pid) in self.pgids or any(
                    self.marker in a or self.temp_dir in a for a in (p.info["cmdline"] or []))
                if mine:
                    found[p.pid] = p
                    for c in p.children(recursive=True):
                        found[c.pid] = c
            except (psutil.Error, ProcessLookupError):
                pass
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self, grace: float = 3) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive + self.processes():  # and anything spawned meanwhile
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        deadline = time.time() + 10
        while self.processes() and time.time() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
