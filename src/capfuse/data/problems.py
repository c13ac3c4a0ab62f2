"""What the data layer reports: one ``Problem`` per finding, and ``DataError`` when it must stop.

A problem always names the file, the line (1-based, counting the header) and the ImageID when
there is one, so a user can open the file at the right row. ``severity`` says what happened
to the row: ``error`` (the row is unusable: a train row is quarantined, a test row keeps its
place and is predicted from what is left) or ``warning`` (the row was repaired or converted
and is used).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class DataError(Exception):
    """The dataset cannot be used as it is; the message says where and why."""


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    image_id: str | None
    code: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        who = f" {self.image_id!r}" if self.image_id else ""
        return f"{where}:{who} [{self.code}] {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)
