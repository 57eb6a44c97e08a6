"""Both process chains of a launch run: the parent-death guard (default) and TorchDistributor's plain path.

``SPARK_COLLAB_PLAIN_TORCHRUN=1`` switches the guard chain off. Each launch reports, from rank 0,
which process started its torchrun agent: with the guard, torchrun *is* the guard (exec'd) and its
parent is this driver process; on the plain path it is TorchDistributor's wrapper.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from spark_jobs.launch.torchrun import PLAIN_TORCHRUN_ENV


def _parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _who_started_torchrun(offset: int) -> tuple[int, int, str]:
    """On a rank: (rank, pid of the torchrun agent's parent, that parent's command line)."""
    agent_parent = _parent_of(os.getppid())
    cmdline = Path(f"/proc/{agent_parent}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return int(os.environ["RANK"]) + offset, agent_parent, cmdline


@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_guard_chain_and_plain_path_both_launch(spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from spark_jobs.launch import launch

    rank, parent, cmdline = launch(_who_started_torchrun, 100, num_processes=2, timeout_s=180)
    assert rank == 100  # rank 0's result
    assert parent == os.getpid() and "torch_run_process_wrapper" not in cmdline

    monkeypatch.setenv(PLAIN_TORCHRUN_ENV, "1")
    rank, parent, cmdline = launch(_who_started_torchrun, 200, num_processes=2, timeout_s=180)
    assert rank == 200
    assert parent != os.getpid() and "pyspark.ml.torch.torch_run_process_wrapper" in cmdline
