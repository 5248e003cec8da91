"""Errors that stage scripts turn into one line on stderr and exit code 2."""


class UsageError(Exception):
    """Bad input the user can fix: the message says what is wrong and how to fix it."""


class Diverged(Exception):
    """A loss became non-finite (e.g. unbounded gradient ascent); carries the step."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite loss {loss} at step {step}")
        self.step = step
        self.loss = loss


class Stopped(Exception):
    """A launcher stopped waiting (Ctrl-C, or its wait limit): one line on stderr, exit ``code``, no traceback."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
