"""What a bundle predicts: a folder in the COMP5329 test layout, or images and captions in memory.

The rules are the pipeline's for test rows (``capfuse.data.validate``): no row is ever dropped;
an ImageID that escapes the folder, a malformed row or a duplicate id stops with the file and
line named, and the file is never opened; an image that cannot be read keeps its row, is flagged
(``image_ok`` False) and is predicted from its caption.
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
    problems: list[str]  # one line per flagged row, for the log and the manifest


def _check_images(data_dir: Path, ids: list[str], max_pixels: int, workers: int) -> tuple[np.ndarray, list[str]]:
    def one(image_id: str) -> tuple[bool, list]:
        return check_image(resolve_image_path(data_dir, image_id), max_pixels=max_pixels)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        verdicts = list(pool.map(one, ids))
    problems = [
        f"{image_id}: {message}; predicted from its caption"
        for image_id, (ok, findings) in zip(ids, verdicts)
        if not ok
        for severity, _, message in findings
        if severity == "error"
    ]
    return np.array([ok for ok, _ in verdicts], dtype=bool), problems


def read_test_folder(data_dir: str | Path, *, max_pixels: int | None = None, workers: int = 2) -> Rows:
    """``test.csv`` and ``data/`` of ``data_dir``, checked as the pipeline checks its test split."""
    data_dir = Path(data_dir)
    if not (data_dir / "data").is_dir():
        raise DataError(f"{data_dir / 'data'}: image folder not found (expected test.csv and data/ in {data_dir})")
    rows, problems = read_split(data_dir / "test.csv", "test")
    name = data_dir / "test.csv"
    seen: dict[str, int] = {}
    for row in rows:
        fatal = [p for p in row.problems if p.code == "malformed_row"]
        if fatal:
            raise DataError(f"test rows are never dropped, and this one cannot be predicted: {fatal[0]}")
        try:
            resolve_image_path(data_dir, row.image_id)
        except UnsafePathError as exc:
            raise DataError(
                f"{name}:{row.line}: {exc}; the file is not opened and the row cannot be predicted"
            ) from None
        if row.image_id in seen:
            raise DataError(
                f"{name}:{row.line}: ImageID {row.image_id!r} is also on line {seen[row.image_id]}; "
                "a submission needs one row per test image"
            )
        seen[row.image_id] = row.line
    if not rows:
        raise DataError(f"{name}: no rows to predict")
    ids = [r.image_id for r in rows]
    ok, flagged = _check_images(data_dir, ids, max_pixels or DEFAULT_MAX_PIXELS, workers)
    for line in flagged:
        log.warning("%s", line)
    return Rows(data_dir, ids, [r.caption for r in rows], ok, [str(p) for p in problems] + flagged)


def stage_inputs(folder: Path, images: list, captions: list | None, *, max_pixels: int | None = None) -> Rows:
    """Images (paths, PIL images or None) and captions written into ``folder`` in the test layout,
    so that they go through the same decoding and encoders as a folder does."""
    captions = [""] * len(images) if captions is None else list(captions)
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    bad = next((i for i, c in enumerate(captions) if c is not None and not isinstance(c, str)), None)
    if bad is not None:
        raise TypeError(f"caption {bad} is {type(captions[bad]).__name__}, not str")
    data = folder / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
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
    ok, problems = _check_images(folder, ids, max_pixels or DEFAULT_MAX_PIXELS, 2)
    return Rows(folder, ids, [c or "" for c in captions], ok, problems)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_image_folder(folder: str | Path, captions_csv: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """Every image of ``folder`` (or of ``folder/data``), sorted by name, and its caption from
    ``captions_csv`` (test.csv's format: ImageID, Caption; a missing caption is an empty one)."""
    folder = Path(folder)
    where = folder / "data" if (folder / "data").is_dir() else folder
    paths = sorted(p for p in where.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{where}: no test.csv beside it and no image ({', '.join(IMAGE_SUFFIXES)}) in it")
    captions: dict[str, str] = {}
    if captions_csv is not None:
        # test.csv's reader: COMP5329 captions hold unquoted commas that a plain CSV reader splits.
        rows, _ = read_split(captions_csv, "test")
        captions = {r.image_id: r.caption for r in rows}
    without = sum(p.name not in captions for p in paths)
    if without:
        log.warning(
            "%d of %d images have no caption: predicted from the image and an empty caption", without, len(paths)
        )
    return paths, [captions.get(p.name, "") for p in paths]
