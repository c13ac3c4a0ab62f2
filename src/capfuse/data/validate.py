"""Validate a COMP5329-layout dataset once, report every finding, and apply the row policy.

Policy:

* an unusable **train** row (bad labels, no labels, missing or broken image, an image over
  ``data.max_pixels``, unsafe ImageID, duplicate ImageID) is quarantined and listed in the
  report; ``strict=True`` fails instead;
* a **test** row is never dropped: when its image cannot be read it keeps its place, is
  flagged (``image_ok = False``) and is predicted from its caption;
* repairs (BOM, CRLF, stray spaces, mode conversion, EXIF rotation, PNG bytes behind ``.jpg``)
  are warnings: the row is used and the report says what was done.

Decoding every image is the slow part of validation, so verdicts are cached per image under
the run folder, keyed by file size and modification time; a second run only re-checks files
that changed.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from capfuse.data.classes import ClassSet
from capfuse.data.csvio import read_split
from capfuse.data.images import DEFAULT_MAX_PIXELS, UnsafePathError, check_image, resolve_image_path
from capfuse.data.problems import DataError, Problem
from capfuse.utils.io import read_json, write_json, write_text
from capfuse.utils.log import log, progress

# Bump when check_image's verdicts change meaning, so that cached verdicts are redone.
CHECK_VERSION = 2  # 2: image_too_large
REPORT_EXAMPLES = 200  # problems listed in the readable report (the JSON has all of them)


@dataclass
class ValidationResult:
    data_dir: Path
    train: pd.DataFrame  # ImageID, labels (list[int]), Caption, line: usable rows, file order
    test: pd.DataFrame  # ImageID, Caption, line, image_ok: every row of test.csv, file order
    quarantine: pd.DataFrame  # file, line, ImageID, codes, reason
    problems: list[Problem]
    classes: ClassSet
    summary: dict


def _check_images(
    data_dir: Path, ids: list[str], workers: int, cache_file: Path | None, show: bool, max_pixels: int
) -> dict[str, tuple[bool, list]]:
    cache: dict = {}
    if cache_file is not None and cache_file.exists():
        try:
            stored = read_json(cache_file)
            # A verdict holds for the pixel limit it was made under; another limit redoes them.
            if stored.get("version") == CHECK_VERSION and stored.get("max_pixels") == max_pixels:
                cache = stored["images"]
        except (ValueError, KeyError):
            cache = {}  # a damaged cache is only a slower run

    def one(image_id: str) -> tuple[str, dict]:
        path = resolve_image_path(data_dir, image_id)
        try:
            st = os.stat(path)
            # ctime and inode too: a copy that keeps size and mtime (cp -p, rsync -a) changes them.
            key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        except OSError:
            key = None
        hit = cache.get(image_id)
        if hit is not None and key is not None and hit["key"] == key:
            return image_id, hit
        ok, findings = check_image(path, max_pixels=max_pixels)
        return image_id, {"key": key, "ok": ok, "findings": [list(f) for f in findings]}

    verdicts: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for image_id, verdict in progress(pool.map(one, ids), "check images", total=len(ids), quiet=not show):
            verdicts[image_id] = verdict
    if cache_file is not None:
        write_json(
            cache_file,
            {
                "version": CHECK_VERSION,
                "max_pixels": max_pixels,
                "images": {k: v for k, v in verdicts.items() if v["key"] is not None},
            },
        )
    return {k: (v["ok"], [tuple(f) for f in v["findings"]]) for k, v in verdicts.items()}


def validate_dataset(
    data_dir: str | Path,
    *,
    strict: bool = False,
    workers: int = 2,
    progress_bar: bool = False,
    cache_dir: str | Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ValidationResult:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"{data_dir}: dataset folder not found (expected train.csv, test.csv and data/ inside; "
            f"`make data` generates the demo)"
        )
    if not (data_dir / "data").is_dir():
        raise DataError(f"{data_dir / 'data'}: image folder not found")
    train_rows, problems = read_split(data_dir / "train.csv", "train")
    test_rows, test_file_problems = read_split(data_dir / "test.csv", "test")
    problems += test_file_problems

    # Paths first: an id that escapes the data folder is never opened, not even stat'ed.
    safe: dict[str, bool] = {}
    for split, rows in (("train", train_rows), ("test", test_rows)):
        for row in rows:
            if not row.image_id:
                continue
            try:
                resolve_image_path(data_dir, row.image_id)
                safe[row.image_id] = True
            except UnsafePathError as exc:
                safe[row.image_id] = False
                row.problems.append(
                    Problem(str(data_dir / f"{split}.csv"), row.line, row.image_id, "unsafe_path", str(exc))
                )

    # Duplicates: the first occurrence is kept; later ones are unusable (train) or fatal (test,
    # where a submission needs exactly one prediction per id).
    seen: dict[str, int] = {}
    for row in train_rows:
        if row.image_id and row.image_id in seen:
            row.problems.append(
                Problem(
                    str(data_dir / "train.csv"),
                    row.line,
                    row.image_id,
                    "duplicate_id",
                    f"ImageID already on line {seen[row.image_id]}; this row is quarantined",
                )
            )
        seen.setdefault(row.image_id, row.line)
    test_seen: dict[str, int] = {}
    for row in test_rows:
        fatal = [p for p in row.problems if p.code in ("malformed_row", "unsafe_path")]
        if row.image_id in test_seen:
            raise DataError(
                f"{data_dir / 'test.csv'}:{row.line}: ImageID {row.image_id!r} is also on line "
                f"{test_seen[row.image_id]}; a submission needs one row per test image"
            )
        if fatal:
            raise DataError(f"test rows are never dropped, and this one cannot be predicted: {fatal[0]}")
        test_seen[row.image_id] = row.line

    ids = sorted({r.image_id for r in train_rows + test_rows if r.image_id and safe.get(r.image_id)})
    cache_file = Path(cache_dir) / "image_checks.json" if cache_dir is not None else None
    verdicts = _check_images(data_dir, ids, workers, cache_file, progress_bar, int(max_pixels))
    for split, rows in (("train", train_rows), ("test", test_rows)):
        name = str(data_dir / f"{split}.csv")
        for row in rows:
            if row.image_id in verdicts:
                for severity, code, message in verdicts[row.image_id][1]:
                    if split == "test" and severity == "error":
                        message += "; the row is kept and predicted from its caption"
                    row.problems.append(Problem(name, row.line, row.image_id, code, message, severity))

    usable = [r for r in train_rows if r.usable]
    bad = [r for r in train_rows if not r.usable]
    all_problems = problems + [p for r in train_rows + test_rows for p in r.problems]
    if strict and bad:
        listed = "\n  ".join(str(p) for r in bad[:20] for p in r.problems if p.severity == "error")
        raise DataError(f"strict mode: {len(bad)} train row(s) are unusable:\n  {listed}")
    if not usable:
        raise DataError(f"{data_dir / 'train.csv'}: no usable train row")

    classes = ClassSet.from_labels([r.labels for r in usable], data_dir / "classes.csv")
    train = pd.DataFrame(
        {
            "ImageID": [r.image_id for r in usable],
            "labels": [r.labels for r in usable],
            "Caption": [r.caption for r in usable],
            "line": [r.line for r in usable],
        }
    )
    test = pd.DataFrame(
        {
            "ImageID": [r.image_id for r in test_rows],
            "Caption": [r.caption for r in test_rows],
            "line": [r.line for r in test_rows],
            "image_ok": [bool(verdicts.get(r.image_id, (False, []))[0]) for r in test_rows],
        }
    )
    quarantine = pd.DataFrame(
        {
            "file": [str(data_dir / "train.csv")] * len(bad),
            "line": [r.line for r in bad],
            "ImageID": [r.image_id for r in bad],
            "codes": [" ".join(sorted({p.code for p in r.problems if p.severity == "error"})) for r in bad],
            "reason": ["; ".join(p.message for p in r.problems if p.severity == "error") for r in bad],
        },
        columns=["file", "line", "ImageID", "codes", "reason"],
    )

    counts = Counter(c for r in usable for c in r.labels)
    summary = {
        "data_dir": str(data_dir),
        "train_rows": len(train_rows),
        "train_usable": len(usable),
        "train_quarantined": len(bad),
        "test_rows": len(test_rows),
        "test_without_image": int((~test["image_ok"]).sum()),
        "test_empty_caption": int((test["Caption"] == "").sum()),
        "classes": [
            {"id": cid, "name": name, "train_count": counts.get(cid, 0)}
            for cid, name in zip(classes.ids, classes.names)
        ],
        "errors": dict(Counter(p.code for p in all_problems if p.severity == "error")),
        "warnings": dict(Counter(p.code for p in all_problems if p.severity == "warning")),
    }
    return ValidationResult(data_dir, train, test, quarantine, all_problems, classes, summary)


def format_report(result: ValidationResult) -> str:
    s = result.summary
    lines = [
        f"Validation of {s['data_dir']}",
        f"  train rows {s['train_rows']}: usable {s['train_usable']}, quarantined {s['train_quarantined']}",
        f"  test rows {s['test_rows']}: all kept; without a usable image {s['test_without_image']} "
        f"(predicted from the caption), empty caption {s['test_empty_caption']}",
        f"  classes {len(s['classes'])}: "
        + ", ".join(f"{c['id']}:{c['name']}({c['train_count']})" for c in s["classes"]),
    ]
    for kind in ("errors", "warnings"):
        if s[kind]:
            lines.append(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(s[kind].items())))
    if result.problems:
        lines.append("")
        lines.append(f"Findings ({len(result.problems)}; file:line: 'ImageID' [code] message):")
        lines += [f"  {p.severity.upper():7} {p}" for p in result.problems[:REPORT_EXAMPLES]]
        if len(result.problems) > REPORT_EXAMPLES:
            lines.append(f"  ... and {len(result.problems) - REPORT_EXAMPLES} more in validation.json")
    else:
        lines.append("No problems found.")
    return "\n".join(lines) + "\n"


def write_validation_report(result: ValidationResult, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    js = write_json(
        out_dir / "validation.json",
        {
            "summary": result.summary,
            "quarantine": result.quarantine.to_dict(orient="records"),
            "problems": [p.to_dict() for p in result.problems],
        },
    )
    txt = write_text(out_dir / "validation.txt", format_report(result))
    return js, txt


def load_validated(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    strict: bool = False,
    workers: int = 2,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ValidationResult:
    """Validate, write ``validation.json`` / ``validation.txt`` to ``out_dir``, log the gist."""
    result = validate_dataset(
        data_dir, strict=strict, workers=workers, progress_bar=progress, cache_dir=out_dir, max_pixels=max_pixels
    )
    write_validation_report(result, out_dir)
    s = result.summary
    log.info(
        "data %s: %d train rows usable, %d quarantined; %d test rows (%d without a usable image)",
        data_dir,
        s["train_usable"],
        s["train_quarantined"],
        s["test_rows"],
        s["test_without_image"],
    )
    if s["train_quarantined"] or s["test_without_image"]:
        log.warning("see %s for every finding", Path(out_dir) / "validation.txt")
    return result
