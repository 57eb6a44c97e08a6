"""User-facing errors: one line that names what is wrong and how to fix it, exit code 2."""

from __future__ import annotations

EXIT_USAGE = 2


class JobInputError(Exception):
    """Bad input detected before (or instead of) writing anything.

    The message is printed as a single ``error: ...`` line and the process exits with code 2.
    """
