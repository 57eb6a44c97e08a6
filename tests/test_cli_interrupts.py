"""The one line a command prints when it is interrupted is all it prints, even when the signal lands
inside a call to the JVM, where py4j logs the interruption with a full traceback on the root logger.

The JVM call is stood in for by py4j's own client with a connection whose wait for the answer is
interrupted, so the record is the one py4j writes, whatever its wording in the installed version.
"""

from __future__ import annotations

import logging
from collections import deque

import pytest
from py4j.java_gateway import GatewayClient

from spark_jobs.common.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, run_cli


class _InterruptedConnection:
    socket = None

    def __init__(self, interrupt: BaseException) -> None:
        self.interrupt = interrupt

    def send_command(self, command: str) -> str:
        raise self.interrupt


def _client_waiting_when(interrupt: BaseException) -> GatewayClient:
    client = GatewayClient.__new__(GatewayClient)
    client.deque = deque()
    client._get_connection = lambda: _InterruptedConnection(interrupt)  # type: ignore[method-assign]
    return client


@pytest.mark.parametrize(
    ("interrupt", "code", "line"),
    [
        (Terminated("signal 15"), EXIT_TERMINATED, "terminated (SIGTERM)"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
    ],
)
def test_an_interrupted_jvm_call_prints_only_the_one_line(
    interrupt: BaseException,
    code: int,
    line: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def job(_argv: object) -> int:
        _client_waiting_when(interrupt).send_command("c\nt\n")
        return 0

    with caplog.at_level(logging.ERROR):
        assert run_cli(job, []) == code
    # Outside pytest the record would reach stderr through logging's last-resort handler.
    assert [r.getMessage() for r in caplog.records] == []
    err = capsys.readouterr().err
    assert err.strip() == line, err


def test_other_py4j_errors_are_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    from spark_jobs.common.cli import _quiet_py4j_interrupts

    with _quiet_py4j_interrupts(), caplog.at_level(logging.ERROR):
        try:
            raise ValueError("the JVM answered garbage")
        except ValueError:
            logging.exception("Exception while sending command.")
    assert [r.getMessage() for r in caplog.records] == ["Exception while sending command."]
