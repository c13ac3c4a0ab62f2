"""``60m``, ``1h30m``, ``90s``, ``3600``: a time budget in seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``: a number (seconds) or parts like ``1h30m``, ``45m``, ``90s``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", raw):
            seconds = float(raw)
        elif raw and _PART.sub("", raw) == "" and len({u for _, u in _PART.findall(raw)}) == len(_PART.findall(raw)):
            seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(raw))
        else:
            raise ValueError(f"time limit {text!r}: expected seconds or a duration like 60m, 1h30m, 90s")
    if not seconds > 0:
        raise ValueError(f"time limit {text!r}: must be more than zero")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
