"""A class-data-sharing archive for the driver JVM: Spark's classes parsed once, mapped ever after.

Starting a SparkSession here takes about 5 s, most of it the JVM loading and verifying some
twenty thousand classes from Spark's jars. Java's AppCDS (JDK 13+) can dump the classes a run
loaded into an archive (``-XX:ArchiveClassesAtExit``) that later JVMs map instead of parsing
(``-XX:SharedArchiveFile``). On a 2-core VM: session start plus a first job 6.6-7.5 s without,
3.9-4.2 s with (docs/benchmarks.md).

``python -m spark_jobs.common.jvm_cache`` (``make jvm-cache``, which ``make test`` runs) builds
the archive once; every session that spark-collab starts itself (not under spark-submit, which
has started its JVM already) then uses it. The archive is keyed by the java binary and the pyspark version and jars, so an upgrade
simply means a new archive; a JVM that cannot use an archive (another classpath through
``spark.jars``, say) carries on without it, silently, exactly as before. ``SPARK_COLLAB_JVM_CACHE=off``
turns it off; so does ``SPARK_COLLAB_PLAIN_START=1``, the switch of all the session's start-up
accelerations (:mod:`spark_jobs.common.session.lifecycle` applies the archive). ``SPARK_COLLAB_CACHE``
moves it (default ``~/.cache/spark-collab``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

JAVA_OPTIONS_KEY = "spark.driver.extraJavaOptions"
# Settings that change the driver's classpath: the archive would not match, so it is not offered.
CLASSPATH_KEYS = ("spark.jars", "spark.jars.packages", "spark.driver.extraClassPath")
# A failed match is not worth a warning on every start: the JVM just loads classes as usual.
_QUIET = "-Xlog:cds=off,cds+dynamic=off"

# What the archive run does: enough of Spark SQL, Arrow, Parquet and the RDD API that the classes
# a typical job loads are in it.
_WARM_UP = """
import sys, tempfile
from pyspark.sql import SparkSession, functions as F
spark = (SparkSession.builder.master("local[2]").appName("spark-collab jvm cache")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.sql.execution.arrow.pyspark.enabled", "true")
         .config("spark.driver.extraJavaOptions", sys.argv[1]).getOrCreate())
df = spark.range(2000).select("id", (F.col("id") % 7).alias("k"), F.array(F.lit(1.0), F.lit(2.0)).alias("a"))
df.groupBy("k").agg(F.count("*"), F.sum("id")).collect()
with tempfile.TemporaryDirectory() as d:
    df.write.parquet(d + "/p")
    spark.read.parquet(d + "/p").where("k = 1").toPandas()
    spark.sparkContext.textFile(d + "/p").count()
spark.sparkContext.parallelize(range(1000), 2).map(lambda x: (x % 5, 1)).reduceByKey(lambda a, b: a + b).collect()
spark.createDataFrame(df.limit(10).toPandas()).count()
spark.stop()
"""


def _java_binary() -> Path | None:
    """The java that Spark's launcher will run: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is None or not candidate.is_file():
        found = shutil.which("java")
        candidate = Path(found) if found else None
    return candidate.resolve() if candidate is not None else None


def _cache_dir() -> Path:
    root = os.environ.get("SPARK_COLLAB_CACHE") or Path.home() / ".cache" / "spark-collab"
    return Path(root) / "jvm"


def archive_path() -> Path | None:
    """Where the archive for this java and this pyspark lives (None when java or pyspark is missing)."""
    java = _java_binary()
    try:
        import pyspark
    except ImportError:
        return None
    if java is None:
        return None
    jars = Path(pyspark.__file__).parent / "jars"
    stat = java.stat()
    identity = "|".join(
        [
            str(java),
            str(stat.st_size),
            str(int(stat.st_mtime)),
            pyspark.__version__,
            ",".join(sorted(p.name for p in jars.glob("*.jar"))),
        ]
    )
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return _cache_dir() / f"driver-{key}.jsa"


def enabled() -> bool:
    return os.environ.get("SPARK_COLLAB_JVM_CACHE", "on").lower() not in ("0", "off", "false", "no")


def with_archive(props: Mapping[str, str]) -> dict[str, str]:
    """``props`` plus the options that map the archive, when there is one that can match."""
    out = dict(props)
    if not enabled() or any(out.get(k) for k in CLASSPATH_KEYS):
        return out
    archive = archive_path()
    if archive is None or not archive.is_file():
        return out
    ours = f"-XX:SharedArchiveFile={archive} {_QUIET}"
    user = out.get(JAVA_OPTIONS_KEY, "").strip()
    out[JAVA_OPTIONS_KEY] = f"{user} {ours}".strip()
    return out


def build(force: bool = False, timeout_s: float = 300) -> Path:
    """Run a short Spark job in a fresh Python whose JVM dumps its classes at exit; return the archive."""
    archive = archive_path()
    if archive is None:
        raise RuntimeError("no java on PATH (or JAVA_HOME) or no pyspark: nothing to build an archive for")
    if archive.is_file() and not force:
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    # The JVM writes the archive when it exits, i.e. when the warm-up Python exits; write it to a
    # temporary name in the same directory and rename, so a reader never maps a half-written file.
    fd, tmp_name = tempfile.mkstemp(prefix=".driver-", suffix=".jsa.tmp", dir=archive.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WARM_UP, f"-XX:ArchiveClassesAtExit={tmp} {_QUIET}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            tail = "\n".join((done.stderr or "").strip().splitlines()[-5:])
            raise RuntimeError(f"the archive run failed (exit {done.returncode}):\n{tail}")
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs.common.jvm_cache",
        description="Build the driver JVM's class-data-sharing archive (once per java and pyspark version).",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the archive exists")
    parser.add_argument("--path", action="store_true", help="print where the archive lives and exit")
    args = parser.parse_args(argv)
    if args.path:
        print(archive_path())
        return 0
    if not enabled():
        print("jvm cache: off (SPARK_COLLAB_JVM_CACHE)")
        return 0
    t0 = time.time()
    try:
        archive = build(force=args.force)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        # Only start-up speed is at stake: say so and let setup go on.
        print(f"jvm cache: not built ({exc}); sessions start without it", file=sys.stderr)
        return 0
    size_mb = archive.stat().st_size / 1e6
    print(f"jvm cache: {archive} ({size_mb:.0f} MB, {time.time() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
