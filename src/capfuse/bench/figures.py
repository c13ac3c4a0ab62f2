"""The figures a benchmark returned, as rows of ``make bench``'s results file.

Each benchmark returns a dict of its measurements (nested by variant: runtime, precision,
layout...). ``figure_rows`` flattens every number in it into a row ``benchmark, figure, value,
unit``, so a new measurement in a benchmark reaches the results file without a line here.
"""

from __future__ import annotations

import math
from numbers import Real

# Keys whose numbers describe the set-up, not a measurement: kept out of the table.
_SET_UP = {"shape", "models", "cores", "rounds", "ahead"}
_RATES = (("img_s", "images/s"), ("captions_s", "captions/s"), ("rows_s", "rows/s"))


def _part_unit(part: str) -> str:
    for suffix, unit in _RATES:
        if suffix in part:
            return unit
    if part.endswith("_s") or part == "seconds":
        return "s"
    if part.endswith("_mb"):
        return "MB"
    if "cosine" in part:
        return "cosine"
    if "threshold" in part:
        return "threshold"
    if part == "map" or part.endswith("_map"):
        return "mAP"
    if "f1" in part or part.startswith("nested"):
        return "mean F1"
    if part.startswith("load"):
        return "load average"
    return "x" if part == "speedup" else ""


def _unit(path: list[str]) -> str:
    """The unit the key nearest the number names: ``img_s.onnx fp32`` is images/s."""
    for part in reversed(path):
        unit = _part_unit(part)
        if unit:
            return unit
    return ""


def figure_rows(benchmark: str, result) -> list[dict]:
    """``[{benchmark, figure, value, unit}]`` for every finite number in ``result``; a list of
    dicts (one per model) is keyed by each one's ``model``."""
    rows: list[dict] = []

    def walk(value, path: list[str]) -> None:
        if path and path[-1] in _SET_UP:
            return
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, [*path, " ".join(map(str, key)) if isinstance(key, tuple) else str(key)])
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for i, sub in enumerate(value):
                walk({k: v for k, v in sub.items() if k != "model"}, [*path, str(sub.get("model", i))])
        elif isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value)):
            rows.append({"benchmark": benchmark, "figure": ".".join(path), "value": float(value), "unit": _unit(path)})

    walk(result, [])
    return rows
