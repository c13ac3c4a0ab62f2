"""A small dataset that carries every fault the data layer knows, for tests and for users.

``make faulty`` writes it to ``data/faulty``; ``make validate DATA=data/faulty`` then shows the
report, and ``make all DATA=data/faulty`` shows that the pipeline still writes a submission
with one row per test image. The clean rows are real demo samples, so the models have
something to learn; the faults are injected on top:

* file level: UTF-8 BOM, CRLF line ends, blank trailing lines, stray spaces around fields and
  labels, a caption that a tool re-saved with CSV quoting, a line with a byte that is not UTF-8;
* train rows: missing image, zero-byte, truncated JPEG, undecodable JPEG, text behind ``.jpg``,
  a label that is not an integer, no labels, a duplicate ImageID, ``../`` and absolute ids;
* repairs that keep the row: PNG bytes behind ``.jpg``, modes L, LA, P (with transparency),
  RGBA, CMYK and 16-bit greyscale, an EXIF-rotated JPEG, an empty caption;
* test rows: a missing, a truncated and a non-image file, and an empty caption; all of them
  must still get a prediction.

A file ``escape.jpg`` is written beside the dataset folder: the ``../escape.jpg`` id must never
open it.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from capfuse.data.demo import CLASSES, generate_sample

# ImageID -> the code(s) validation must report for it; tests read this table.
EXPECTED_TRAIN = {
    "missing.jpg": "missing_image",
    "zero.jpg": "zero_byte_image",
    "truncated.jpg": "truncated_image",
    "corrupt.jpg": "undecodable_image",
    "text.jpg": "not_an_image",
    "badlabel.jpg": "bad_label",
    "nolabel.jpg": "no_labels",
    "../escape.jpg": "unsafe_path",
    "/etc/hostname": "unsafe_path",
    "dup.jpg": "duplicate_id",
}
EXPECTED_WARNINGS = {
    "png_as.jpg": "format_mismatch",
    "mode_l.jpg": "mode_converted",
    "mode_la.png": "mode_converted",
    "mode_p.png": "mode_converted",
    "mode_rgba.png": "mode_converted",
    "mode_cmyk.jpg": "mode_converted",
    "mode_i16.png": "mode_converted",
    "rotated.jpg": "exif_rotated",
    "nocaption.jpg": "empty_caption",
    "latin1.jpg": "bad_encoding",
}
EXPECTED_TEST = {
    "t_missing.jpg": "missing_image",
    "t_truncated.jpg": "truncated_image",
    "t_text.jpg": "not_an_image",
}


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_faulty_dataset(
    out_dir: str | Path, seed: int = 0, n_clean: int = 60, n_test: int = 24, size: int = 64
) -> dict:
    """Write the faulty dataset to ``out_dir`` (replacing it) and return the expectations."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    (out.parent / "escape.jpg").write_bytes(b"outside the data folder; must never be opened")

    def sample(split: str, i: int) -> tuple[Image.Image, list[int], str]:
        return generate_sample(seed, split, i, size)

    train_lines: list[bytes] = []
    labels_of: dict[str, list[int]] = {}
    for i in range(n_clean):
        img, labels, caption = sample("train", i)
        (out / "data" / f"{i}.jpg").write_bytes(_jpeg(img))
        lab = " ".join(map(str, labels))
        if i % 7 == 1:  # stray spaces around fields and between labels
            lab = "  " + lab.replace(" ", "   ") + " "
            train_lines.append(f" {i}.jpg ,{lab}, {caption} ".encode())
        elif i % 11 == 2:  # re-saved by a tool that quotes: the caption comes back unquoted
            train_lines.append(f'{i}.jpg,{lab},"{caption.replace(chr(34), 2 * chr(34))}"'.encode())
        else:
            train_lines.append(f"{i}.jpg,{lab},{caption}".encode())
        labels_of[f"{i}.jpg"] = labels

    # Faulty rows reuse clean samples' pictures, so usable ones are still sensible examples.
    base_img, base_labels, base_caption = sample("train", n_clean)
    lab = " ".join(map(str, base_labels))
    jpg = _jpeg(base_img)
    files = {
        "zero.jpg": b"",
        "truncated.jpg": jpg[: len(jpg) // 2],
        "corrupt.jpg": jpg[:200] + bytes(np.random.default_rng(seed).integers(0, 256, len(jpg) - 200, dtype=np.uint8)),
        "text.jpg": b"ImageID,Labels,Caption\nthis is a CSV, not a picture\n",
        "badlabel.jpg": jpg,
        "nolabel.jpg": jpg,
        "dup.jpg": jpg,
        "nocaption.jpg": jpg,
        "latin1.jpg": jpg,
        "png_as.jpg": _png(base_img),
        "mode_l.jpg": _jpeg(base_img.convert("L")),
        "mode_cmyk.jpg": _jpeg(base_img.convert("CMYK")),
        "mode_la.png": _png(base_img.convert("LA")),
        "mode_rgba.png": _png(base_img.convert("RGBA")),
        "mode_i16.png": _png(Image.fromarray(np.asarray(base_img.convert("L"), np.uint16) * 257)),
    }
    p_img = base_img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    p_img.info["transparency"] = 0
    files["mode_p.png"] = _png(p_img)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the viewer must turn it 90 degrees clockwise
    files["rotated.jpg"] = _jpeg(base_img.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    for name, data in files.items():
        (out / "data" / name).write_bytes(data)

    for name in [
        "zero.jpg",
        "truncated.jpg",
        "corrupt.jpg",
        "text.jpg",
        "missing.jpg",
        "png_as.jpg",
        "mode_l.jpg",
        "mode_cmyk.jpg",
        "mode_la.png",
        "mode_rgba.png",
        "mode_i16.png",
        "mode_p.png",
        "rotated.jpg",
        "dup.jpg",
        "../escape.jpg",
        "/etc/hostname",
    ]:
        train_lines.append(f"{name},{lab},{base_caption}".encode())
        labels_of[name] = base_labels
    train_lines += [
        f"badlabel.jpg,{base_labels[0]} x7,{base_caption}".encode(),
        f"nolabel.jpg,,{base_caption}".encode(),
        f"nocaption.jpg,{lab},".encode(),
        f"dup.jpg,{lab},the same picture listed a second time".encode(),
        f"latin1.jpg,{lab},".encode() + 'a caf\xe9 by the road, with a "vintage" car'.encode("latin-1"),
    ]
    labels_of["nocaption.jpg"] = labels_of["latin1.jpg"] = base_labels

    test_lines, test_labels = [], []
    start = 10_000
    for i in range(n_test):
        img, labels, caption = sample("test", i)
        iid = f"{start + i}.jpg"
        (out / "data" / iid).write_bytes(_jpeg(img))
        test_lines.append(f"{iid},{caption if i != 3 else ''}".encode())
        test_labels.append(f"{iid},{' '.join(map(str, labels))}")
    for iid, data in (("t_missing.jpg", None), ("t_truncated.jpg", jpg[: len(jpg) // 3]), ("t_text.jpg", b"hello")):
        if data is not None:
            (out / "data" / iid).write_bytes(data)
        test_lines.append(f"{iid},{base_caption}".encode())
        test_labels.append(f"{iid},{lab}")

    bom, crlf = b"\xef\xbb\xbf", b"\r\n"
    (out / "train.csv").write_bytes(bom + crlf.join([b"ImageID,Labels,Caption", *train_lines]) + crlf + crlf + crlf)
    (out / "test.csv").write_bytes(bom + crlf.join([b"ImageID , Caption", *test_lines]) + crlf + b"  " + crlf)
    (out / "test_labels.csv").write_text("ImageID,Labels\n" + "\n".join(test_labels) + "\n", encoding="utf-8")
    (out / "classes.csv").write_text(
        "id,name\n" + "".join(f"{cid},{name}\n" for cid, name in CLASSES), encoding="utf-8"
    )
    return {"train": EXPECTED_TRAIN, "warnings": EXPECTED_WARNINGS, "test": EXPECTED_TEST}
