"""Spark session start-up with and without the driver JVM's class-data-sharing archive.

Each sample is a fresh Python process that starts a local[2] session through
``spark_jobs.common.session.get_spark_session`` and runs one small job (``spark.range(1000).count()``);
the two peers alternate (first one rotating) and medians are printed with their ratio. The archive
is the one ``make jvm-cache`` builds (``python -m spark_jobs.common.jvm_cache``); the "without" peer
sets ``SPARK_COLLAB_JVM_CACHE=off``.

Usage:  .venv/bin/python bench/session.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spark_jobs.common import jvm_cache  # noqa: E402

CHILD = """
import time
from spark_jobs.common.session import get_spark_session
t0 = time.time()
spark = get_spark_session("bench-session", master="local[2]", conf={"spark.ui.enabled": "false",
                          "spark.ui.showConsoleProgress": "false"})
spark.range(1000).count()
print(time.time() - t0)
"""


def sample(archive_on: bool) -> float:
    env = dict(os.environ, SPARK_COLLAB_JVM_CACHE="on" if archive_on else "off")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    archive = jvm_cache.archive_path()
    if archive is None or not archive.is_file():
        print(
            "error: no archive; build it first: .venv/bin/python -m spark_jobs.common.jvm_cache",
            file=sys.stderr,
        )
        return 2
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.repeats):
        for on in (True, False) if i % 2 == 0 else (False, True):
            times[on].append(sample(on))
    with_, without = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"archive {archive} ({archive.stat().st_size / 1e6:.0f} MB); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        f"session + first job   without archive {without:.2f}s   with archive {with_:.2f}s   ratio {without / with_:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
