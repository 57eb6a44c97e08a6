"""One long-lived Spark application that runs our jobs on request.

``spark-submit tests/cluster_driver.py REQUESTS RESULTS``

Every ``spark-submit`` pays for a driver JVM, a SparkContext and fresh executor JVMs on the workers
(20-40 s on a loaded 2-core machine). The cluster tests run about ten jobs, so they submit this
driver once and send it jobs: one JSON line per job appended to REQUESTS (spark-submit does not
pass stdin on to the Python driver), ``{"id": N, "argv": ["wordcount", ...]}``; ``{"stop": true}`` ends it.
It runs each through ``spark_jobs.__main__.main`` (the same code path as ``spark-collab``/
``spark-submit spark_jobs/<job>.py``; the jobs reuse this driver's session) and appends
``{"id": N, "rc": RC, "stderr": "...", "elapsed_s": S}`` to RESULTS.
"""

from __future__ import annotations

import io
import json
import sys
import time
import traceback
from pathlib import Path


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

    spark = get_spark_session("spark-collab cluster tests")
    with results.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"id": 0, "rc": 0, "ready": spark.sparkContext.applicationId}) + "\n")
        out.flush()
        for request in requests(requests_path):
            tee = _Tee(sys.stderr)
            real_stderr, sys.stderr = sys.stderr, tee
            start = time.monotonic()
            try:
                rc = spark_collab(request["argv"])
            except BaseException:  # a crash must come back as a result, not kill the driver
                traceback.print_exc()
                rc = 99
            finally:
                sys.stderr = real_stderr
            result = {"id": request["id"], "rc": rc, "stderr": tee.copy.getvalue()}
            result["elapsed_s"] = time.monotonic() - start
            out.write(json.dumps(result) + "\n")
            out.flush()
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
