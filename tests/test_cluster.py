"""Our jobs on a live Spark standalone cluster (master + 2 workers on 127.0.0.1), and the faults they survive.

The module starts its own cluster (scripts/cluster.sh, free ports, a temporary run directory),
submits the jobs with ``spark-submit`` as docs/cluster.md shows, kills workers and ranks on
purpose, and checks results against plain-Python references. Teardown stops the cluster and fails
if any of its processes (daemons, executors, Python workers, torch ranks) is left.
"""

from __future__ import annotations

import json
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


def test_worker_killed_mid_wordcount_gives_exact_counts(two_workers: Cluster, tmp_path: Path) -> None:
    cluster = two_workers
    expected = write_corpus(tmp_path / "corpus", files=24, lines_per_file=3000)
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


# ---------------------------------------------------------------------------------------- sharding


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An undisturbed shard run in a local[2] session: the reference manifest, and training's input."""
    from conftest import spark_args

    from spark_jobs import shard

    out = tmp_path_factory.mktemp("reference") / "digits"
    assert shard.main(["--source", "digits", "--output", str(out), "--shards", "2", *spark_args()]) == 0
    return out


def load_manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text(encoding="utf-8"))


def assert_files_match_manifest(directory: Path) -> None:
    """Every file the manifest lists exists with its recorded checksum, and nothing else is there."""
    import hashlib

    listed = set()
    for split in load_manifest(directory)["splits"].values():
        for shard_info in split["shards"]:
            for entry in shard_info["files"]:
                data = (directory / entry["path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
                listed.add(entry["path"])
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*.parquet")}
    assert present == listed


def test_worker_killed_mid_sharding_leaves_nothing_half_done(
    two_workers: Cluster, digit_shards: Path, tmp_path: Path
) -> None:
    cluster = two_workers
    out_dir = tmp_path / "shards"
    args = ("--source", "digits", "--output", str(out_dir), "--shards", "2")
    proc = cluster.spark_submit("spark_jobs/shard.py", *args)
    ran = wait_for(lambda: cluster.worker_has_run_task(1) or proc.poll() is not None, JOB_TIMEOUT_S)
    assert ran and proc.poll() is None, "the job ended before worker 1 finished a task"
    cluster.kill_worker(1)
    code, out, err = finish(proc)
    if code == 0:
        # Spark re-ran the lost work on worker 2: the output must be exactly the undisturbed one.
        assert load_manifest(out_dir) == load_manifest(digit_shards)
        assert_files_match_manifest(out_dir)
    else:
        # A failed run leaves nothing that looks complete: no output directory, no staging debris.
        assert not out_dir.exists(), (out + err)[-3000:]
    assert not list(tmp_path.glob(".shards.*")), "staging directory left behind"

    cluster.up()  # the rerun gets both workers again
    rerun = cluster.spark_submit("spark_jobs/shard.py", *args, "--overwrite")
    code, out, err = finish(rerun)
    assert code == 0, (out + err)[-3000:]
    assert load_manifest(out_dir) == load_manifest(digit_shards)
    assert_files_match_manifest(out_dir)


# ---------------------------------------------------------------------------------------- training

EPOCHS = 3
FAIL_AT_STEP = 30  # 1438 train rows / 2 ranks / 32 per rank = 22 steps per epoch: mid-epoch 2


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
    args = ["--config", "conf/train/mlp_seed.toml"]
    for item in sets:
        args += ["--set", item]
    return args


def submit_train(cluster: Cluster, *args: str) -> tuple[int, str]:
    code, out, err = finish(cluster.spark_submit("spark_jobs/train.py", *args))
    return code, out + err


def model_state(run_dir: Path) -> dict:
    from training.checkpoint import load_model_state

    return load_model_state(run_dir / "checkpoint.pt")


def assert_same_state(a: dict, b: dict, atol: float) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def app_ids(cluster: Cluster, name: str) -> list[str]:
    status = cluster.status()
    return [
        a["id"] for a in status.get("completedapps", []) + status.get("activeapps", []) if a["name"] == name
    ]


def workers_that_ran(cluster: Cluster, app_id: str) -> list[int]:
    ran = []
    for index in range(1, cluster.workers + 1):
        logs = (cluster.directory / "work" / f"worker-{index}").glob(f"{app_id}/*/stderr")
        if any("Finished task" in log.read_text(errors="replace") for log in logs):
            ran.append(index)
    return ran


@pytest.fixture(scope="module")
def distributed_run(cluster: Cluster, digit_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Undisturbed training on the cluster: TorchDistributor distributed mode, one barrier task per rank."""
    cluster.up()
    assert wait_for(lambda: len(cluster.alive_workers()) == cluster.workers, 60)
    before = set(app_ids(cluster, "spark-collab train"))
    run_dir = tmp_path_factory.mktemp("train") / "distributed"
    code, log = submit_train(cluster, *train_args(digit_shards, run_dir, "launch.local_mode=false"))
    assert code == 0, log[-4000:]
    (app,) = set(app_ids(cluster, "spark-collab train")) - before
    # One rank per worker: both workers' executors ran a task of this application.
    assert workers_that_ran(cluster, app) == [1, 2]
    return run_dir


@pytest.mark.distributed
def test_distributed_mode_on_the_cluster_matches_local_mode(
    spark, distributed_run: Path, digit_shards: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from conftest import spark_args

    from spark_jobs import train

    local_dir = tmp_path / "local"
    assert train.main([*train_args(digit_shards, local_dir, "launch.local_mode=true"), *spark_args()]) == 0
    dist_result = json.loads((distributed_run / "result.json").read_text())
    local_result = json.loads((local_dir / "result.json").read_text())
    assert dist_result["world_size"] == local_result["world_size"] == 2
    assert dist_result["steps"] == local_result["steps"]
    # Same data, seed and collective order; executors may use another thread count for the
    # matrix products, so float32 sums may round differently.
    assert_same_state(model_state(distributed_run), model_state(local_dir), atol=1e-5)
    assert dist_result["test_accuracy"] == pytest.approx(local_result["test_accuracy"], abs=0.01)


@pytest.mark.distributed
def test_rank_killed_mid_epoch_then_resume_matches_undisturbed(
    two_workers: Cluster, distributed_run: Path, digit_shards: Path, tmp_path: Path
) -> None:
    cluster = two_workers
    run_dir = tmp_path / "faulted"
    fault = (
        "launch.local_mode=false",
        "fault.fail_rank=1",
        f"fault.fail_at_step={FAIL_AT_STEP}",
        "fault.mode=exit",
    )
    start = time.monotonic()
    code, log = submit_train(cluster, *train_args(digit_shards, run_dir, *fault))
    elapsed = time.monotonic() - start
    assert code != 0, log[-4000:]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert errors and "rank 1" in errors[0], log[-4000:]
    print(f"rank 1 failure reported; the faulted submission took {elapsed:.1f}s")
    # Epoch 1 finished and was checkpointed before rank 1 died in epoch 2.
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1]

    code, log = submit_train(
        cluster, *train_args(digit_shards, run_dir, "launch.local_mode=false", "run.resume=true")
    )
    assert code == 0, log[-4000:]
    resumed = json.loads((run_dir / "result.json").read_text())
    undisturbed = json.loads((distributed_run / "result.json").read_text())
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["steps"] == undisturbed["steps"]
    assert_same_state(model_state(run_dir), model_state(distributed_run), atol=0)
    for key in ("train_loss", "val_accuracy", "test_accuracy"):
        assert resumed[key] == undisturbed[key], key
