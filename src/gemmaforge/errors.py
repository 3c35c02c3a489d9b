"""User-facing errors: problems the user can fix, reported without a traceback (exit code 2)."""

from __future__ import annotations


class UserError(Exception):
    """One or more problems in the user's input, each naming where it is and how to fix it.

    The CLI prints every problem and exits with code 2; library callers can catch it and read
    `problems`. Build messages with `problem()` so they all read the same way.
    """

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def problem(where: str | None, what: str, fix: str | None = None) -> str:
    """Format one problem as `where: what. Fix: fix`."""
    text = f"{where}: {what}" if where else what
    if fix:
        text = f"{text.rstrip('.')}. Fix: {fix}"
    return text
