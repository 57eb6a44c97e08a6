"""A normal run prints only the job's own lines: no Spark WARN lines, no progress bar, no JVM banner.

Real commands in subprocesses, output captured, because the noise comes from the JVM and from
child processes, which in-process tests would not see.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Spark's log lines, its console progress bar (redrawn with carriage returns), the JVM's first line.
NOISE = ("WARN", "[Stage", "\r", "incubator modules")


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spark_jobs", *args, "--master", "local[2]"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _assert_quiet(proc: subprocess.CompletedProcess[str]) -> None:
    both = proc.stdout + proc.stderr
    for mark in NOISE:
        assert mark not in both, f"{mark!r} in the output:\n{both}"


def test_wordcount_prints_its_top_words_and_one_summary_line(tmp_path):
    proc = _run(tmp_path, "wordcount", "README.md", "--output", str(tmp_path / "wc"), "--top", "3")
    assert proc.returncode == 0, proc.stderr
    _assert_quiet(proc)
    assert len(proc.stdout.splitlines()) == 3
    (summary,) = proc.stderr.splitlines()
    assert summary.startswith("wordcount: ")


def test_shard_of_mnist5k_prints_one_summary_line(tmp_path):
    # mnist5k is parsed on the driver (15 MB of pixels): the case that used to ship in every task.
    proc = _run(tmp_path, "shard", "--source", "mnist5k", "--output", str(tmp_path / "s"), "--shards", "1")
    assert proc.returncode == 0, proc.stderr
    _assert_quiet(proc)
    assert proc.stderr.strip() == ""
    (summary,) = proc.stdout.splitlines()
    # 80/10/10 of 5,000 rows, each split in one shard: counted in the singular.
    assert "train: 1 shard / 4000 rows" in summary and "test: 1 shard / 500 rows" in summary
