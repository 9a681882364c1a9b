"""The one exception type the translator raises for bad input, carrying where the problem is."""

from __future__ import annotations


class TranslationError(Exception):
    """Bad input: a prototxt, caffemodel or option the translator cannot accept.

    The message reads ``file:line: layer "name" (Type): what is wrong`` with the parts that are
    known; the command line prints it on one line and exits with status 2.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        layer: str | None = None,
        layer_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.layer = layer
        self.layer_type = layer_type

    def located(self, **where: object) -> TranslationError:
        """Fill in whatever location parts are still unknown, and return self."""
        for key, value in where.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        return self

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        if self.layer is not None:
            kind = f" ({self.layer_type})" if self.layer_type else ""
            where += f"layer {self.layer!r}{kind}: "
        return " ".join(f"{where}{self.message}".split())
