"""A live Spark standalone cluster for tests: scripts/cluster.sh on free ports in a temporary run dir.

The tests drive it like a user would (``spark-submit`` against ``spark://127.0.0.1:PORT``) and
break it on purpose (SIGKILL a worker). Teardown stops it and checks that no process of it is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from job_driver import JobDriver

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO_ROOT / "scripts" / "cluster.sh"
MARKER = "SPARK_COLLAB_DAEMON"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def marked_pids(cluster_dir: Path, name: str = "") -> list[int]:
    """Processes carrying the cluster's marker (daemons, executors, Python workers, torch ranks)."""
    wanted = f"{MARKER}={cluster_dir}/{name}".encode()
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(var == wanted or (not name and var.startswith(wanted)) for var in env):
            pids.append(int(entry.name))
    return sorted(pids)


def listening_addresses(pids: list[int]) -> set[str]:
    """Local addresses of the TCP sockets these processes listen on (from /proc/net/tcp{,6})."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = cols[1].split(":")
            found.add(f"{_decode_address(addr_hex, width)}:{int(port_hex, 16)}")
    return found


def _decode_address(addr_hex: str, width: int) -> str:
    raw = bytes.fromhex(addr_hex)
    # /proc/net/tcp stores each 32-bit word in host (little-endian) order.
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    data = b"".join(words)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, data)
    text = socket.inet_ntop(socket.AF_INET6, data)
    return text.removeprefix("::ffff:")


@dataclass
class Cluster:
    directory: Path
    master_port: int
    webui_port: int
    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(CLUSTER_SH), *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> str:
        proc = self.script("up")
        if proc.returncode != 0:
            raise RuntimeError(f"cluster.sh up failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def down(self) -> str:
        proc = self.script("down")
        if proc.returncode != 0:
            raise RuntimeError(f"cluster.sh down failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/", timeout=5) as response:
            return json.load(response)

    def alive_workers(self) -> list[dict]:
        return [w for w in self.status()["workers"] if w["state"] == "ALIVE"]

    def pid(self, name: str) -> int:
        return int((self.directory / "pids" / f"{name}.pid").read_text())

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index`` with its executors, as if its machine had died."""
        os.killpg(self.pid(f"worker-{index}"), signal.SIGKILL)
        for pid in marked_pids(self.directory, f"worker-{index}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def executor_logs(self, index: int) -> list[Path]:
        """stderr files of the executors worker ``index`` ran (work/worker-i/app-*/N/stderr)."""
        return sorted((self.directory / "work" / f"worker-{index}").glob("app-*/*/stderr"))

    def finished_tasks(self, index: int) -> int:
        """Tasks that executors on worker ``index`` reported finished, over all their logs so far."""
        count = 0
        for log in self.executor_logs(index):
            with contextlib.suppress(OSError):
                count += log.read_text(errors="replace").count("Finished task")
        return count

    def spark_submit(
        self, script: str, *args: str, conf: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start ``spark-submit SCRIPT ARGS`` against this cluster (client mode); returns the process."""
        command = submit_command(
            self.master_url, self.directory / "spark_collab.zip", script, *args, conf=conf
        )
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=submit_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def submit_command(
    master: str, py_files: Path | None, script: str, *args: str, conf: dict[str, str] | None = None
) -> list[str]:
    command = [str(spark_home() / "bin" / "spark-submit"), "--master", master]
    for key, value in {**SUBMIT_CONF, **(conf or {})}.items():
        command += ["--conf", f"{key}={value}"]
    if py_files is not None:
        command += ["--py-files", str(py_files)]
    return [*command, script, *args]


def submit_env() -> dict[str, str]:
    """The driver's environment: executors run this interpreter, the driver binds to loopback."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_DRIVER_PYTHON", None)
    return env


# What every test application asks of the cluster: one 1-core executor per worker, small shuffles.
SUBMIT_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.executor.cores": "1",
    "spark.executor.memory": "512m",
    "spark.cores.max": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.sql.adaptive.enabled": "false",
}


def new_cluster(directory: Path, workers: int = 2, **env: str) -> Cluster:
    """A cluster on free ports, not started; ``env``: extra variables for scripts/cluster.sh."""
    cluster = Cluster(directory=directory, master_port=free_port(), webui_port=free_port(), workers=workers)
    cluster.env = {
        **os.environ,
        "CLUSTER_DIR": str(directory),
        "CLUSTER_MASTER_PORT": str(cluster.master_port),
        "CLUSTER_WEBUI_PORT": str(cluster.webui_port),
        "CLUSTER_WORKER_WEBUI_PORT": "0",
        "CLUSTER_WORKERS": str(workers),
        "CLUSTER_WORKER_CORES": "1",
        "CLUSTER_WORKER_MEMORY": "1g",
        "CLUSTER_STOP_GRACE": "3",
        "PYTHON": sys.executable,
        **env,
    }
    return cluster


def start_cluster(directory: Path, workers: int = 2) -> Cluster:
    cluster = new_cluster(directory, workers)
    # What `make dist` builds, shipped the way docs/cluster.md says.
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "make_dist.py"),
            "--output",
            str(directory / "spark_collab.zip"),
        ],
        check=True,
        capture_output=True,
    )
    cluster.up()
    return cluster


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def cluster_driver(cluster: Cluster, requests: Path, results: Path) -> JobDriver:
    """``tests/job_driver.py`` spark-submitted to ``cluster``: one application that runs jobs on request."""
    command = submit_command(
        cluster.master_url, cluster.directory / "spark_collab.zip", "tests/job_driver.py"
    )
    return JobDriver(command, requests, results, cwd=REPO_ROOT, env=submit_env())
