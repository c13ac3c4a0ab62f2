"""``capfuse predict`` on a folder it has never seen, holding every fault a test folder can have:
a corrupt JPEG, a missing image, an ImageID that escapes the folder, an empty caption and a
duplicate row. It must write a checked submission with every row in test.csv's order, predict
the rows without a usable image from their caption (as the bundle's caption fallback does),
flag every faulty row, and never open the file an escaping ImageID points at."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from capfuse.cli import main
from capfuse.config.schema import resolve_model
from capfuse.data.csvio import read_split
from capfuse.ensemble.decision import apply_threshold
from capfuse.models import MODELS
from capfuse.submission import read_submission
from capfuse.utils.io import read_json
from capfuse.utils.numeric import sigmoid

# Paths opened while a test sets _OPENED to a list; an audit hook cannot be removed, so it stays
# installed and records only then.
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


def _hostile_folder(tiny: Path, dest: Path) -> tuple[Path, pd.DataFrame]:
    """test.csv + data/ with one fault per row (and good rows around them)."""
    rows, _ = read_split(tiny / "test.csv", "test")
    good = list(rows[:4])
    (dest / "data").mkdir(parents=True)
    for r in good:
        shutil.copyfile(tiny / "data" / r.image_id, dest / "data" / r.image_id)
    jpeg = (tiny / "data" / good[0].image_id).read_bytes()
    (dest / "data" / "corrupt.jpg").write_bytes(jpeg[:20] + b"\x00" * 64)  # a JPEG header, then nothing
    # A real image beside data/, where "../secret.jpg" points: predicting it would need opening it.
    shutil.copyfile(tiny / "data" / good[1].image_id, dest / "secret.jpg")
    table = pd.DataFrame(
        [
            (good[0].image_id, good[0].caption, ""),
            ("corrupt.jpg", good[1].caption, "caption"),
            ("missing.jpg", good[2].caption, "caption"),
            ("../secret.jpg", good[3].caption, "caption"),
            (good[1].image_id, "", "image"),  # empty caption: predicted from its image
            (good[0].image_id, good[2].caption, "image"),  # the same ImageID again
            (good[2].image_id, good[2].caption, ""),
        ],
        columns=["ImageID", "Caption", "fault"],
    )
    text = "ImageID,Caption\n" + "".join(f"{i},{c}\n" for i, c in zip(table["ImageID"], table["Caption"]))
    (dest / "test.csv").write_text(text, encoding="utf-8")
    return dest, table


@pytest.fixture
def bundle(tiny_bundle) -> Path:
    return tiny_bundle


def _fallback_labels(bundle: Path, tiny_run_root: Path, captions: list[str]) -> list[list[str]]:
    """What the caption fallback predicts, replayed from the run's own fold files."""
    record = read_json(bundle / "bundle.json")
    fb = record["image_fallback"]
    assert fb["model"] is not None, "the tiny run has a caption-only model (caption_linear)"
    settings = resolve_model(yaml.safe_load((bundle / "models" / fb["model"] / "config.yaml").read_text()))
    model = MODELS.create(settings.kind, cfg=settings, seed=settings.seed)
    k = record["models"][fb["model"]]["folds"]
    run = tiny_run_root / "runs" / "tiny" / fb["model"]
    z = sum(model.predict_saved(run / f"fold{f}", image=None, captions=captions).astype(np.float64) for f in range(k))
    t = record["thresholds"]
    binary = apply_threshold(
        sigmoid((z / k).astype(np.float32)), fb["threshold"], min_labels=t["min_labels"], max_labels=t["max_labels"]
    )
    ids = np.array([c["id"] for c in record["classes"]])
    return [[str(c) for c in ids[np.flatnonzero(row)]] for row in binary]


def test_predict_on_a_hostile_folder_keeps_every_row_flags_the_faults_and_opens_no_escaping_path(
    tiny_run, bundle, tmp_path, predict_work
):
    global _OPENED
    folder, table = _hostile_folder(tiny_run.data, tmp_path / "new" / "unseen")
    out = tmp_path / "predictions"
    _OPENED = []
    try:
        code = main(
            ["predict", "--bundle", str(bundle), "--data", str(folder), "--out", str(out), "--cache", str(predict_work)]
        )
    finally:
        opened, _OPENED = _OPENED, None
    assert code == 0
    secret = (folder / "secret.jpg").resolve()
    assert not [p for p in opened if Path(p).name == "secret.jpg" or Path(p).resolve() == secret]
    assert any(p.endswith("corrupt.jpg") for p in opened), "the audit hook saw no image opened at all"

    sub = read_submission(out / "unseen-latest.csv")  # written by write_submission, which checks it
    assert list(sub["ImageID"]) == list(table["ImageID"]), "every row, in test.csv's order"
    assert all(s.split() for s in sub["Labels"]), "no row without a label"

    manifest = read_json(out / "unseen-latest.json")
    assert manifest["rows"] == len(table) and manifest["rows_without_image"] == 3
    flags = pd.read_csv(out / "unseen-latest-flags.csv", dtype={"ImageID": str}, keep_default_na=False)
    assert list(flags["row"]) == [2, 3, 4, 5, 6]
    assert list(flags["image_ok"]) == [False, False, False, True, True]
    for code_, row in zip(
        ["[undecodable_image]|[truncated_image]|[not_an_image]", "[missing_image]", "[unsafe_path]", "[empty_caption]"],
        flags["flag"],
    ):
        assert any(c in row for c in code_.split("|")), (code_, row)
    assert "[duplicate_id]" in flags["flag"].iloc[4] and "line 2" in flags["flag"].iloc[4]

    # The three rows without a usable image: the caption fallback's labels, from the run's files.
    bad = table["fault"] == "caption"
    want = _fallback_labels(bundle, tiny_run.root, list(table.loc[bad, "Caption"]))
    assert [s.split() for s in sub.loc[bad.to_numpy(), "Labels"]] == want
    # The duplicate is predicted from its own image and caption, like any other row.
    probs = pd.read_csv(out / "unseen-latest-probs.csv", dtype={"ImageID": str})
    assert list(probs["ImageID"]) == list(table["ImageID"])


# -- a work folder (`--cache`) shared by predictions ----------------------------------------------


def test_predicting_images_leaves_what_the_user_keeps_in_the_work_folder(bundle, tiny_run, predict_work):
    from capfuse.bundle import Predictor

    work = predict_work
    mine = [work / "inputs" / "data" / "holiday.jpg", work / "notes.txt"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"the user's own")
    images = sorted((tiny_run.data / "data").iterdir())[:3]
    pred = Predictor.load(bundle, work_dir=work).predict(images, ["a photo"] * 3)
    assert len(pred.ids) == 3 and all(pred.image_ok)
    assert all(p.read_bytes() == b"the user's own" for p in mine)
    assert not list(work.glob(".inputs-*"))  # its own staging folder went


def test_predictions_sharing_a_work_folder_take_turns(bundle, tiny_run, predict_work):
    import threading

    from capfuse.bundle import Predictor
    from capfuse.utils.lock import dataset_lock

    work = predict_work
    predictor = Predictor.load(bundle, work_dir=work)
    reading, done = threading.Event(), threading.Event()
    features = predictor._features
    predictor._features = lambda rows: (reading.set(), features(rows))[1]  # where the cache is read and written
    worker = threading.Thread(target=lambda: (predictor.predict_folder(tiny_run.data), done.set()), daemon=True)
    with dataset_lock(work, what="another capfuse predict"):
        worker.start()
        assert not reading.wait(3.0), "a prediction used a work folder another one holds"
    assert done.wait(300) and len(list((work / "cache").iterdir())) > 0
