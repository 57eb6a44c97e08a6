"""The driver JVM's class-data-sharing archive: when it is offered, and what it is keyed by."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_jobs.common import jvm_cache
from spark_jobs.common.session import start_accelerations_enabled


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPARK_COLLAB_CACHE", str(tmp_path))
    monkeypatch.delenv("SPARK_COLLAB_JVM_CACHE", raising=False)
    return tmp_path


def _make_archive() -> Path:
    archive = jvm_cache.archive_path()
    assert archive is not None, "java and pyspark are installed here"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"not a real archive: only its presence matters here")
    return archive


def test_no_archive_no_options(cache: Path) -> None:
    props = {"spark.master": "local[2]"}
    assert jvm_cache.with_archive(props) == props


def test_archive_is_appended_to_the_users_java_options(cache: Path) -> None:
    archive = _make_archive()
    assert archive.is_relative_to(cache)
    out = jvm_cache.with_archive({"spark.driver.extraJavaOptions": "-Dfoo=1"})
    opts = out["spark.driver.extraJavaOptions"]
    assert opts.startswith("-Dfoo=1 ") and f"-XX:SharedArchiveFile={archive}" in opts


@pytest.mark.parametrize("key", jvm_cache.CLASSPATH_KEYS)
def test_not_offered_when_the_classpath_changes(cache: Path, key: str) -> None:
    _make_archive()
    props = {key: "/some/extra.jar"}
    assert jvm_cache.with_archive(props) == props


def test_switched_off_by_environment(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_archive()
    monkeypatch.setenv("SPARK_COLLAB_JVM_CACHE", "off")
    assert jvm_cache.with_archive({}) == {}


def test_a_new_pyspark_or_java_means_a_new_archive(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyspark

    first = jvm_cache.archive_path()
    monkeypatch.setattr(pyspark, "__version__", "0.0.0-other")
    assert jvm_cache.archive_path() != first
    monkeypatch.undo()
    monkeypatch.setenv("SPARK_COLLAB_CACHE", str(cache))
    fake_java = cache / "jdk" / "bin" / "java"
    fake_java.parent.mkdir(parents=True)
    fake_java.write_text("#!/bin/sh\n")
    monkeypatch.setenv("JAVA_HOME", str(cache / "jdk"))
    assert jvm_cache.archive_path() not in (None, first)


def test_session_started_by_us_maps_the_archive_when_built(spark) -> None:  # type: ignore[no-untyped-def]
    """When `make jvm-cache` has built the archive, the shared test session's JVM was started with it."""
    archive = jvm_cache.archive_path()
    if archive is None or not archive.is_file() or not jvm_cache.enabled():
        pytest.skip("no archive built here (make jvm-cache)")
    if not start_accelerations_enabled():
        pytest.skip("SPARK_COLLAB_PLAIN_START is set: sessions start without the archive")
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    args = [str(a) for a in runtime.getInputArguments()]
    assert f"-XX:SharedArchiveFile={archive}" in args
