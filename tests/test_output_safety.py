"""Outputs never destroy inputs; storage problems are one line; nothing is half-written.

Refusals happen before Spark starts, so most cases run the real CLI in-process in well under a
second. The full-disk and read-only cases run the CLI in a subprocess inside its own mount
namespace with a small tmpfs (``unshare -m``); they skip where that is not allowed.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, spark_args
from train_shards import blob_shards

from spark_jobs import collab, shard, train, wordcount
from spark_jobs.common.errors import JobFailure, JobInputError
from spark_jobs.common.output import check_no_overlap, staged_output
from spark_jobs.wordcount import WordCountOptions, count_words


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for directories): equal snapshots, nothing touched."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def one_error_line(err: str, *needles: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


# --------------------------------------------------------------------------- the overlap rule


def test_overlap_relations(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.txt").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    cases = {
        str(data): "is the input",
        str(tmp_path): "contains the input",
        str(data / "sub" / "out"): "lies inside the input",
    }
    for output, relation in cases.items():
        with pytest.raises(JobInputError, match=relation):
            check_no_overlap(output, [str(data)])
    # Siblings and a name that merely shares a prefix do not overlap.
    check_no_overlap(tmp_path / "elsewhere", [str(data)])
    check_no_overlap(tmp_path / "data2", [str(data)])
    check_no_overlap(tmp_path / "out", ["hdfs://namenode/data", ""])


def test_overlap_sees_through_symlinks_and_globs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(data)
    # The output reached through a link is the input; an input reached through a link too.
    with pytest.raises(JobInputError, match="is the input"):
        check_no_overlap(link, [str(data)])
    with pytest.raises(JobInputError, match="contains the input"):
        check_no_overlap(data, [str(link / "a.txt")])
    with pytest.raises(JobInputError, match=r"contains the input .*\*\.txt"):
        check_no_overlap(data, [str(data / "*.txt")])
    with pytest.raises(JobInputError, match="is the input"):
        check_no_overlap(f"file://{data}", [f"file://{data}"])


# --------------------------------------------------------------------------- every writing job


def _overwrite_cases(tmp: Path) -> list[tuple[list[str], str]]:
    data = tmp / "D"
    (data / "sub").mkdir(parents=True)
    (data / "in.txt").write_text("the quick brown fox\n")
    (data / "sub" / "in.txt").write_text("jumps over the lazy dog\n")
    return [
        ([str(data), "--output", str(data), "--overwrite"], "is the input"),
        ([str(data / "sub" / "in.txt"), "--output", str(data), "--overwrite"], "contains the input"),
        ([str(data / "*.txt"), "--output", str(data), "--overwrite"], "contains the input"),
        ([str(data), "--output", str(data / "sub"), "--overwrite"], "lies inside the input"),
        ([str(data), "--output", str(data / "counts")], "lies inside the input"),
    ]


def test_wordcount_refuses_output_overlapping_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv, relation in _overwrite_cases(tmp_path):
        before = snapshot(tmp_path)
        assert wordcount.main([*argv, "--master", "local[1]"]) == 2, argv
        one_error_line(capsys.readouterr().err, relation, "--output")
        assert snapshot(tmp_path) == before


def test_corpus_refuses_output_overlapping_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from spark_jobs.corpus.cli import main as corpus

    for argv, relation in _overwrite_cases(tmp_path):
        before = snapshot(tmp_path)
        assert corpus([*argv, "--tokenizer", "char", "--master", "local[1]"]) == 2, argv
        one_error_line(capsys.readouterr().err, relation, "--output")
        assert snapshot(tmp_path) == before


def test_wordcount_api_refuses_output_holding_its_files(spark, tmp_path: Path) -> None:
    data = tmp_path / "D"
    data.mkdir()
    (data / "in.txt").write_text("a b c\n")
    before = snapshot(tmp_path)
    with pytest.raises(JobInputError, match="contains the input"):
        count_words(spark, WordCountOptions(data, [str(data / "in.txt")], overwrite=True))
    assert snapshot(tmp_path) == before


def test_shard_refuses_output_overlapping_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "D"
    data.mkdir()
    (data / "table.csv").write_text("label,x\n0,1.0\n1,2.0\n0,3.0\n1,4.0\n")
    cases = [
        (["--source", f"csv:{data}", "--output", str(data), "--overwrite"], "is the --source"),
        (
            ["--source", f"csv:{data / 'table.csv'}", "--output", str(data), "--overwrite"],
            "contains the --source",
        ),
        (["--source", f"parquet:{data}", "--output", str(data / "shards")], "lies inside the --source"),
    ]
    for argv, relation in cases:
        before = snapshot(tmp_path)
        assert shard.main([*argv, "--master", "local[1]"]) == 2, argv
        one_error_line(capsys.readouterr().err, relation)
        assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_shards(tmp_path_factory.mktemp("overlap") / "shards", n_train=64, shards=2)


CONFIGS = {
    "train": REPO_ROOT / "conf" / "train" / "mlp784.toml",
    "collab": REPO_ROOT / "conf" / "collab" / "fedavg.toml",
}


@pytest.mark.parametrize("job", [train, collab], ids=["train", "collab"])
def test_run_dir_overlapping_shards_or_config_refused(
    job, shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "conf" / "my.toml"
    config.parent.mkdir()
    shutil.copy(CONFIGS[job.__name__.rsplit(".", 1)[1]], config)
    test_shards = blob_shards(tmp_path / "T", n_train=64, shards=1)
    cases = [
        ([f"run.dir='{shards}'"], "is the data.shards"),
        ([f"run.dir='{shards / 'runs' / 'a'}'"], "lies inside the data.shards"),
        ([f"run.dir='{shards.parent}'"], "contains the data.shards"),
        ([f"data.test='{test_shards}'", f"run.dir='{test_shards}'"], "is the data.test"),
        ([f"run.dir='{config.parent}'"], "contains the config file"),
    ]
    for sets, relation in cases:
        values = [f"data.shards='{shards}'", "launch.num_processes=2", *sets]
        argv = ["--config", str(config), "--overwrite", *(x for v in values for x in ("--set", v))]
        before = snapshot(shards.parent), snapshot(tmp_path)
        assert job.main([*argv, "--master", "local[1]"]) == 2, argv
        one_error_line(capsys.readouterr().err, relation, "run.dir")
        assert (snapshot(shards.parent), snapshot(tmp_path)) == before


# --------------------------------------------------------------------------- storage errors, fakes


def test_full_disk_in_staged_output_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    expected = r"--output .*out: no space left on device"
    with pytest.raises(JobFailure, match=expected) as caught, staged_output(out, overwrite=False) as staging:
        staging.mkdir()
        (staging / "part-0").write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(staging / "part-1"))
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_jvm_side_full_disk_text_is_recognised(tmp_path: Path) -> None:
    """Spark reports a full disk as text in a Java exception: the same one line."""
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    java = "org.apache.spark.SparkException: Job aborted.\n\tat ...\nCaused by: java.io.IOException: No space left on device"
    with pytest.raises(JobFailure, match="no space left on device"), staged_output(out, True) as staging:
        staging.mkdir()
        raise RuntimeError(java)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "old").is_dir()


def test_unrelated_permission_error_is_not_blamed_on_the_output(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match=r"Permission denied: /etc/input\.txt"),
        staged_output(tmp_path / "out", False),
    ):
        raise RuntimeError(
            "java.io.FileNotFoundException: /etc/input.txt (Permission denied: /etc/input.txt)"
        )


def test_shard_negative_seed_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert shard.main(["--source", "digits", "--output", str(tmp_path / "o"), "--seed", "-5"]) == 2
    one_error_line(capsys.readouterr().err, "--seed -5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("master", ["bogus://x", "local[0]", "local[two]", "spark:/h:7077"])
def test_bad_master_url_is_one_line_before_the_jvm(tmp_path: Path, capsys, master: str) -> None:
    (tmp_path / "in.txt").write_text("a b\n")
    argv = [str(tmp_path / "in.txt"), "--output", str(tmp_path / "o"), "--master", master]
    assert wordcount.main(argv) == 2
    one_error_line(capsys.readouterr().err, f"--master {master}: not a Spark master URL")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


# --------------------------------------------------------------------------- real tmpfs: full and read-only


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True
    )
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs in a private mount namespace")


LEFT = "left on tmpfs: "


def left_on_tmpfs(proc: subprocess.CompletedProcess) -> list[str]:
    line = next(line for line in proc.stdout.splitlines() if line.startswith(LEFT))
    return sorted(line[len(LEFT) :].split())


def run_on_tmpfs(mount: Path, options: str, cli: list[str], fill_kib: int = 0) -> subprocess.CompletedProcess:
    """Run ``python -m spark_jobs CLI...`` with a fresh tmpfs (``options``) mounted at ``mount``,
    seen only by that command and its children (Spark, ranks). ``fill_kib``: take that much first."""
    mount.mkdir(parents=True, exist_ok=True)
    fill = f"head -c {fill_kib}k /dev/zero > {mount}/filler && " if fill_kib else ""
    ro = f"mount -o remount,ro {mount} && " if "ro" in options.split(",") else ""
    # After the command, what it left on the tmpfs (which vanishes with the namespace) goes to stdout.
    listing = f'echo "{LEFT}$(find {mount} -mindepth 1 -printf "%P ")"'
    script = f"mount -t tmpfs -o {options.replace(',ro', '')} tmpfs {mount} && {fill}{ro}"
    script += f'{{ rc=0; "$@" || rc=$?; {listing}; exit $rc; }}'
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "spark_jobs", *cli],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_line_no_traceback(
    proc: subprocess.CompletedProcess, code: int, *needles: str, driver_only: bool = False
) -> None:
    """Exit ``code``, one ``error:`` line holding ``needles``, and no Java or Python stack.

    ``driver_only``: torch ranks' own stderr (forwarded by the launcher) is not looked at; the
    driver's part must still be the one line and no Java stack.
    """
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == code, proc.stderr[-3000:]
    assert len(err_lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in err_lines[0], (needle, err_lines[0])
    noises = ("\tat ", "Py4J") if driver_only else ("Traceback", "\tat ", "Py4J", "OSError")
    for noise in noises:
        assert noise not in proc.stderr, proc.stderr[-3000:]


def _text_input(tmp: Path) -> Path:
    # About 30,000 distinct words: their counts need far more than the tmpfs holds.
    words = " ".join(f"w{i}x" for i in range(30_000))
    path = tmp / "words.txt"
    path.write_text(words + "\n")
    return path


@needs_mount
def test_read_only_location_is_one_line_for_every_job(tmp_path: Path, shards: Path) -> None:
    mount = tmp_path / "ro"
    text = _text_input(tmp_path)
    master = ["--master", "local[1]"]
    cases = [
        (["wordcount", str(text), "--output", str(mount / "out"), *master], "--output"),
        (["shard", "--source", "digits", "--output", str(mount / "s"), *master], "--output"),
        (
            ["train", *master, "--set", f"data.shards='{shards}'", "--set", f"run.dir='{mount / 'run'}'"],
            "run.dir",
        ),
    ]
    for cli, flag in cases:
        proc = run_on_tmpfs(mount, "size=1m,ro", cli)
        assert_one_line_no_traceback(proc, 2, flag, "read-only file system")
        assert left_on_tmpfs(proc) == []


@needs_mount
def test_full_disk_wordcount_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    text = _text_input(tmp_path)
    cli = ["wordcount", *spark_args(), str(text), "--output", str(mount / "out")]
    proc = run_on_tmpfs(mount, "size=64k", cli)
    assert_one_line_no_traceback(proc, 1, "--output", "no space left on device")
    assert left_on_tmpfs(proc) == []  # no output, no staging directory, no lock file


@needs_mount
def test_full_disk_shard_is_one_line(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    cli = ["shard", *spark_args(), "--source", "digits", "--output", str(mount / "s")]
    proc = run_on_tmpfs(mount, "size=64k", cli)
    assert_one_line_no_traceback(proc, 1, "--output", "no space left on device")
    assert left_on_tmpfs(proc) == []


@pytest.mark.distributed
@needs_mount
def test_full_disk_train_is_one_line(tmp_path: Path, shards: Path) -> None:
    mount = tmp_path / "small"
    sets = [f"data.shards='{shards}'", f"run.dir='{mount / 'run'}'", "launch.num_processes=1"]
    sets += ["train.epochs=1", "train.batch_size=8", "run.plots=false"]
    cli = ["train", "--master", "local[1]", *(x for s in sets for x in ("--set", s))]
    # 64 KiB, 56 of them taken: the lock file fits, the run's files do not.
    proc = run_on_tmpfs(mount, "size=64k", cli, fill_kib=56)
    assert_one_line_no_traceback(proc, 1, "run.dir", "no space left on device")
    assert "Traceback" not in proc.stdout  # ranks record their traceback; they do not print it
    assert "run/result.json" not in left_on_tmpfs(proc)  # nothing claims to be a finished run
