"""The properties a job's SparkSession is built with, and the checks made before any JVM starts.

Precedence, lowest first: ``conf/spark/local.conf`` (spark-defaults format), properties that
``spark-submit`` already put on the JVM, then ``--master`` and ``--conf key=value`` from the command
line. Driver only; pyspark is imported only to read what spark-submit set.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from spark_jobs.common.errors import JobInputError

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONF = PROJECT_ROOT / "conf" / "spark" / "local.conf"
LOG4J_CONF = PROJECT_ROOT / "conf" / "spark" / "log4j2.properties"
# spark-submit starts the driver JVM first and hands Python its gateway through this variable.
GATEWAY_PORT_ENV = "PYSPARK_GATEWAY_PORT"


def under_spark_submit() -> bool:
    """Whether spark-submit started this process (and with it the driver JVM, and chose the master)."""
    return GATEWAY_PORT_ENV in os.environ


def read_spark_defaults(path: Path) -> dict[str, str]:
    """Parse a spark-defaults.conf style file: ``key value`` (or ``key=value``) per line, ``#`` comments."""
    props: dict[str, str] = {}
    for line_no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1) if "=" not in line.split(None, 1)[0] else line.split("=", 1)
        if len(parts) != 2 or not parts[1].strip():
            raise JobInputError(f"{path}:{line_no}: expected 'key value', got {raw!r}")
        props[parts[0].strip()] = parts[1].strip()
    return props


def parse_conf_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """Turn ``--conf key=value`` arguments into a dict, rejecting anything without ``=``."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise JobInputError(
                f"--conf {pair!r}: expected key=value, e.g. --conf spark.sql.shuffle.partitions=8"
            )
        overrides[key.strip()] = value.strip()
    return overrides


def add_spark_arguments(parser: argparse.ArgumentParser) -> None:
    """The Spark options every job takes."""
    group = parser.add_argument_group("spark")
    group.add_argument(
        "--master",
        default=None,
        help="Spark master URL, e.g. local[2] or spark://host:7077; None: spark-submit's, else conf/spark/local.conf's",
    )
    group.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark property, repeatable",
    )
    group.add_argument(
        "--spark-defaults",
        default=str(DEFAULT_CONF),
        metavar="FILE",
        help="spark-defaults style file with base properties",
    )


def submitted_conf() -> dict[str, str]:
    """Properties spark-submit put on its (already running) JVM; empty when not under spark-submit."""
    if not under_spark_submit():
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def resolve_spark_conf(
    master: str | None,
    overrides: Mapping[str, str],
    defaults_file: str | Path | None = DEFAULT_CONF,
    submitted: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The properties a job's session is built with (without starting anything).

    ``submitted``: properties spark-submit already set (``--conf``, ``--properties-file``); they
    outrank the defaults file, as the precedence above says.
    """
    props: dict[str, str] = {}
    if defaults_file:
        path = Path(defaults_file)
        if path.exists():
            props.update(read_spark_defaults(path))
        elif Path(defaults_file) != DEFAULT_CONF:
            raise JobInputError(f"--spark-defaults {path}: file not found")
    for key in submitted or {}:
        props.pop(key, None)
    if under_spark_submit():
        # spark-submit already decided the master; our local default must not override it.
        props.pop("spark.master", None)
    if LOG4J_CONF.exists():
        opts = f"-Dlog4j2.configurationFile={LOG4J_CONF.as_uri()}"
        existing = props.get("spark.driver.extraJavaOptions", "")
        props["spark.driver.extraJavaOptions"] = f"{existing} {opts}".strip()
    props.update(overrides)
    if master:
        props["spark.master"] = master
    return props


# The master URLs Spark's own scheduler accepts (SparkContext.createTaskScheduler): anything else
# makes the JVM print a stack trace before Python sees the error, so it is refused before the JVM starts.
_MASTER_URL = re.compile(
    r"local(\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\])?"
    r"|local-cluster\[\s*[1-9]\d*\s*,\s*[1-9]\d*\s*,\s*[1-9]\d*\s*\]"
    r"|spark://.+|yarn|k8s://.+"
)


def check_master_url(master: str) -> None:
    """Refuse a master URL that Spark cannot parse, with the forms it can."""
    if not _MASTER_URL.fullmatch(master.strip()):
        raise JobInputError(
            f"--master {master}: not a Spark master URL; use local, local[N], local[*], spark://HOST:PORT, "
            "yarn or k8s://HOST:PORT (also checked: --conf spark.master and --spark-defaults)"
        )


def check_master_reachable(master: str, timeout_s: float = 3.0) -> None:
    """Fail fast when a standalone master (``spark://h1:p1[,h2:p2]``) accepts no connection.

    Without this, Spark's client retries registration for about a minute and then dies with a JVM
    stack trace ("All masters are unresponsive"); a closed port is answered in milliseconds.
    Other master URLs (local, yarn, k8s://) are left to Spark.
    """
    if not master.startswith("spark://"):
        return
    reasons = []
    for address in master[len("spark://") :].split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise JobInputError(f"--master {master}: expected spark://HOST:PORT, e.g. spark://127.0.0.1:7077")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError as exc:
            reasons.append(f"{address}: {exc.strerror or exc}")
    raise JobInputError(
        f"Spark master {master} is not reachable ({'; '.join(reasons)}): start the cluster "
        "(`make cluster-up` starts the local one) or pass --master local[*]"
    )
