"""The bundled demo dataset: layout, the caption quirk, determinism, label statistics, idempotence."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capfuse.data.demo import (
    CLASSES,
    PRESETS,
    STAMP_NAME,
    generate_sample,
    make_demo,
    sample_labels,
)

TINY = PRESETS["tiny"]
COCO_IDS = [i for i in range(1, 20) if i != 12]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "tiny"
    summary = make_demo(out, **TINY, seed=0, workers=2)
    return out, summary


def lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    return text.split("\n")[:-1]


def read_train_rows(folder: Path) -> list[tuple[str, list[int], str]]:
    # The competition rule: everything after the 2nd comma is the caption.
    rows = []
    for line in lines(folder / "train.csv")[1:]:
        image_id, labels, caption = line.split(",", 2)
        rows.append((image_id, [int(x) for x in labels.split()], caption))
    return rows


def read_test_rows(folder: Path) -> list[tuple[str, str]]:
    # ... and after the 1st comma in test.csv.
    return [tuple(line.split(",", 1)) for line in lines(folder / "test.csv")[1:]]


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file; the stamp is left out because it records the elapsed time."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STAMP_NAME
    }


def test_layout(tiny):
    out, summary = tiny
    n_train, n_test, size = TINY["n_train"], TINY["n_test"], TINY["size"]
    for name in ("train.csv", "test.csv", "test_labels.csv", "classes.csv", STAMP_NAME):
        assert (out / name).is_file(), name
    assert lines(out / "train.csv")[0] == "ImageID,Labels,Caption"
    assert lines(out / "test.csv")[0] == "ImageID,Caption"
    assert lines(out / "test_labels.csv")[0] == "ImageID,Labels"
    assert lines(out / "classes.csv")[0] == "id,name"

    train_ids = [r[0] for r in read_train_rows(out)]
    test_ids = [r[0] for r in read_test_rows(out)]
    assert train_ids == [f"{i}.jpg" for i in range(n_train)]
    assert test_ids == [f"{i}.jpg" for i in range(n_train, n_train + n_test)]  # continue, as in COMP5329
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(train_ids + test_ids)
    for image_id in train_ids + test_ids:
        with Image.open(out / "data" / image_id) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (size, size)
    # written beside and renamed: no temporary folder is left behind
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert summary["n_train"] == n_train and summary["n_test"] == n_test and not summary["skipped"]


def test_captions_carry_the_quirk_and_parse_back(tiny):
    out, _ = tiny
    train, test = read_train_rows(out), read_test_rows(out)
    captions = [c for *_, c in train] + [c for _, c in test]
    assert any("," in c for c in captions)
    assert any('"' in c for c in captions)
    # Splitting at the 2nd / 1st comma recovers exactly what the generator made.
    for i, (_, labels, caption) in enumerate(train):
        _, want_labels, want_caption = generate_sample(0, "train", i, TINY["size"])
        assert (labels, caption) == (want_labels, want_caption)
    for i, (_, caption) in enumerate(test):
        assert caption == generate_sample(0, "test", i, TINY["size"])[2]
    # ... whereas a standard CSV reader sees extra fields: the file is not valid quoted CSV.
    with open(out / "train.csv", newline="", encoding="utf-8") as fh:
        assert any(len(row) != 3 for row in csv.reader(fh))


def test_deterministic_whatever_the_workers(tiny, tmp_path):
    out, _ = tiny
    reference = digest(out)
    assert len(reference) == TINY["n_train"] + TINY["n_test"] + 4
    make_demo(tmp_path / "one", **TINY, seed=0, workers=1)
    make_demo(tmp_path / "again", **TINY, seed=0, workers=2)
    assert digest(tmp_path / "one") == reference
    assert digest(tmp_path / "again") == reference
    make_demo(tmp_path / "other", **TINY, seed=1, workers=2)
    other = digest(tmp_path / "other")
    assert other["train.csv"] != reference["train.csv"]
    assert other["data/0.jpg"] != reference["data/0.jpg"]


def test_classes_and_label_statistics(tiny):
    out, summary = tiny
    rows = [line.split(",") for line in lines(out / "classes.csv")[1:]]
    assert [int(i) for i, _ in rows] == COCO_IDS
    assert [(int(i), n) for i, n in rows] == CLASSES
    assert dict(CLASSES)[1] == "person" and dict(CLASSES)[19] == "horse"

    train = read_train_rows(out)
    assert all(1 <= len(labels) <= 5 and labels == sorted(set(labels)) for _, labels, _ in train)
    counts = Counter(c for _, labels, _ in train for c in labels)
    assert set(counts) == set(COCO_IDS)  # every class appears in the tiny train split ...
    assert min(counts.values()) >= 2  # ... at least twice
    assert counts.most_common(1)[0][0] == 1  # person dominates
    assert summary["class_counts"] == {name: counts[cid] for cid, name in CLASSES}


def test_label_tables_are_long_tailed():
    # The tables themselves (no drawing, so many samples are cheap): a dominant person class,
    # rare classes at a few percent, a few labels per image.
    n = 4000
    draws = [sample_labels(np.random.default_rng([7, 0, i]))[1] for i in range(n)]
    freq = Counter(c for labels in draws for c in labels)
    share = {c: freq[c] / n for _, c in CLASSES}
    assert 0.60 <= share["person"] <= 0.75
    assert share["person"] == max(share.values())
    assert min(share.values()) < 0.03 and all(v > 0.005 for v in share.values())
    assert 2.3 <= np.mean([len(x) for x in draws]) <= 3.0


def test_test_labels_cover_exactly_the_test_ids(tiny):
    out, _ = tiny
    test_ids = [image_id for image_id, _ in read_test_rows(out)]
    rows = [line.split(",") for line in lines(out / "test_labels.csv")[1:]]
    assert [image_id for image_id, _ in rows] == test_ids
    for i, (_, labels) in enumerate(rows):
        ids = [int(x) for x in labels.split()]
        assert ids and set(ids) <= set(COCO_IDS)
        assert ids == generate_sample(0, "test", i, TINY["size"])[1]


def test_second_call_is_a_no_op(tmp_path):
    out = tmp_path / "tiny"
    first = make_demo(out, **TINY, seed=0, workers=2)
    stamp = out / STAMP_NAME
    before, mtime = digest(out), stamp.stat().st_mtime_ns
    again = make_demo(out, **TINY, seed=0, workers=2)
    assert again["skipped"] and again["seconds"] < 1.0
    assert stamp.stat().st_mtime_ns == mtime and digest(out) == before
    assert again["class_counts"] == first["class_counts"]
    # Other parameters, or force, regenerate in place.
    changed = make_demo(out, **TINY, seed=1, workers=2)
    assert not changed["skipped"] and digest(out) != before
    assert not make_demo(out, **TINY, seed=1, workers=2, force=True)["skipped"]


def test_a_killed_generators_staging_folder_goes_and_a_live_ones_stays(tmp_path):
    """``make data`` killed mid-way leaves ``.<name>.tmp-<pid>``: the next run removes it, unless
    its writer still holds it (another generator at work), whatever PID its name carries."""
    from capfuse.utils.lock import hold_folder

    dead = tmp_path / ".tiny.tmp-1"  # PID 1 runs, but nobody holds the folder: abandoned
    live = tmp_path / ".tiny.tmp-999999999"  # no such PID, but held below
    for folder in (dead, live):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "0.jpg").write_bytes(b"half written")
    with hold_folder(live):
        make_demo(tmp_path / "tiny", **TINY, seed=0, workers=1)
    assert not dead.exists()
    assert (live / "data" / "0.jpg").read_bytes() == b"half written"
    assert (tmp_path / "tiny" / STAMP_NAME).exists()


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.csv").write_text("ImageID,Labels,Caption\n")
    with pytest.raises(FileExistsError):
        make_demo(out, **TINY, seed=0)
    assert (out / "train.csv").read_text() == "ImageID,Labels,Caption\n"


def test_photo_size_stores_the_render_resized_and_is_part_of_the_stamp(tmp_path):
    # The large preset stores COMP5329's 640x480: throughput at competition size must pay the
    # decoder for those pixels, not for the 256-px render.
    square = make_demo(tmp_path / "square", n_train=20, n_test=4, size=32, workers=1)
    photo = make_demo(tmp_path / "photo", n_train=20, n_test=4, size=32, workers=1, photo=(48, 40))
    with Image.open(tmp_path / "photo" / "data" / "0.jpg") as im:
        assert im.size == (48, 40)
    with Image.open(tmp_path / "square" / "data" / "0.jpg") as im:
        assert im.size == (32, 32)
    assert photo["photo"] == [48, 40] and "photo" not in square
    # Same labels and captions: only the stored pixels differ.
    assert (tmp_path / "photo" / "train.csv").read_text() == (tmp_path / "square" / "train.csv").read_text()
    again = make_demo(tmp_path / "photo", n_train=20, n_test=4, size=32, workers=1)
    assert again["skipped"] is False  # the stamp differs without the photo size: regenerated


def test_recurring_training_images_are_near_copies_with_their_sources_labels(tmp_path):
    # The recurring preset: the last third of the training rows show an earlier training image
    # again (cropped, maybe mirrored, re-exposed) with its labels and a caption of their own; the
    # test rows never recur, and the other rows are the plain draws.
    from capfuse.data.demo.writer import recurring_source

    n = 30
    plain = make_demo(tmp_path / "plain", n_train=n, n_test=6, size=48, workers=1, shift="disjoint")
    rec = make_demo(tmp_path / "rec", n_train=n, n_test=6, size=48, workers=1, shift="disjoint", recur=1 / 3)
    assert rec["recur"] == pytest.approx(1 / 3) and "recur" not in plain
    rows = {r["ImageID"]: r for r in csv.DictReader(open(tmp_path / "rec" / "train.csv", encoding="utf-8"))}
    sources = {i: recurring_source(0, i, n, 1 / 3) for i in range(n)}
    assert [i for i, s in sources.items() if s is not None] == list(range(20, 30))
    assert all(s < 20 for s in sources.values() if s is not None)
    for name in ("test.csv", "test_labels.csv"):
        assert (tmp_path / "rec" / name).read_text() == (tmp_path / "plain" / name).read_text()

    def pixels(folder, i):
        with Image.open(tmp_path / folder / "data" / f"{i}.jpg") as im:
            return np.asarray(im.convert("L").resize((16, 16)), np.float32)

    for i, source in sources.items():
        if source is None:
            assert (tmp_path / "rec" / "data" / f"{i}.jpg").read_bytes() == (
                tmp_path / "plain" / "data" / f"{i}.jpg"
            ).read_bytes()
            continue
        assert rows[f"{i}.jpg"]["Labels"] == rows[f"{source}.jpg"]["Labels"]
        copy, src = pixels("rec", i), pixels("rec", source)
        # Closer to its source (or its mirror) than to any other training image.
        near = min(np.abs(copy - src).mean(), np.abs(copy - src[:, ::-1]).mean())
        others = [np.abs(copy - pixels("rec", j)).mean() for j in range(20) if j != source]
        assert near < min(others), (i, source)
    with pytest.raises(ValueError, match="recur"):
        make_demo(tmp_path / "bad", n_train=n, n_test=6, size=48, workers=1, recur=1.0)
