r"""Reader for the COMP5329 CSV layout, which a standard CSV parser gets wrong.

The Caption field is not quoted and holds commas and bare double quotes, so a row is split on
its first comma (test) or its first two commas (train) and everything after is the caption.
Real files also arrive with a UTF-8 BOM, CRLF line ends, blank trailing lines, stray spaces
around fields and labels, and now and then bytes that are not UTF-8; all of these are read,
and each row that cannot be read is reported with its line number rather than dropped silently.

Only ``\n`` and ``\r\n`` end a row. A caption may hold a lone ``\r`` (or a form feed, a
vertical tab, U+2028...), which ``str.splitlines`` and Python's universal newlines would turn
into extra rows that shift every line number after them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from capfuse.data.problems import DataError, Problem

HEADERS = {"train": ("ImageID", "Labels", "Caption"), "test": ("ImageID", "Caption")}
_LINE_BREAK = re.compile(r"\r?\n")
_FULLY_QUOTED = re.compile(r'"((?:[^"]|"")*)"')


def split_lines(text: str) -> list[str]:
    r"""``text`` split on ``\n`` and ``\r\n`` only (see the module docstring); a trailing line end
    leaves a last empty line, as blank lines do."""
    return _LINE_BREAK.split(text)


@dataclass
class Row:
    line: int  # 1-based line number in the file, header = 1
    image_id: str
    caption: str
    labels: list[int] | None = None  # train only; None when unreadable
    problems: list[Problem] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def _decode(raw: bytes, name: str) -> tuple[list[str], list[Problem]]:
    """Split into lines first, then decode each, so one bad byte costs a warning, not the file."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines, problems = [], []
    for i, chunk in enumerate(split_lines(raw.decode("latin-1")), start=1):
        data = chunk.encode("latin-1")
        try:
            lines.append(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            lines.append(data.decode("utf-8", errors="replace"))
            problems.append(
                Problem(
                    name,
                    i,
                    None,
                    "bad_encoding",
                    f"not valid UTF-8 at byte {exc.start}; undecodable bytes replaced by U+FFFD",
                    "warning",
                )
            )
    return lines, problems


def _unquote(text: str) -> str:
    """Undo standard CSV quoting when a whole field was quoted by a tool that re-saved the file."""
    m = _FULLY_QUOTED.fullmatch(text)
    return m.group(1).replace('""', '"') if m else text


def _parse_labels(field_text: str, name: str, line: int, image_id: str) -> tuple[list[int] | None, list[Problem]]:
    tokens = _unquote(field_text.strip()).replace(",", " ").split()
    if not tokens:
        return None, [Problem(name, line, image_id, "no_labels", "train row has no labels")]
    labels, bad = [], []
    for tok in tokens:
        try:
            labels.append(int(tok))
        except ValueError:
            bad.append(tok)
    if bad:
        return None, [
            Problem(
                name,
                line,
                image_id,
                "bad_label",
                f"label(s) {', '.join(map(repr, bad))} are not integers (Labels field {field_text.strip()!r})",
            )
        ]
    negative = [v for v in labels if v < 0]
    if negative:
        return None, [Problem(name, line, image_id, "bad_label", f"negative label(s) {negative}")]
    return sorted(set(labels)), []


def read_split(path: str | Path, split: str) -> tuple[list[Row], list[Problem]]:
    """Read ``train.csv`` or ``test.csv``. Returns every non-blank row and file-level problems.

    Raises ``DataError`` when the file is missing or its header is not the expected one, since
    then no row can be trusted.
    """
    if split not in HEADERS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise DataError(f"{name}: file not found (expected the COMP5329 layout: train.csv, test.csv, data/)")
    lines, file_problems = _decode(path.read_bytes(), name)
    line_problems: dict[int, list[Problem]] = {}
    for p in file_problems:
        line_problems.setdefault(p.line, []).append(p)

    first = next((i for i, text in enumerate(lines) if text.strip()), None)
    if first is None:
        raise DataError(f"{name}: the file is empty")
    expected = HEADERS[split]
    header = tuple(_unquote(h.strip()) for h in lines[first].split(","))
    if tuple(h.lower() for h in header) != tuple(h.lower() for h in expected):
        if "\r" in lines[first]:
            raise DataError(
                f"{name}:{first + 1}: the lines end in a bare carriage return (\\r, old Mac line ends); "
                "only \\n or \\r\\n end a row, since a lone \\r can sit inside a caption: convert the "
                "file to \\n line ends (e.g. `tr '\\r' '\\n'`)"
            )
        raise DataError(f"{name}:{first + 1}: bad header {','.join(header)!r}; expected {','.join(expected)!r}")

    n_fields = len(expected)
    rows: list[Row] = []
    for i in range(first + 1, len(lines)):
        text, lineno = lines[i], i + 1
        if not text.strip():
            continue  # blank lines (often trailing) carry nothing
        parts = text.split(",", n_fields - 1)
        image_id = _unquote(parts[0].strip())
        problems = [replace(p, image_id=image_id or None) for p in line_problems.get(lineno, [])]
        if not image_id:
            problems.append(Problem(name, lineno, None, "malformed_row", f"empty ImageID in {text[:60]!r}"))
        if len(parts) < n_fields:
            if split == "train":
                problems.append(
                    Problem(
                        name,
                        lineno,
                        image_id or None,
                        "malformed_row",
                        f"expected ImageID,Labels,Caption but found {len(parts)} field(s): {text[:60]!r}",
                    )
                )
                rows.append(Row(lineno, image_id, "", None, problems))
                continue
            parts.append("")  # a test row without a comma: no caption, still predicted from its image
        caption = _unquote(parts[-1].strip())
        labels = None
        if split == "train":
            labels, label_problems = _parse_labels(parts[1], name, lineno, image_id)
            problems += label_problems
        if not caption:
            problems.append(
                Problem(
                    name,
                    lineno,
                    image_id or None,
                    "empty_caption",
                    "empty caption; the row is used with its image only",
                    "warning",
                )
            )
        rows.append(Row(lineno, image_id, caption, labels, problems))
    header_problems = [p for p in file_problems if p.line is not None and p.line <= first + 1]
    return rows, header_problems
