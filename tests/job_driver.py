"""One long-lived process that runs our jobs on request, and its handle for tests.

``spark-submit tests/job_driver.py REQUESTS RESULTS`` (a cluster's driver application) or
``python tests/job_driver.py REQUESTS RESULTS`` (starts its own local session, in its working
directory, as ``spark-collab`` would there).

Every fresh job process pays for a Python start-up with torch imported, a driver JVM and a
SparkContext (on a cluster also fresh executor JVMs on the workers: 20-40 s on a loaded 2-core
machine). Tests that run many jobs start this driver once and send it jobs: one JSON line per job
appended to REQUESTS (spark-submit does not pass stdin on to the Python driver),
``{"id": N, "argv": ["wordcount", ...]}``; ``{"stop": true}`` ends it. It runs each through
``spark_jobs.__main__.main`` (the same code path as ``spark-collab``/``spark-submit
spark_jobs/<job>.py``; the jobs reuse this driver's session) and appends
``{"id": N, "rc": RC, "stderr": "...", "elapsed_s": S}`` to RESULTS. :class:`JobDriver` starts it
and talks to it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

JOB_END = "job_driver: job {} done"


class _Tee(io.TextIOBase):
    """Write to the real stream and keep a copy (the job's ``error:`` line is what tests check)."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def requests(path: Path):  # type: ignore[no-untyped-def]
    """Follow the requests file: yield each JSON line once it is complete."""
    offset = 0
    while True:
        data = path.read_bytes()[offset:] if path.exists() else b""
        end = data.rfind(b"\n")
        if end < 0:
            time.sleep(0.1)
            continue
        offset += end + 1
        for line in data[: end + 1].decode("utf-8").splitlines():
            request = json.loads(line)
            if request.get("stop"):
                return
            yield request


def main() -> int:
    requests_path, results = Path(sys.argv[1]), Path(sys.argv[2])
    from spark_jobs.__main__ import main as spark_collab
    from spark_jobs.common.session import get_spark_session

    spark = get_spark_session("spark-collab test jobs")
    with results.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"id": 0, "rc": 0, "ready": spark.sparkContext.applicationId}) + "\n")
        out.flush()
        for request in requests(requests_path):
            tee = _Tee(sys.stderr)
            real_stderr, sys.stderr = sys.stderr, tee
            start = time.monotonic()
            try:
                rc = spark_collab(request["argv"])
            except SystemExit as stop:  # argparse's own exits (--help, a usage error)
                rc = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            except BaseException:  # a crash must come back as a result, not kill the driver
                traceback.print_exc()
                rc = 99
            finally:
                sys.stderr = real_stderr
            result = {"id": request["id"], "rc": rc, "stderr": tee.copy.getvalue()}
            result["elapsed_s"] = time.monotonic() - start
            # After everything the job printed (its ranks' output included): where it ends.
            print(JOB_END.format(request["id"]), flush=True)
            out.write(json.dumps(result) + "\n")
            out.flush()
    spark.stop()
    return 0


class JobDriver:
    """A started ``tests/job_driver.py``: send it ``spark-collab`` arguments, wait for the result."""

    def __init__(
        self,
        command: Sequence[str],
        requests: Path,
        results: Path,
        cwd: Path,
        env: Mapping[str, str],
        ready_timeout: float = 180,
    ) -> None:
        """``command``: how to start this file (``spark-submit ... tests/job_driver.py`` or
        ``python tests/job_driver.py``), without REQUESTS and RESULTS."""
        self.requests = requests
        self.results = results
        self.output: list[str] = []
        self._next_id = 1
        # Its own session, so teardown can stop the driver JVM and its Python (and torchrun) children.
        self.proc = subprocess.Popen(
            [*command, str(requests), str(results)],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        self.wait(0, timeout=ready_timeout)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def start(self, *argv: str) -> int:
        """Send a job (``spark-collab`` arguments); returns its id for :meth:`wait`."""
        job_id, self._next_id = self._next_id, self._next_id + 1
        self._send({"id": job_id, "argv": list(argv)})
        return job_id

    def _send(self, request: dict) -> None:
        with self.requests.open("a", encoding="utf-8") as out:
            out.write(json.dumps(request) + "\n")

    def result(self, job_id: int) -> dict | None:
        if not self.results.exists():
            return None
        for line in self.results.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if entry["id"] == job_id:
                return entry
        return None

    def wait(self, job_id: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.result(job_id)
            if entry is not None:
                return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"driver exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} did not finish within {timeout}s:\n{self.tail()}")

    def run(self, *argv: str, timeout: float = 240) -> dict:
        return self.wait(self.start(*argv), timeout)

    def printed_by(self, job_id: int, timeout: float = 30) -> str:
        """What the driver process printed while job ``job_id`` ran (its torch ranks' output too):
        the lines between the previous job's end mark and this one's."""
        end, begin = JOB_END.format(job_id) + "\n", JOB_END.format(job_id - 1) + "\n"
        deadline = time.monotonic() + timeout
        while end not in self.output and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = list(self.output)
        last = lines.index(end) if end in lines else len(lines)
        first = lines.index(begin) + 1 if begin in lines else 0
        return "".join(lines[first:last])

    def tail(self, chars: int = 4000) -> str:
        return "".join(self.output)[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._send({"stop": True})  # the driver leaves its loop and stops Spark
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        # Killed children that are not ours to reap (a JVM started by the Python driver) take a
        # moment to be gone.
        deadline = time.monotonic() + 10
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)

    def leftovers(self) -> list[int]:
        """Live processes of the driver's session (driver JVM, Python driver, local-mode torch ranks)."""
        alive = []
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                # fields[0] is the state, [3] the session id; zombies are already dead.
                if int(fields[3]) == self.proc.pid and fields[0] != "Z":
                    alive.append(int(entry.name))
        return alive


if __name__ == "__main__":
    sys.exit(main())
