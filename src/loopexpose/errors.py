"""One exception type for every problem a user can fix (bad file, bad option, missing data).

The CLI turns a :class:`LoopExposeError` into one line on stderr and a non-zero exit code; anything else is
a bug and keeps its traceback.
"""


class LoopExposeError(Exception):
    """A user-facing error whose message is one line naming the file (if any) and the problem."""

    def __init__(self, message: str, path: object | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path is not None else message)
