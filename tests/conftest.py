"""Shared fixtures: one SparkSession for the whole run (start-up costs 10-15 s here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Executors must use this interpreter (it has rjieba, pyarrow, torch).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

TEST_SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
}


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.common.session import get_spark_session

    session = get_spark_session("spark-collab-tests", master="local[2]", conf=TEST_SPARK_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` when present; tests using it skip elsewhere."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


def spark_args(*extra: str) -> list[str]:
    """Spark options for in-process job runs in tests (the session fixture is reused)."""
    args = ["--master", "local[2]"]
    for key, value in TEST_SPARK_CONF.items():
        args += ["--conf", f"{key}={value}"]
    return [*args, *extra]


@pytest.fixture(scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """One intra-op thread for a whole module, as torchrun gives each rank: tiny models gain nothing
    from a second thread, two threads spinning for each other on a busy two-core machine cost
    several times the work, and a module's reference run must use the same count as the runs
    compared with it, or float sums differ in the last bits. torch is imported here only."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
