"""``capfuse predict`` on a folder of images with captions from a CSV: every CSV row is kept (one
without an image is predicted from its caption), a duplicated ImageID is an error naming both
lines, and a file name that would come back altered is refused."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from capfuse.bundle.inputs import read_image_folder
from capfuse.data.problems import DataError


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), "red").save(folder / name)


def test_a_caption_row_without_an_image_is_kept_after_the_images(tmp_path):
    _images(tmp_path / "imgs", ["b.jpg", "a.jpg"])
    csv = tmp_path / "captions.csv"
    csv.write_text("ImageID,Caption\nz.jpg,a dog, on a bus\na.jpg,a red square\ny.jpg,two cats\n", encoding="utf-8")
    images, captions, ids = read_image_folder(tmp_path / "imgs", csv)
    assert ids == ["a.jpg", "b.jpg", "z.jpg", "y.jpg"]
    assert [p.name if p else None for p in images] == ["a.jpg", "b.jpg", None, None]
    assert captions == ["a red square", "", "a dog, on a bus", "two cats"]


def test_a_duplicated_caption_id_names_both_lines(tmp_path):
    _images(tmp_path / "imgs", ["a.jpg"])
    csv = tmp_path / "captions.csv"
    csv.write_text("ImageID,Caption\na.jpg,first\nb.jpg,other\na.jpg,second\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"captions.csv:4: ImageID 'a.jpg' also on line 2"):
        read_image_folder(tmp_path / "imgs", csv)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_a_file_name_that_is_not_utf8_is_refused_not_rewritten(tmp_path):
    _images(tmp_path / "imgs", ["a.jpg"])
    raw = os.path.join(os.fsencode(tmp_path / "imgs"), b"caf\xe9.jpg")
    with open(os.path.join(os.fsencode(tmp_path / "imgs"), b"a.jpg"), "rb") as src, open(raw, "wb") as dst:
        dst.write(src.read())
    with pytest.raises(DataError, match="not UTF-8"):
        read_image_folder(tmp_path / "imgs")
