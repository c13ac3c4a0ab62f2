"""Validation policy on a dataset with every known fault, and the pipeline's promises around it.

The checks read what validation writes (``validation.json``, ``validation.txt``) and what the
pipeline gets from it (the usable train rows, the test rows' ``image_ok``), never which Pillow
call was made: a validator that opened images differently but decided the same would pass, and
one that decided differently would fail.
"""

import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capfuse.data.faults import make_faulty_dataset
from capfuse.data.images import load_array
from capfuse.data.problems import DataError
from capfuse.data.validate import load_validated, validate_dataset


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    expected = make_faulty_dataset(root / "faulty")
    return root / "faulty", expected


def _written(out: Path) -> tuple[dict, str]:
    return json.loads((out / "validation.json").read_text(encoding="utf-8")), (out / "validation.txt").read_text()


def test_every_fault_is_reported_with_its_code_and_line(faulty, tmp_path):
    data, expected = faulty
    result = load_validated(data, tmp_path)
    report, text = _written(tmp_path)
    quarantined = {row["ImageID"]: row for row in report["quarantine"]}
    # Exactly the faulty train rows are quarantined, each with its code and its train.csv line.
    assert set(quarantined) == set(expected["train"])
    lines = (data / "train.csv").read_bytes().decode("utf-8", "replace").splitlines()
    for image_id, code in expected["train"].items():
        row = quarantined[image_id]
        assert code in row["codes"].split(), (image_id, row)
        assert row["file"].endswith("train.csv") and lines[row["line"] - 1].strip().startswith(image_id)
        assert f"train.csv:{row['line']}: {image_id!r} [{code}]" in text
    # The first dup.jpg row is fine; only the later one is quarantined, and the pipeline gets the first.
    assert quarantined["dup.jpg"]["line"] > min(i for i, ln in enumerate(lines, 1) if ln.startswith("dup.jpg"))
    assert list(result.train["ImageID"]).count("dup.jpg") == 1
    warnings = {(p["image_id"], p["code"]) for p in report["problems"] if p["severity"] == "warning"}
    for image_id, code in expected["warnings"].items():
        assert (image_id, code) in warnings
        assert image_id in set(result.train["ImageID"])  # repaired rows are used
    assert all(p["line"] is not None and p["file"].endswith(".csv") for p in report["problems"])
    assert report["summary"]["train_quarantined"] == len(expected["train"]) == len(report["quarantine"])
    assert f"quarantined {len(expected['train'])}" in text
    assert len(result.train) + len(expected["train"]) == report["summary"]["train_rows"]


# -- one image of each kind, the verdict read from the written report ---------------------------
def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _picture(seed: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


# ImageID -> (the file's bytes, the error code that quarantines the row, or None: the row is used,
# with these warning codes)
def _image_cases() -> dict[str, tuple[bytes, str | None, set[str]]]:
    jpg = _encode(_picture(0), "JPEG")
    return {
        "good.jpg": (jpg, None, set()),
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated_image", set()),
        "zero.jpg": (b"", "zero_byte_image", set()),
        "png_named.jpg": (_encode(_picture(1), "PNG"), None, {"format_mismatch"}),
        "words.jpg": (b"this file holds words, not pixels\n", "not_an_image", set()),
        # 10000 x 6000 = 60 Mpx, over the 50 Mpx default; a 1-bit PNG keeps the file small.
        "huge.png": (_encode(Image.new("1", (10_000, 6_000)), "PNG"), "image_too_large", set()),
        "cmyk.jpg": (_encode(_picture(2).convert("CMYK"), "JPEG"), None, {"mode_converted"}),
        "grey.jpg": (_encode(_picture(3).convert("L"), "JPEG"), None, {"mode_converted"}),
    }


@pytest.fixture(scope="module")
def image_cases(tmp_path_factory):
    data = tmp_path_factory.mktemp("kinds") / "kinds"
    (data / "data").mkdir(parents=True)
    cases = _image_cases()
    for name, (raw, _, _) in cases.items():
        (data / "data" / name).write_bytes(raw)
    train = ["ImageID,Labels,Caption"] + [f"{name},{1 + i % 3},a picture number {i}" for i, name in enumerate(cases)]
    (data / "train.csv").write_text("\n".join(train) + "\n", encoding="utf-8")
    (data / "test.csv").write_text(
        "ImageID,Caption\n" + "".join(f"{name},a test picture\n" for name in cases), encoding="utf-8"
    )
    out = data.parent / "out"
    result = load_validated(data, out)
    return data, cases, result, *_written(out)


def test_each_kind_of_bad_image_is_quarantined_with_its_code(image_cases):
    data, cases, result, report, text = image_cases
    bad = {name: code for name, (_, code, _) in cases.items() if code is not None}
    quarantined = {row["ImageID"]: row["codes"].split() for row in report["quarantine"]}
    assert quarantined == {name: [code] for name, code in bad.items()}
    train_lines = (data / "train.csv").read_text().splitlines()
    for row in report["quarantine"]:
        assert train_lines[row["line"] - 1].startswith(row["ImageID"] + ",")  # the line names the row
        assert f"ERROR   {data / 'train.csv'}:{row['line']}: {row['ImageID']!r} [{row['codes']}]" in text
    assert re.search(r"'huge\.png' \[image_too_large\] 10000×6000 = 60 Mpx, over data\.max_pixels", text)
    assert report["summary"]["train_quarantined"] == len(bad)
    assert report["summary"]["errors"] == {code: 2 for code in bad.values()}  # the train and the test row


def test_repairable_images_are_used_as_rgb_with_a_warning_each(image_cases):
    data, cases, result, report, text = image_cases
    used = [name for name, (_, code, _) in cases.items() if code is None]
    assert list(result.train["ImageID"]) == used  # file order, nothing else
    for name in used:
        found = {(p["severity"], p["code"]) for p in report["problems"] if p["image_id"] == name}
        assert found == {("warning", code) for code in cases[name][2]}, name
        arr = load_array(data / "data" / name, 32)  # what the encoders will see
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    grey = load_array(data / "data" / "grey.jpg", 32).astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert "WARNING " + str(data / "train.csv") in text


def test_test_rows_with_a_bad_image_keep_their_place_and_lose_only_the_image(image_cases):
    _, cases, result, report, _ = image_cases
    assert list(result.test["ImageID"]) == list(cases)
    flagged = dict(zip(result.test["ImageID"], result.test["image_ok"]))
    assert flagged == {name: code is None for name, (_, code, _) in cases.items()}
    assert report["summary"]["test_rows"] == len(cases)
    assert report["summary"]["test_without_image"] == sum(code is not None for _, code, _ in cases.values())
    test_errors = [p for p in report["problems"] if p["file"].endswith("test.csv") and p["severity"] == "error"]
    assert all(p["message"].endswith("the row is kept and predicted from its caption") for p in test_errors)


# -- escaping ids ----------------------------------------------------------------------------
_OPENED: list[str] = []
_AUDITING: list[bool] = []
_HOOKED: list[bool] = []


def _audit(event: str, args: tuple) -> None:
    # Every file this process opens, whichever library opens it (builtins.open, os.open, io).
    if _AUDITING and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.realpath(os.fsdecode(args[0])))


@pytest.fixture()
def opened_files():
    if not _HOOKED:
        sys.addaudithook(_audit)  # a hook cannot be removed: it records only while _AUDITING holds
        _HOOKED.append(True)
    _OPENED.clear()
    _AUDITING.append(True)
    try:
        yield _OPENED
    finally:
        _AUDITING.clear()


def test_escaping_ids_are_quarantined_and_never_opened(faulty, tmp_path, opened_files):
    data, _ = faulty
    load_validated(data, tmp_path)
    report, text = _written(tmp_path)
    unsafe = {row["ImageID"] for row in report["quarantine"] if "unsafe_path" in row["codes"].split()}
    assert unsafe == {"../escape.jpg", "/etc/hostname"}
    escape = os.path.realpath(data.parent / "escape.jpg")
    assert os.path.realpath(data / "data" / "0.jpg") in opened_files  # the record sees image opens
    assert escape not in opened_files and "/etc/hostname" not in opened_files
    # Neither gets a verdict in the image cache: they were never looked at.
    cached = json.loads((tmp_path / "image_checks.json").read_text())["images"]
    assert not unsafe & set(cached)


def test_test_rows_are_never_dropped(faulty, tmp_path):
    data, expected = faulty
    result = validate_dataset(data)
    lines = [ln for ln in (data / "test.csv").read_bytes().decode("utf-8-sig").splitlines()[1:] if ln.strip()]
    assert list(result.test["ImageID"]) == [ln.split(",", 1)[0].strip() for ln in lines]
    bad = set(result.test.loc[~result.test["image_ok"], "ImageID"])
    assert bad == set(expected["test"])


def test_strict_mode_fails_and_names_rows(faulty):
    data, _ = faulty
    with pytest.raises(DataError, match=r"(?s)strict mode: 10 train row\(s\).*train.csv:\d+"):
        validate_dataset(data, strict=True)


def test_duplicate_test_id_is_an_error_naming_both_lines(faulty, tmp_path):
    data, _ = faulty
    copy = tmp_path / "dup"
    shutil.copytree(data, copy)
    with open(copy / "test.csv", "ab") as fh:
        fh.write(b"10000.jpg,again\n")
    with pytest.raises(DataError, match=r"test.csv:\d+: ImageID '10000.jpg' is also on line 2"):
        validate_dataset(copy)


def test_image_verdicts_are_cached_and_redone_when_a_file_changes(faulty, tmp_path, monkeypatch):
    data, _ = faulty
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    load_validated(copy, tmp_path / "out")
    import capfuse.data.validate as v

    calls = []
    real = v.check_image
    monkeypatch.setattr(v, "check_image", lambda path, *a, **k: calls.append(path.name) or real(path, *a, **k))
    load_validated(copy, tmp_path / "out")
    assert sorted(calls) == ["missing.jpg", "t_missing.jpg"]
    (copy / "data" / "zero.jpg").write_bytes((copy / "data" / "0.jpg").read_bytes())
    calls.clear()
    result = load_validated(copy, tmp_path / "out")
    assert "zero.jpg" in calls and "zero.jpg" in set(result.train["ImageID"])
    report, _ = _written(tmp_path / "out")
    assert "zero.jpg" not in {row["ImageID"] for row in report["quarantine"]}  # the new verdict is written


def test_missing_folder_messages(tmp_path):
    with pytest.raises(DataError, match="make data"):
        validate_dataset(tmp_path / "nowhere")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="image folder not found"):
        validate_dataset(tmp_path / "x")
