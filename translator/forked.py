"""A text computed in a forked child process, on another CPU, while this process goes on."""

from __future__ import annotations

import os
from collections.abc import Callable


class Forked:
    """``make()`` run in a forked child; ``result()`` waits for its text.

    If the child fails, ``result()`` calls ``make()`` in this process, so that its error is raised here.
    """

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make
        self._code: int | None = None
        read_end, write_end = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:
            os.close(read_end)
            code = 1
            try:
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(make().encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        self._pipe = os.fdopen(read_end, "rb")

    def result(self) -> str:
        text = self._pipe.read().decode()
        return text if self.close() == 0 else self._make()

    def close(self) -> int:
        """Stop listening and reap the child (which ends at the latest when it writes to the closed pipe); its exit code."""
        if self._code is None:
            self._pipe.close()
            _, status = os.waitpid(self._pid, 0)
            self._code = os.waitstatus_to_exitcode(status)
        return self._code
