"""Session life cycle of the jobs: real sessions in a fresh process each (the test session must not
be touched), and the off switch of the start-up accelerations, with the start itself faked."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from spark_jobs.common import jvm_cache
from spark_jobs.common.session import PLAIN_START_ENV, job_session_in_background, lifecycle

SCRIPT = r"""
import argparse, sys
from spark_jobs.common.session import add_spark_arguments, job_session_in_background, session_running

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
assert not session_running(), "a session abandoned by a failed block was left running"

# 2. The block uses the session: it works, and it is stopped at the end.
with job_session_in_background("t", args) as wait_for_spark:
    assert wait_for_spark().range(5).count() == 5
assert not session_running(), "the session we started was not stopped"

# 3. A session the caller already had is used and left running.
from pyspark.sql import SparkSession
mine = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
with job_session_in_background("t", args) as wait_for_spark:
    assert wait_for_spark().range(3).count() == 3
assert session_running() and mine.range(2).count() == 2
mine.stop()
print("OK")
"""


@pytest.mark.parametrize("plain_start", ["", "1"], ids=["background", "plain"])
def test_background_session_is_stopped_after_early_failure_and_success(plain_start: str) -> None:
    env = {**os.environ, PLAIN_START_ENV: plain_start}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
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


def test_plain_start_switches_off_the_class_data_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARK_COLLAB_CACHE", str(tmp_path))
    monkeypatch.delenv("SPARK_COLLAB_JVM_CACHE", raising=False)
    monkeypatch.delenv(PLAIN_START_ENV, raising=False)
    archive = jvm_cache.archive_path()
    assert archive is not None, "java and pyspark are installed here"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"not a real archive: only its presence matters here")
    accelerated = lifecycle.with_start_accelerations({"spark.master": "local[1]"})
    assert f"-XX:SharedArchiveFile={archive}" in accelerated[jvm_cache.JAVA_OPTIONS_KEY]
    monkeypatch.setenv(PLAIN_START_ENV, "1")
    assert lifecycle.with_start_accelerations({"spark.master": "local[1]"}) == {"spark.master": "local[1]"}


class _FakeStarts:
    """Stands in for the session start and stop: records the thread that started and what was stopped."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.session = object()
        self.started_in: list[str] = []
        self.stopped: list[tuple[object, bool]] = []
        monkeypatch.setattr(lifecycle, "session_running", lambda: False)
        monkeypatch.setattr(lifecycle, "session_from_args", self.start)
        monkeypatch.setattr(lifecycle, "stop_session", self.stop)

    def start(self, app_name: str, args: argparse.Namespace) -> object:
        self.started_in.append(threading.current_thread().name)
        return self.session

    def stop(self, spark: object, quiet: bool = False) -> None:
        self.stopped.append((spark, quiet))


def test_session_starts_in_the_background_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLAIN_START_ENV, raising=False)
    fake = _FakeStarts(monkeypatch)
    with job_session_in_background("t", argparse.Namespace()):
        pass
    assert fake.started_in == ["spark-session-start"]
    assert fake.stopped == [(fake.session, False)]


def test_plain_start_switches_off_the_background_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLAIN_START_ENV, "1")
    fake = _FakeStarts(monkeypatch)
    with job_session_in_background("t", argparse.Namespace()) as wait_for_spark:
        assert not any(t.name == "spark-session-start" for t in threading.enumerate())
        assert fake.started_in == []
        assert wait_for_spark() is fake.session and wait_for_spark() is fake.session
    assert fake.started_in == [threading.current_thread().name]
    assert fake.stopped == [(fake.session, False)]

    # A block that fails before it asks for the session starts none.
    fake.started_in.clear()
    fake.stopped.clear()
    with pytest.raises(ValueError), job_session_in_background("t", argparse.Namespace()):
        raise ValueError("bad config")
    assert fake.started_in == [] and fake.stopped == []
