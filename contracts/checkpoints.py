"""Step checkpoints that prove they are complete: a record with size and SHA-256 beside each one.

Layout (names from :mod:`contracts.rundir`)::

    checkpoints/step-000000120.pt     the checkpoint bytes (written atomically, fsynced)
    checkpoints/step-000000120.json   {"step", "epoch", "bytes", "sha256"} (written after it)

A checkpoint without its record was cut short (the writer died between the two writes); one
whose bytes do not match its record was damaged afterwards (a truncated copy, a bad disk). Either
way :func:`latest_intact` skips it, with a warning, and offers the one before. The checks need only
the standard library: the driver uses them to say from which step a restart resumes, the ranks
before loading a checkpoint with torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from contracts.atomic import write_json_atomic
from contracts.rundir import RunDir


@dataclass(frozen=True)
class CheckpointRecord:
    """What the record beside a step checkpoint says about it."""

    step: int
    epoch: int
    bytes: int
    sha256: str


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_record(checkpoint: Path, record: CheckpointRecord) -> Path:
    """Write the record of a complete ``checkpoint`` (atomic, fsynced: it vouches for the bytes)."""
    return write_json_atomic(RunDir.checkpoint_record(checkpoint), asdict(record), fsync=True)


def read_record(checkpoint: Path) -> CheckpointRecord | None:
    try:
        doc = json.loads(RunDir.checkpoint_record(checkpoint).read_text(encoding="utf-8"))
        return CheckpointRecord(
            step=int(doc["step"]), epoch=int(doc["epoch"]), bytes=int(doc["bytes"]), sha256=str(doc["sha256"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def problem_with(checkpoint: Path, data: bytes | None = None) -> str | None:
    """Why ``checkpoint`` cannot be trusted (None: it is intact). ``data``: its bytes, if already read."""
    record = read_record(checkpoint)
    if record is None:
        return "no readable record beside it (the write did not finish)"
    if data is None:
        try:
            data = checkpoint.read_bytes()
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
    if len(data) != record.bytes:
        return f"{len(data)} bytes where its record says {record.bytes} (truncated or partly written)"
    if sha256_of(data) != record.sha256:
        return "its SHA-256 does not match its record (damaged)"
    return None


@dataclass(frozen=True)
class IntactCheckpoint:
    """The newest checkpoint that passed its checks, with its bytes (read once) and its record."""

    path: Path
    record: CheckpointRecord
    data: bytes


def latest_intact(run_dir: str | os.PathLike, warnings: list[str]) -> IntactCheckpoint | None:
    """The newest intact step checkpoint in ``run_dir``; each one skipped is described in ``warnings``."""
    for path in RunDir.at(run_dir).step_checkpoints():
        try:
            data = path.read_bytes()
        except OSError as exc:
            warnings.append(f"checkpoint {path} is unreadable ({exc.strerror or exc}); trying the one before")
            continue
        problem = problem_with(path, data)
        if problem is None:
            record = read_record(path)
            assert record is not None  # problem_with checked it
            return IntactCheckpoint(path, record, data)
        warnings.append(f"checkpoint {path} is not usable: {problem}; trying the one before")
    return None


def latest_intact_step(run_dir: str | os.PathLike) -> int | None:
    """The step of the newest intact checkpoint in ``run_dir`` (None: none), for reports."""
    found = latest_intact(run_dir, [])
    return found.record.step if found is not None else None
