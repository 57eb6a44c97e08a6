"""Session life cycle of the jobs, in a fresh process each (the test session must not be touched)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = r"""
import argparse, sys
from spark_jobs.session import _session_running, add_spark_arguments, job_session_in_background

parser = argparse.ArgumentParser()
add_spark_arguments(parser)
args = parser.parse_args(["--master", "local[1]", "--conf", "spark.ui.enabled=false"])

# 1. The block fails before it asks for the session: the error comes at once, and the session
#    that was starting is stopped once it is up, not left running.
try:
    with job_session_in_background("t", args):
        raise ValueError("bad config")
except ValueError:
    pass
assert not _session_running(), "a session abandoned by a failed block was left running"

# 2. The block uses the session: it works, and it is stopped at the end.
with job_session_in_background("t", args) as wait_for_spark:
    assert wait_for_spark().range(5).count() == 5
assert not _session_running(), "the session we started was not stopped"

# 3. A session the caller already had is used and left running.
from pyspark.sql import SparkSession
mine = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
with job_session_in_background("t", args) as wait_for_spark:
    assert wait_for_spark().range(3).count() == 3
assert _session_running() and mine.range(2).count() == 2
mine.stop()
print("OK")
"""


def test_background_session_is_stopped_after_early_failure_and_success() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


def test_train_against_an_unreachable_master_is_one_error_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The session starts in the background while the config loads; its error still comes out as
    the job's one-line error with exit 2, and nothing is written."""
    import socket

    from train_shards import blob_shards

    shards = blob_shards(tmp_path / "shards")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"spark://127.0.0.1:{sock.getsockname()[1]}"
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable, "-m", "spark_jobs", "train",
            "--config", str(REPO_ROOT / "conf" / "train" / "mlp784.toml"),
            "--set", f"data.shards='{shards}'", "--set", f"run.dir='{run_dir}'",
            "--master", dead,
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and dead in errors[0] and "not reachable" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (run_dir / "result.json").exists()


def test_overwrite_removes_nothing_when_the_config_is_invalid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Paths are checked before Spark starts, the rest of the config while it starts: an earlier
    run is removed for --overwrite only once everything is valid."""
    from train_shards import blob_shards

    shards = blob_shards(tmp_path / "shards")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "result.json").write_text("{}")
    done = subprocess.run(
        [
            sys.executable, "-m", "spark_jobs", "train", "--overwrite",
            "--config", str(REPO_ROOT / "conf" / "train" / "mlp784.toml"),
            "--set", f"data.shards='{shards}'", "--set", f"run.dir='{run_dir}'",
            "--set", "model.name='no_such_model'", "--master", "local[1]",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.name" in done.stderr and "no_such_model" in done.stderr
    assert (run_dir / "result.json").read_text() == "{}"
