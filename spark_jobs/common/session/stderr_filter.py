"""What the driver JVM's stderr is cut down to before it reaches ours.

Two kinds of text say nothing to the user and are kept off the terminal:

- the first line of every Spark 4 driver JVM (it loads an incubating vector module);
- a Python worker's traceback that ends in a lost connection (``BrokenPipeError``, ``EOFError``,
  ...) raised in pyspark's worker daemon. The JVM hangs up on its Python workers when a job fails
  or stops, and a worker caught mid-write prints its stack (after the daemon's "failed to flush"
  line, when that is where it failed). The job's own one-line error (or its result) is what
  matters; the stack is kept for the failure log (:func:`diverted_text`).

Everything else passes through unchanged and at once: partial lines (a console progress bar's
``\\r`` updates) are not held back, except a possible start of a traceback's first line.
"""

from __future__ import annotations

import threading
from collections import deque

JVM_NOISE_LINE = b"WARNING: Using incubator modules"
TRACEBACK_HEAD = b"Traceback (most recent call last):"
# The daemon's own line before the stack of a worker whose final flush failed.
FLUSH_FAILED_HEAD = b"PySpark daemon failed to flush the output to the worker process:"
# Exceptions a worker raises when the JVM end of its socket is gone.
LOST_CONNECTION = (b"BrokenPipeError", b"ConnectionResetError", b"ConnectionAbortedError", b"EOFError")
# A frame in pyspark's own worker code; tracebacks from user or project code are never diverted.
PYSPARK_WORKER_FRAMES = (b"pyspark/daemon.py", b"pyspark/worker.py")
# A held traceback longer than this is not the short daemon stack: it is passed on as it is.
MAX_HELD_LINES = 200
# The failure log keeps the last few diverted stacks.
MAX_DIVERTED = 20

_diverted: deque[bytes] = deque(maxlen=MAX_DIVERTED)
_diverted_lock = threading.Lock()


def diverted_text() -> str:
    """The worker stacks kept off stderr so far (oldest first), as text; empty when none."""
    with _diverted_lock:
        blocks = list(_diverted)
    return b"".join(blocks).decode("utf-8", "replace")


class JvmStderrFilter:
    """Feed it the JVM's stderr in chunks as they come; it returns what to write to ours."""

    def __init__(self) -> None:
        self._first_line_seen = False
        self._mid_line = False  # the last output ended inside a line that was passed on
        self._pending = b""  # the start of a line not yet decided (first line, or maybe a traceback head)
        self._held: list[bytes] | None = None  # the lines of a traceback being read

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        data = self._pending + chunk
        self._pending = b""
        while data:
            newline = data.find(b"\n")
            if newline < 0:
                out += self._partial(data)
                break
            line, data = data[: newline + 1], data[newline + 1 :]
            out += self._line(line)
        return bytes(out)

    def close(self) -> bytes:
        """End of input: whatever is still held goes out."""
        out = b"".join(self._held or []) + self._pending
        self._held, self._pending = None, b""
        return out

    def _partial(self, data: bytes) -> bytes:
        """The unterminated end of a chunk: passed on, unless it still has to be decided."""
        undecided = not self._first_line_seen and JVM_NOISE_LINE.startswith(data[: len(JVM_NOISE_LINE)])
        maybe_head = not self._mid_line and any(
            head.startswith(data[: len(head)]) for head in (TRACEBACK_HEAD, FLUSH_FAILED_HEAD)
        )
        if self._held is not None or undecided or maybe_head:
            self._pending = data
            return b""
        self._first_line_seen = True
        self._mid_line = True
        return data

    def _line(self, line: bytes) -> bytes:
        starts_line = not self._mid_line
        self._mid_line = False
        if not self._first_line_seen:
            self._first_line_seen = True
            if line.startswith(JVM_NOISE_LINE):
                return b""
        if self._held is not None:
            return self._traceback_line(line)
        if starts_line and line.rstrip(b"\r\n") in (TRACEBACK_HEAD, FLUSH_FAILED_HEAD):
            self._held = [line]
            return b""
        return line

    def _traceback_line(self, line: bytes) -> bytes:
        held = self._held
        assert held is not None
        held.append(line)
        in_stack = line[:1] in (b" ", b"\t")  # a frame or its source line
        # The stack that the daemon's "failed to flush" line announces.
        announced = (
            len(held) == 2
            and held[0].rstrip(b"\r\n") == FLUSH_FAILED_HEAD
            and line.rstrip(b"\r\n") == TRACEBACK_HEAD
        )
        if (in_stack or announced) and len(held) < MAX_HELD_LINES:
            return b""
        self._held = None
        if line.startswith(LOST_CONNECTION) and any(
            frame in held_line for held_line in held for frame in PYSPARK_WORKER_FRAMES
        ):
            with _diverted_lock:
                _diverted.append(b"".join(held))
            return b""
        return b"".join(held)
