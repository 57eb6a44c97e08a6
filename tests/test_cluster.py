"""Our jobs on a live Spark standalone cluster (master + 2 workers on 127.0.0.1), and the faults they survive.

The module starts its own cluster (scripts/cluster.sh on free ports, a temporary run directory),
builds the --py-files archive (scripts/make_dist.py) and spark-submits one driver application
(tests/job_driver.py) that runs the jobs through the same entry point as ``spark-collab``;
one application instead of one per job saves a driver and two executor JVM start-ups per job.
The tests kill workers and ranks on purpose and check results against plain-Python references
or undisturbed runs; automatic restarts (a rank SIGKILLed in two attempts in a row) heal a run to
the undisturbed one bit for bit, or fail naming both kills. Teardown stops the cluster and fails if any of its processes (daemons,
executors, Python workers, torch ranks) is left.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from cluster_fixtures import (
    REPO_ROOT,
    Cluster,
    cluster_driver,
    free_port,
    listening_addresses,
    marked_pids,
    new_cluster,
    start_cluster,
    submit_command,
    submit_env,
    wait_for,
)
from job_driver import JobDriver

pytestmark = pytest.mark.cluster

# Upper bound for one job on this 2-core machine; a hang fails the test instead of blocking CI.
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


def test_up_says_at_once_that_the_master_exited(tmp_path: Path) -> None:
    # Daemons whose JVM cannot start (a heap too small to boot) exit at once. `up` must say so
    # without waiting out the registration timeout, show their logs, and leave nothing running.
    broken = new_cluster(tmp_path, SPARK_DAEMON_MEMORY="1k", CLUSTER_START_TIMEOUT="120")
    started = time.monotonic()
    proc = broken.script("up")
    assert proc.returncode == 1
    assert time.monotonic() - started < 60
    assert f"the master (pid {broken.pid('master')}) exited before 2 workers registered" in proc.stderr
    assert "Too small maximum heap" in proc.stderr  # the master's log, shown
    broken.down()
    assert not marked_pids(tmp_path)


@pytest.fixture(scope="module")
def driver(cluster: Cluster):
    app = cluster_driver(
        cluster, cluster.directory / "driver-requests.jsonl", cluster.directory / "driver-results.jsonl"
    )
    try:
        yield app
    finally:
        app.stop()
        assert not app.leftovers(), f"driver processes left: {app.leftovers()}"


@pytest.fixture
def two_workers(cluster: Cluster) -> Cluster:
    """The cluster with both workers alive (restarts one that a previous test killed)."""
    cluster.up()
    assert wait_for(lambda: len(cluster.alive_workers()) == cluster.workers, 60)
    return cluster


def run_ok(driver: JobDriver, *argv: str) -> dict:
    result = driver.run(*argv, timeout=JOB_TIMEOUT_S)
    assert result["rc"] == 0, f"{argv[0]} failed: {result['stderr'][-3000:]}\n{driver.tail()}"
    return result


def executors_on_all_workers(cluster: Cluster) -> bool:
    """The driver application holds a core (its executor) on every worker."""
    apps = cluster.status().get("activeapps", [])
    return len(apps) == 1 and apps[0]["cores"] == cluster.workers


def kill_worker_mid_job(cluster: Cluster, driver: JobDriver, *argv: str) -> dict:
    """Start a job, SIGKILL worker 1 once it has finished a task of it, return the job's result."""
    # A restarted worker needs a few seconds to start the application's executor.
    assert wait_for(lambda: executors_on_all_workers(cluster), 90), cluster.status()
    baseline = cluster.finished_tasks(1)
    job = driver.start(*argv)
    started = wait_for(
        lambda: cluster.finished_tasks(1) > baseline or driver.result(job) is not None, JOB_TIMEOUT_S
    )
    assert started and driver.result(job) is None, "the job ended before worker 1 finished a task of it"
    cluster.kill_worker(1)
    return driver.wait(job, JOB_TIMEOUT_S)


# --------------------------------------------------------------------------------------- lifecycle


def test_cluster_is_up_on_loopback_and_up_is_idempotent(two_workers: Cluster) -> None:
    cluster = two_workers
    assert cluster.status()["status"] == "ALIVE"
    workers = cluster.alive_workers()
    assert len(workers) == 2 and all(w["host"] == "127.0.0.1" for w in workers)

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


def test_dist_archive_holds_every_package(cluster: Cluster) -> None:
    import sys
    import zipfile

    zip_path = cluster.directory / "spark_collab.zip"
    names = zipfile.ZipFile(zip_path).namelist()
    expected = {
        p.relative_to(REPO_ROOT).as_posix()
        for package in ("contracts", "spark_jobs", "training")
        for p in (REPO_ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert set(names) == expected
    # Importable from the archive alone, as on an executor with --py-files: -S drops site-packages
    # (and with it the editable install), and the working directory is outside the repository.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import spark_jobs.common.errors as e; "
        "import contracts.manifest as m; "
        "assert e.__file__.startswith(sys.argv[1]) and m.__file__.startswith(sys.argv[1]), e.__file__"
    )
    subprocess.run([sys.executable, "-S", "-c", code, str(zip_path)], check=True, cwd=cluster.directory)


# ------------------------------------------------------------------------------------------ faults


def test_unreachable_master_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a b a\n", encoding="utf-8")
    dead = f"spark://127.0.0.1:{free_port()}"  # nothing listens there
    out_dir = tmp_path / "out"
    command = submit_command(
        dead, None, "spark_jobs/wordcount/__main__.py", str(text), "--output", str(out_dir)
    )
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
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(3000)]
    vocab += ["Straße", "naïve", "don't", "x_1", "42", "ÉTÉ", "Ünïcode"]
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    separators = [" ", "  ", ", ", "\t", " -- "]
    directory.mkdir(parents=True)
    expected: Counter[str] = Counter()
    for index in range(files):
        lengths = rng.choices(range(17), k=lines_per_file)
        words = rng.choices(vocab, weights, k=sum(lengths))
        lines, start = [], 0
        for n in lengths:
            lines.append(rng.choice(separators).join(words[start : start + n]))
            start += n
        text = "\n".join(lines) + "\n"
        # The reference: re.findall(r"\w+", line.lower()) over every line, as the tokenizer is specified.
        for line in text.splitlines():
            expected.update(re.findall(r"\w+", line.lower()))
        (directory / f"part-{index:03d}.txt").write_text(text, encoding="utf-8")
    return expected


def read_counts(out_dir: Path) -> Counter[str]:
    import pyarrow.dataset as ds

    table = ds.dataset(str(out_dir), format="parquet").to_table()
    counts = dict(zip(table.column("word").to_pylist(), table.column("count").to_pylist(), strict=True))
    assert len(counts) == table.num_rows, "a word appears in more than one row"
    return Counter(counts)


def test_worker_killed_mid_wordcount_gives_exact_counts(
    two_workers: Cluster, driver: JobDriver, tmp_path: Path
) -> None:
    cluster = two_workers
    expected = write_corpus(tmp_path / "corpus", files=8, lines_per_file=3000)
    out_dir = tmp_path / "counts"
    log_start = len(driver.output)
    # One task per file: many small map tasks, spread over both workers. Worker 1 dies after
    # finishing one, so its shuffle output is lost too and must be recomputed.
    result = kill_worker_mid_job(
        cluster,
        driver,
        "wordcount",
        str(tmp_path / "corpus"),
        "--output",
        str(out_dir),
        "--conf",
        "spark.sql.files.maxPartitionBytes=65536",
        "--conf",
        "spark.sql.files.openCostInBytes=65536",
    )
    assert result["rc"] == 0, result["stderr"][-3000:]
    driver_log = "".join(driver.output[log_start:])
    assert "Lost executor" in driver_log, f"the driver never noticed the dead worker:\n{driver.tail()}"
    assert read_counts(out_dir) == expected
    print(f"word count with a worker killed mid-job took {result['elapsed_s']:.1f}s")


# ---------------------------------------------------------------------------------------- sharding

SHARD_ARGS = ("shard", "--source", "digits", "--shards", "2")


@pytest.fixture(scope="module")
def digit_shards(cluster: Cluster, driver: JobDriver, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An undisturbed shard run on the cluster: the reference manifest, and training's input."""
    cluster.up()
    out = tmp_path_factory.mktemp("reference") / "digits"
    run_ok(driver, *SHARD_ARGS, "--output", str(out))
    return out


def load_manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text(encoding="utf-8"))


def assert_files_match_manifest(directory: Path) -> None:
    """Every file the manifest lists is there with its recorded checksum, and nothing else is."""
    listed = set()
    for split in load_manifest(directory)["splits"].values():
        for shard_info in split["shards"]:
            for entry in shard_info["files"]:
                data = (directory / entry["path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
                listed.add(entry["path"])
    assert {p.relative_to(directory).as_posix() for p in directory.rglob("*.parquet")} == listed


def test_worker_killed_mid_sharding_leaves_nothing_half_done(
    two_workers: Cluster, driver: JobDriver, digit_shards: Path, tmp_path: Path
) -> None:
    cluster = two_workers
    out_dir = tmp_path / "shards"
    result = kill_worker_mid_job(cluster, driver, *SHARD_ARGS, "--output", str(out_dir))
    print(f"sharding with a worker killed mid-job: rc={result['rc']} after {result['elapsed_s']:.1f}s")
    assert not list(tmp_path.glob(".shards.*")), "staging directory left behind"
    if result["rc"] != 0:
        # A failed run leaves nothing that looks complete; rerunning (both workers back) repairs it.
        assert not out_dir.exists(), result["stderr"][-3000:]
        cluster.up()
        run_ok(driver, *SHARD_ARGS, "--output", str(out_dir))
    # Spark re-ran the lost work on worker 2 (or the rerun did it): exactly the undisturbed output.
    assert load_manifest(out_dir) == load_manifest(digit_shards)
    assert_files_match_manifest(out_dir)


# ---------------------------------------------------------------------------------------- training

EPOCHS = 2
# 1438 train rows / 2 ranks at 32 per rank: 22 steps per epoch, so step 30 is in the middle of epoch 2.
FAIL_AT_STEP = 30


def train_args(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    sets = [
        f"data.shards={shards}",
        f"run.dir={run_dir}",
        "model.name=mlp",
        f"train.epochs={EPOCHS}",
        "train.batch_size=64",
        "launch.num_processes=2",
        "launch.timeout_s=180",
        "run.plots=false",
        *extra,
    ]
    args = ["train", "--config", "conf/train/mlp784.toml"]
    for item in sets:
        args += ["--set", item]
    return args


def model_state(run_dir: Path) -> dict:
    from training.checkpoint import load_model_state

    return load_model_state(run_dir / "checkpoint.pt")


def assert_same_state(a: dict, b: dict, atol: float) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def read_result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text(encoding="utf-8"))


def assert_ends_as_undisturbed(run_dir: Path, undisturbed_dir: Path) -> dict:
    """The run ended exactly as the undisturbed one did: steps, weights bit for bit, losses and
    accuracies. Returns its result."""
    result, undisturbed = read_result(run_dir), read_result(undisturbed_dir)
    assert result["steps"] == undisturbed["steps"]
    assert_same_state(model_state(run_dir), model_state(undisturbed_dir), atol=0)
    for key in ("train_loss", "val_accuracy", "test_accuracy"):
        assert result[key] == undisturbed[key], key
    return result


@pytest.fixture(scope="module")
def distributed_run(
    cluster: Cluster, driver: JobDriver, digit_shards: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Undisturbed training on the cluster: TorchDistributor distributed mode, one barrier task per rank."""
    cluster.up()
    assert wait_for(lambda: len(cluster.alive_workers()) == cluster.workers, 60)
    before = [cluster.finished_tasks(i) for i in (1, 2)]
    run_dir = tmp_path_factory.mktemp("train") / "distributed"
    run_ok(driver, *train_args(digit_shards, run_dir, "launch.local_mode=false"))
    # One rank per worker: executors on both workers finished a (barrier) task of this launch.
    assert all(cluster.finished_tasks(i) > before[i - 1] for i in (1, 2))
    return run_dir


@pytest.mark.distributed
def test_distributed_mode_on_the_cluster_matches_local_mode(
    driver: JobDriver, distributed_run: Path, digit_shards: Path, tmp_path: Path
) -> None:
    local_dir = tmp_path / "local"
    run_ok(driver, *train_args(digit_shards, local_dir, "launch.local_mode=true"))
    dist_result, local_result = read_result(distributed_run), read_result(local_dir)
    assert dist_result["world_size"] == local_result["world_size"] == 2
    assert dist_result["steps"] == local_result["steps"] == EPOCHS * 22
    # Same data, seed and collective order. Executors may give torch another thread count than
    # torchrun's ranks, so float32 sums may round differently: compare to 1e-5, not bit for bit.
    assert_same_state(model_state(distributed_run), model_state(local_dir), atol=1e-5)
    assert dist_result["test_accuracy"] == pytest.approx(local_result["test_accuracy"], abs=0.01)


@pytest.mark.distributed
def test_rank_killed_mid_epoch_then_resume_matches_undisturbed(
    two_workers: Cluster, driver: JobDriver, distributed_run: Path, digit_shards: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "faulted"
    # fault.mode=exit: rank 1 dies with os._exit(1) at step 30, no traceback (like a SIGKILL or OOM kill).
    fault = ("fault.fail_rank=1", f"fault.fail_at_step={FAIL_AT_STEP}", "fault.mode=exit")
    result = driver.run(
        *train_args(digit_shards, run_dir, "launch.local_mode=false", *fault), timeout=JOB_TIMEOUT_S
    )
    assert result["rc"] != 0, driver.tail()
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert errors and "rank 1" in errors[0], result["stderr"][-3000:]
    print(f"rank 1 failure reported after {result['elapsed_s']:.1f}s: {errors[0][:200]}")
    # Epoch 1 finished and was checkpointed before rank 1 died in epoch 2.
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1]

    run_ok(driver, *train_args(digit_shards, run_dir, "launch.local_mode=false", "run.resume=true"))
    # Resumed from the epoch-1 checkpoint (model, optimizer, scheduler, RNG) == never interrupted.
    resumed = assert_ends_as_undisturbed(run_dir, distributed_run)
    assert resumed["resumed_from_epoch"] == 1


@pytest.mark.distributed
def test_a_shipped_model_predicts_as_the_shared_one_on_the_cluster(
    driver: JobDriver, distributed_run: Path, digit_shards: Path, tmp_path: Path
) -> None:
    """--ship-model under a cluster master: the files travel as one archive (a local directory is
    refused there) and the executors predict exactly what they predict from shared storage."""
    import pyarrow.parquet as pq

    outputs = {}
    for name, extra in (("shared", []), ("shipped", ["--ship-model"])):
        outputs[name] = tmp_path / name
        argv = [
            "predict",
            "--run",
            str(distributed_run),
            "--input",
            str(digit_shards),
            "--output",
            str(outputs[name]),
        ]
        run_ok(driver, *argv, *extra)
    shared, shipped = (
        pq.read_table(out / "predictions").sort_by("id").to_pydict() for out in outputs.values()
    )
    assert (
        shipped["prediction"] == shared["prediction"] and shipped["probabilities"] == shared["probabilities"]
    )
    assert len(shared["id"]) > 0


# ---------------------------------------------------------------------------------------- restarts

# Rank 1 dies before step FAIL_AT_STEP in the first two attempts; a checkpoint every 10 steps
# (step 30 included) lets each attempt resume right there.
KILLED_TWICE = (
    "launch.local_mode=false",
    "fault.fail_rank=1",
    f"fault.fail_at_step={FAIL_AT_STEP}",
    "fault.mode=kill",
    "fault.attempts=2",
    "run.checkpoint_every=10",
    # Three attempts of a cluster launch: a minute each on a busy 2-core machine.
    "launch.timeout_s=900",
)
RESTARTS_TIMEOUT_S = 1000


@pytest.mark.distributed
def test_a_rank_killed_twice_heals_with_two_restarts(
    two_workers: Cluster, driver: JobDriver, distributed_run: Path, digit_shards: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "healed"
    result = driver.run(
        *train_args(digit_shards, run_dir, *KILLED_TWICE, "launch.max_restarts=2"), timeout=RESTARTS_TIMEOUT_S
    )
    assert result["rc"] == 0, f"{result['stderr'][-3000:]}\n{driver.tail()}"
    restarts = assert_ends_as_undisturbed(run_dir, distributed_run)["restarts"]
    assert [(r["attempt"], r["rank"], r["kind"]) for r in restarts] == [(1, 1, "killed"), (2, 1, "killed")]
    assert [r["resume_step"] for r in restarts] == [FAIL_AT_STEP // 10 * 10] * 2


@pytest.mark.distributed
def test_two_kills_with_one_restart_fail_naming_both(
    two_workers: Cluster, driver: JobDriver, digit_shards: Path, tmp_path: Path
) -> None:
    args = train_args(digit_shards, tmp_path / "failed", *KILLED_TWICE, "launch.max_restarts=1")
    result = driver.run(*args, timeout=RESTARTS_TIMEOUT_S)
    assert result["rc"] == 1, driver.tail()
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert errors, result["stderr"][-3000:]
    assert "2 attempts failed (launch.max_restarts=1)" in errors[0]
    assert "attempt 1: rank 1 killed" in errors[0] and "attempt 2: rank 1 killed" in errors[0]
