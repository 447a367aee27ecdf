"""What a sandbox handler answers: status, JSON body or a file to stream, extra headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class _Reply:
    """What a handler answers: status, JSON body or a file to stream, extra headers."""

    def __init__(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        file: Path | None = None,
    ) -> None:
        self.status, self.body, self.headers, self.file = status, body, headers or {}, file
