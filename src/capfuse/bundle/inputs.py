"""What a bundle predicts: a folder in the COMP5329 test layout, or images and captions in memory.

The checks are the pipeline's (``capfuse.data.csvio.read_split``, ``resolve_image_path``,
``check_image``), and no row is ever dropped. Where ``capfuse validate`` stops on a test row it
cannot trust, predicting keeps going, since an inference notebook that stops scores nothing:
an ImageID that escapes the folder is never opened (not even stat'ed) and, like an image that
cannot be read, is flagged (``image_ok`` False) and predicted from its caption; a duplicate
ImageID keeps its row, in its place, and is flagged; an empty caption is flagged and predicted
from the image. Only a row without an ImageID stops, with the file and line named: a
submission has no way to name it.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capfuse.data.csvio import read_split
from capfuse.data.images import DEFAULT_MAX_PIXELS, UnsafePathError, check_image, resolve_image_path
from capfuse.data.problems import DataError
from capfuse.utils.log import log


@dataclass
class Rows:
    """Rows to predict: ``data_dir/data/<id>`` holds each image."""

    data_dir: Path
    ids: list[str]
    captions: list[str]
    image_ok: np.ndarray  # [N] bool
    problems: list[str]  # one line per finding, for the log and the manifest
    flags: list[str] | None = None  # [N] what was wrong with each row ("" for nothing)


def _image_flags(
    data_dir: Path, ids: list[str], max_pixels: int, workers: int, skip: set[int] = frozenset()
) -> tuple[np.ndarray, list[str]]:
    """Each image checked as the pipeline checks it (rows in ``skip`` are not opened): whether it
    is usable, and what is wrong with it ("" for nothing)."""

    def one(i: int) -> tuple[bool, list]:
        if i in skip:
            return False, []
        return check_image(resolve_image_path(data_dir, ids[i]), max_pixels=max_pixels)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        verdicts = list(pool.map(one, range(len(ids))))
    flags = [
        "; ".join(f"[{code}] {message}" for severity, code, message in findings if severity == "error")
        for _, findings in verdicts
    ]
    return np.array([ok for ok, _ in verdicts], dtype=bool), flags


def read_test_folder(data_dir: str | Path, *, max_pixels: int | None = None, workers: int = 2) -> Rows:
    """``test.csv`` and ``data/`` of ``data_dir``: every row, in order, flagged where it is faulty."""
    data_dir = Path(data_dir)
    if not (data_dir / "data").is_dir():
        raise DataError(f"{data_dir / 'data'}: image folder not found (expected test.csv and data/ in {data_dir})")
    rows, problems = read_split(data_dir / "test.csv", "test")
    name = data_dir / "test.csv"
    if not rows:
        raise DataError(f"{name}: no rows to predict")
    notes: list[list[str]] = [[] for _ in rows]
    unsafe: set[int] = set()
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        fatal = [p for p in row.problems if p.code == "malformed_row"]
        if fatal:
            raise DataError(f"test rows are never dropped, and this one cannot be predicted: {fatal[0]}")
        # Paths first: an id that escapes the data folder is never opened, not even stat'ed.
        try:
            resolve_image_path(data_dir, row.image_id)
        except UnsafePathError as exc:
            unsafe.add(i)
            notes[i].append(f"[unsafe_path] {exc}; the file is not opened")
        if row.image_id in seen:
            notes[i].append(f"[duplicate_id] ImageID also on line {seen[row.image_id]}; this row is predicted too")
        seen.setdefault(row.image_id, row.line)
        notes[i] += [f"[{p.code}] {p.message}" for p in row.problems if p.code == "empty_caption"]
    ids = [r.image_id for r in rows]
    ok, image_flags = _image_flags(data_dir, ids, max_pixels or DEFAULT_MAX_PIXELS, workers, unsafe)
    flags = []
    for i in range(len(rows)):
        parts = notes[i] + ([image_flags[i]] if image_flags[i] else [])
        if not ok[i]:
            parts.append("predicted from its caption")
        flags.append("; ".join(parts))
    lines = [f"{name}:{r.line}: {r.image_id!r} {f}" for r, f in zip(rows, flags) if f]
    for line in lines:
        log.warning("%s", line)
    return Rows(data_dir, ids, [r.caption for r in rows], ok, [str(p) for p in problems] + lines, flags)


def stage_inputs(folder: Path, images: list, captions: list | None, *, max_pixels: int | None = None) -> Rows:
    """Images (paths, PIL images or None) and captions written into ``folder`` in the test layout,
    so that they go through the same decoding and encoders as a folder does. ``folder`` must not
    hold a ``data/`` yet (the predictor gives each call a new one)."""
    captions = [""] * len(images) if captions is None else list(captions)
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    bad = next((i for i, c in enumerate(captions) if c is not None and not isinstance(c, str)), None)
    if bad is not None:
        raise TypeError(f"caption {bad} is {type(captions[bad]).__name__}, not str")
    data = folder / "data"
    data.mkdir(parents=True)  # a folder of its own: staging never clears what is already there
    ids = []
    for i, image in enumerate(images):
        if image is None:
            ids.append(f"{i:06d}.missing")
        elif isinstance(image, (str, Path)):
            # The file's own bytes: a JPEG decodes to the same pixels here as in a folder.
            ids.append(f"{i:06d}{Path(image).suffix.lower() or '.jpg'}")
            if Path(image).is_file():
                shutil.copyfile(image, data / ids[-1])
        elif hasattr(image, "save"):
            ids.append(f"{i:06d}.png")  # lossless: the pixels given are the pixels encoded
            image.save(data / ids[-1], format="PNG")
        else:
            raise TypeError(f"image {i} is {type(image).__name__}: give a path, a PIL image or None")
    ok, flags = _image_flags(folder, ids, max_pixels or DEFAULT_MAX_PIXELS, 2)
    flags = [f"{f}; predicted from its caption" if f else "" for f in flags]
    return Rows(folder, ids, [c or "" for c in captions], ok, [f"{i}: {f}" for i, f in zip(ids, flags) if f], flags)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_image_folder(
    folder: str | Path, captions_csv: str | Path | None = None
) -> tuple[list[Path | None], list[str], list[str]]:
    """Every image of ``folder`` (or of ``folder/data``), sorted by name, with its caption from
    ``captions_csv`` (test.csv's format: ImageID, Caption; a missing caption is an empty one),
    then every row of ``captions_csv`` whose image the folder lacks, in the file's order, with
    None for its image: it is predicted from its caption and flagged, never dropped.
    Returns (image paths, captions, row ids)."""
    folder = Path(folder)
    where = folder / "data" if (folder / "data").is_dir() else folder
    paths = sorted(p for p in where.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{where}: no test.csv beside it and no image ({', '.join(IMAGE_SUFFIXES)}) in it")
    for p in paths:
        try:
            p.name.encode("utf-8")
        except UnicodeEncodeError:
            # A name that is not UTF-8 cannot be written back as the same ImageID into a UTF-8
            # submission: it would come back altered, so it is refused before any work.
            raise DataError(f"{p.parent / ascii(p.name)}: the file name is not UTF-8; rename it") from None
    captions: dict[str, str] = {}
    orphans: list[str] = []
    if captions_csv is not None:
        # test.csv's reader: COMP5329 captions hold unquoted commas that a plain CSV reader splits.
        rows, _ = read_split(captions_csv, "test")
        lines: dict[str, int] = {}
        names = {p.name for p in paths}
        for r in rows:
            if r.image_id in lines:
                raise DataError(
                    f"{captions_csv}:{r.line}: ImageID {r.image_id!r} also on line {lines[r.image_id]}; "
                    "give each image one caption"
                )
            lines[r.image_id] = r.line
            captions[r.image_id] = r.caption
            if r.image_id not in names:
                orphans.append(r.image_id)
    without = sum(p.name not in captions for p in paths)
    if without:
        log.warning(
            "%d of %d images have no caption: predicted from the image and an empty caption", without, len(paths)
        )
    if orphans:
        log.warning(
            "%d rows of %s have no image in %s: predicted from their caption and flagged",
            len(orphans),
            captions_csv,
            where,
        )
    images: list[Path | None] = [*paths, *[None] * len(orphans)]
    ids = [p.name for p in paths] + orphans
    return images, [captions.get(i, "") for i in ids], ids
