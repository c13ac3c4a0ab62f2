"""An extra folder of unlabelled images for pseudo-label rounds, with or without captions.

Layout (the COMP5329 one, minus labels)::

    FOLDER/data/<ImageID>        the images
    FOLDER/unlabelled.csv        optional: ImageID[,Caption]; without it every image in data/ is used

A row without a caption gets the empty caption, which caption encoders read as "nothing said";
the image branch still learns from the row. Ids that clash with train or test ids, repeated
ids and ids that point outside the folder are errors naming the file and the line; an image
that is missing or unreadable only leaves the pool, with a warning naming it, since nothing
is submitted for these rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from capfuse.data.csvio import split_lines
from capfuse.data.images import DEFAULT_MAX_PIXELS, UnsafePathError, check_image, resolve_image_path
from capfuse.data.problems import DataError
from capfuse.utils.log import log

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CSV_NAME = "unlabelled.csv"


def read_unlabelled_csv(path: Path) -> pd.DataFrame:
    """ImageID and Caption of each line; the caption is everything after the first comma.

    Captions in this layout carry unquoted commas, so the line is split once, not parsed as
    CSV; surrounding double quotes are removed and doubled ones unescaped.
    """
    lines = split_lines(path.read_bytes().decode("utf-8-sig"))  # a lone \r stays in its caption
    if not lines or lines == [""]:
        raise DataError(f"{path}: empty file; expected a header `ImageID` or `ImageID,Caption`")
    header = [h.strip() for h in lines[0].split(",", 1)]
    if header[0] != "ImageID" or (len(header) == 2 and header[1] != "Caption"):
        raise DataError(f"{path} line 1: header is {lines[0]!r}; expected `ImageID` or `ImageID,Caption`")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        image_id, _, caption = line.partition(",") if len(header) == 2 else (line, "", "")
        caption = caption.strip()
        if len(caption) >= 2 and caption[0] == caption[-1] == '"':
            caption = caption[1:-1].replace('""', '"')
        rows.append({"ImageID": image_id.strip(), "Caption": caption, "line": number})
    return pd.DataFrame(rows, columns=["ImageID", "Caption", "line"])


def load_unlabelled(
    folder: str | Path, known_ids: set[str], workers: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS
) -> pd.DataFrame:
    """The usable rows of ``folder``: ImageID, Caption, image_ok (always True here), line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"unlabelled folder {folder} does not exist (data.unlabelled)")
    csv = folder / CSV_NAME
    if csv.exists():
        table, source = read_unlabelled_csv(csv), csv
    else:
        images = sorted(p.name for p in (folder / "data").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        table = pd.DataFrame({"ImageID": images, "Caption": "", "line": 0})
        source = folder / "data"
    if table.empty:
        raise DataError(f"{source}: no unlabelled image listed")
    where = (lambda r: f"{source} line {r.line}") if csv.exists() else (lambda r: f"{source}/{r.ImageID}")
    dup = table[table["ImageID"].duplicated()]
    if len(dup):
        r = dup.iloc[0]
        raise DataError(f"{where(r)}: ImageID {r.ImageID!r} is listed twice")
    clash = table[table["ImageID"].isin(known_ids)]
    if len(clash):
        r = clash.iloc[0]
        raise DataError(
            f"{where(r)}: ImageID {r.ImageID!r} is also a train or test id; an unlabelled image "
            "must be a new one (rename it, or leave it out)"
        )
    paths = []
    for r in table.itertuples():
        try:
            paths.append(resolve_image_path(folder, r.ImageID))
        except UnsafePathError as exc:
            raise DataError(f"{where(r)}: {exc}") from None
    with ThreadPoolExecutor(max(1, workers)) as pool:
        verdicts = list(pool.map(lambda p: check_image(p, max_pixels=max_pixels), paths))
    ok = [v[0] for v in verdicts]
    for r, (good, findings) in zip(table.itertuples(), verdicts):
        if not good:
            log.warning(
                "%s: %s; left out of the unlabelled pool",
                where(r),
                "; ".join(m for sev, _, m in findings if sev == "error"),
            )
    table = table.assign(image_ok=ok)
    kept = table[table["image_ok"]].reset_index(drop=True)
    log.info(
        "unlabelled pool %s: %d images (%d left out), %d with a caption",
        folder,
        len(kept),
        len(table) - len(kept),
        int((kept["Caption"] != "").sum()),
    )
    return kept
