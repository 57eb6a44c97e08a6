"""Our jobs on a live Spark standalone cluster (master + 2 workers on 127.0.0.1), and the faults they survive.

The module starts its own cluster (scripts/cluster.sh, free ports, a temporary run directory),
submits the jobs with ``spark-submit`` as docs/cluster.md shows, kills workers and ranks on
purpose, and checks results against plain-Python references. Teardown stops the cluster and fails
if any of its processes (daemons, executors, Python workers, torch ranks) is left.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cluster_fixtures import (
    REPO_ROOT,
    Cluster,
    free_port,
    listening_addresses,
    marked_pids,
    start_cluster,
    submit_command,
    submit_env,
    wait_for,
)

pytestmark = pytest.mark.cluster

# Upper bounds for a job on this 2-core machine; a hang fails the test instead of blocking CI.
JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("cluster")
    live = start_cluster(directory)
    try:
        yield live
    finally:
        live.down()
        left = marked_pids(directory)
        assert not left, f"cluster processes left after cluster.sh down: {left}"


@pytest.fixture
def two_workers(cluster: Cluster) -> Cluster:
    """The cluster with both workers alive (restarts one a previous test killed)."""
    cluster.up()
    assert wait_for(lambda: len(cluster.alive_workers()) == cluster.workers, 60)
    return cluster


def finish(proc: subprocess.Popen[str], timeout: float = JOB_TIMEOUT_S) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"job did not finish within {timeout}s:\n{err[-3000:]}")
    return proc.returncode, out, err


# --------------------------------------------------------------------------------------- lifecycle


def test_cluster_is_up_on_loopback_and_up_is_idempotent(two_workers: Cluster) -> None:
    cluster = two_workers
    status = cluster.status()
    assert status["status"] == "ALIVE"
    assert len(cluster.alive_workers()) == 2
    assert all(w["host"] == "127.0.0.1" for w in cluster.alive_workers())

    pids = {name: cluster.pid(name) for name in ("master", "worker-1", "worker-2")}
    again = cluster.up()
    assert again.count("already running") == 3
    assert {name: cluster.pid(name) for name in pids} == pids

    # Every socket any cluster process listens on is bound to the loopback address.
    addresses = listening_addresses(marked_pids(cluster.directory))
    assert f"127.0.0.1:{cluster.master_port}" in addresses
    assert {a.rsplit(":", 1)[0] for a in addresses} == {"127.0.0.1"}, addresses

    shown = cluster.script("status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(" ALIVE ") == 2


def test_dist_archive_holds_both_packages(cluster: Cluster) -> None:
    import zipfile

    names = zipfile.ZipFile(cluster.directory / "spark_collab.zip").namelist()
    expected = {
        p.relative_to(REPO_ROOT).as_posix()
        for d in ("spark_jobs", "training")
        for p in (REPO_ROOT / d).glob("*.py")
    }
    assert set(names) == expected
    # Importable from the archive alone, as on an executor with --py-files: -S drops site-packages
    # (and with it the editable install), cwd is outside the repository.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import spark_jobs.errors as e; "
        "assert e.__file__.startswith(sys.argv[1]), e.__file__"
    )
    zip_path = str(cluster.directory / "spark_collab.zip")
    subprocess.run([sys.executable, "-S", "-c", code, zip_path], check=True, cwd=cluster.directory)


# ------------------------------------------------------------------------------------------ faults


def test_unreachable_master_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a b a\n", encoding="utf-8")
    dead = f"spark://127.0.0.1:{free_port()}"  # nothing listens there
    out_dir = tmp_path / "out"
    command = submit_command(dead, None, "spark_jobs/wordcount.py", str(text), "--output", str(out_dir))
    start = time.monotonic()
    # Without the pre-flight check Spark retries for about a minute and ends in a JVM stack trace.
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=submit_env(), capture_output=True, text=True, timeout=50
    )
    elapsed = time.monotonic() - start
    # spark-submit merges the Python driver's stderr into its stdout.
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-2000:]
    assert dead in errors[0] and "not reachable" in errors[0] and "make cluster-up" in errors[0]
    assert "Traceback" not in output
    assert not out_dir.exists()
    print(f"unreachable master reported after {elapsed:.1f}s (spark-submit start included)")


def write_corpus(directory: Path, files: int, lines_per_file: int, seed: int = 7) -> Counter[str]:
    """Generated text with a Zipf-ish vocabulary; returns the plain-Python ``words`` count of it."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(3000)
    ]
    vocab += ["Straße", "naïve", "don't", "x_1", "42", "ÉTÉ"]
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    directory.mkdir(parents=True)
    expected: Counter[str] = Counter()
    for index in range(files):
        lines = []
        for _ in range(lines_per_file):
            words = rng.choices(vocab, weights, k=rng.randint(0, 14))
            line = rng.choice([" ", "  ", ", ", "\t", " -- "]).join(words)
            lines.append(line)
            expected.update(re.findall(r"\w+", line.lower()))
        (directory / f"part-{index:03d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expected


def read_counts(out_dir: Path) -> Counter[str]:
    import pyarrow.dataset as ds

    table = ds.dataset(str(out_dir), format="parquet").to_table()
    counts = dict(zip(table.column("word").to_pylist(), table.column("count").to_pylist(), strict=True))
    assert len(counts) == table.num_rows, "a word appears in more than one row"
    return Counter(counts)


def test_worker_killed_mid_wordcount_gives_exact_counts(two_workers: Cluster, tmp_path: Path) -> None:
    cluster = two_workers
    expected = write_corpus(tmp_path / "corpus", files=24, lines_per_file=20_000)
    out_dir = tmp_path / "counts"
    proc = cluster.spark_submit(
        "spark_jobs/wordcount.py",
        str(tmp_path / "corpus"),
        "--output",
        str(out_dir),
        # One task per file: many small tasks, spread over both workers.
        conf={"spark.sql.files.maxPartitionBytes": "1m", "spark.sql.files.openCostInBytes": "1m"},
    )
    # Kill worker 1 once it has finished a map task (its shuffle output dies with it) while the job runs.
    ran = wait_for(lambda: cluster.worker_has_run_task(1) or proc.poll() is not None, JOB_TIMEOUT_S)
    assert ran and proc.poll() is None, "the job ended before worker 1 finished a task; make the input larger"
    cluster.kill_worker(1)
    killed_at = time.monotonic()
    code, out, err = finish(proc)
    log = out + err
    assert code == 0, log[-3000:]
    assert "Lost executor" in log, f"the driver never noticed the dead worker:\n{log[-3000:]}"
    assert cluster.worker_has_run_task(2), "the surviving worker ran no task"
    assert read_counts(out_dir) == expected
    print(f"word count finished {time.monotonic() - killed_at:.1f}s after worker 1 was killed")
