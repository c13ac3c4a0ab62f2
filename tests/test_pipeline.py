"""One small end-to-end run of the real pipeline on the tiny demo dataset, through the CLI."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capfuse.cli import main
from capfuse.data.demo import PRESETS, make_demo
from capfuse.submission import check_submission, read_submission
from capfuse.utils.io import read_json
from conftest import TINY_RUN_ARGS

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "pipeline.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    data = root / "data" / "tiny"
    make_demo(data, **PRESETS["tiny"], seed=0)
    return root, data


def run(root: Path, data: Path, *args: str) -> int:
    return main([args[0], "--data", str(data), "--root", str(root), "--config", str(CONFIG), "--quiet", *args[1:]])


@pytest.mark.slow
def test_all_writes_a_valid_submission_and_resumes(tiny, capsys):
    root, data = tiny
    assert (
        run(
            root,
            data,
            "all",
            "--set",
            "folds.k=3",
            "--set",
            "threshold.trials=60",
            "--set",
            "ensemble.stack.num_threads=1",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "CV mean F1 of the submitted pipeline" in out

    test_ids = [
        line.split(",", 1)[0].strip() for line in (data / "test.csv").read_text().splitlines()[1:] if line.strip()
    ]
    classes = pd.read_csv(data / "classes.csv")["id"].tolist()
    sub = read_submission(root / "submissions" / "tiny-latest.csv")
    assert check_submission(sub, test_ids, classes) == []
    manifest = read_json(root / "submissions" / "tiny-latest.json")
    assert manifest["k"] == 3 and manifest["models"] and manifest["data_checksum"]
    assert 0.0 < manifest["cv"]["mean_f1"] <= 1.0 and 0.0 < manifest["cv_nested_mean_f1"] <= 1.0
    expected = manifest["expected_test"]  # the confidence-based estimate of the test score
    drop = expected["confidence_oof"] - expected["confidence_test"]
    assert expected["mean_f1"] == pytest.approx(manifest["cv_nested_mean_f1"] - drop, abs=2e-5)
    assert "expected on the test rows from the models' confidence there" in out
    assert "in-sample" in out and "nested" in out  # the final summary table
    stacked = read_json(root / "runs" / "tiny" / "ensemble" / "stack.json")
    assert manifest["second_level"]["kept"] == stacked["chosen"] in stacked["candidates"]

    # Where the time went: a row per stage and per (model, fold), in the CSV and the closing table.
    timings = pd.read_csv(root / "runs" / "tiny" / "timings.csv")
    stages = set(timings.loc[timings["fold"].isna(), "stage"])
    assert {"folds", "train", "stack", "thresholds", "submit"} <= stages
    assert any(name.startswith("embed ") for name in stages)  # the encoders' passes are rows of their own
    folds = timings.dropna(subset=["fold"])
    # Every model the submission stands on has its folds timed, and so has the round 0 of a
    # pseudo-label round that takes its model's place (the default's `ensemble.rounds: last`).
    trained = set(manifest["models"]) | {m.split("@")[0] for m in manifest["models"]}
    assert set(folds["model"]) == trained and (folds.groupby("model").size() == 3).all()
    assert (timings[["wall_s", "cpu_s", "peak_rss_mb"]] >= 0).all().all() and (timings["peak_rss_mb"] > 0).all()
    assert set(stacked["candidates"]) == {"best_single", "mean_blend", "weighted_blend", "stack"}
    cut = read_json(root / "runs" / "tiny" / "ensemble" / "thresholds.json")
    assert manifest["threshold"]["kind"] == cut["kind"] and len(cut["per_class"]["thresholds"]) == len(classes)
    assert cut["trials"] > 0 and (root / "runs" / "tiny" / "ensemble" / "thresholds.db").exists()

    # OOF files cover every train id exactly once, with the fold each was held out in.
    folds = pd.read_csv(root / "folds" / "tiny.csv", dtype={"ImageID": str})
    import yaml

    # The config's models and their pseudo-label rounds (name@rK): the second level read the
    # manifest's, and a round 0 whose round took its place was trained all the same.
    assert set(yaml.safe_load(CONFIG.read_text())["models"]) <= trained
    assert trained > set(manifest["models"])  # the default trains a round: round 0 stays out
    for model in sorted(trained):
        oof = pd.read_csv(root / "runs" / "tiny" / model / "oof_logits.csv", dtype={"ImageID": str})
        assert sorted(oof["ImageID"]) == sorted(folds["ImageID"])
        assert not oof["ImageID"].duplicated().any()
        merged = oof.merge(folds, on="ImageID", suffixes=("", "_file"))
        assert (merged["fold"] == merged["fold_file"]).all()
    board = pd.read_csv(root / "runs" / "tiny" / "leaderboard.csv")
    assert set(board["model"]) == trained  # every trained model, round 0 included
    assert (board[["params", "file_mb", "train_minutes"]] > 0).all().all() and (board["ms_per_image"] >= 0).all()

    # A second run reuses every finished fold and gives the same logits.
    before = np.load(root / "runs" / "tiny" / "fusion_linear_multilevel" / "fold0" / "val_logits.npy")
    (
        root / "runs" / "tiny" / "fusion_linear_multilevel" / "fold2" / "done.json"
    ).unlink()  # as if fold 2 was interrupted
    assert run(root, data, "train", "--set", "folds.k=3") == 0
    log = [
        line
        for line in (root / "runs" / "tiny" / "fusion_linear_multilevel" / "log.jsonl").read_text().splitlines()
        if line
    ]
    assert [eval_fold(line) for line in log] == [0, 1, 2, 2]  # only fold 2 was trained again
    np.testing.assert_array_equal(
        before, np.load(root / "runs" / "tiny" / "fusion_linear_multilevel" / "fold0" / "val_logits.npy")
    )


def eval_fold(line: str) -> int:
    import json

    return json.loads(line)["fold"]


@pytest.mark.slow
def test_missing_folds_is_a_clear_error(tmp_path, caplog):
    data = tmp_path / "data" / "tiny"
    make_demo(data, **PRESETS["tiny"], seed=1)
    assert run(tmp_path, data, "train") == 2
    assert "make folds" in caplog.text


@pytest.mark.slow
def test_all_on_a_folder_with_every_fault(tmp_path, shared_onnx):
    from capfuse.data.faults import make_faulty_dataset

    data = tmp_path / "data" / "faulty"
    expected = make_faulty_dataset(data)
    shutil.copytree(shared_onnx, tmp_path / "runs" / "faulty" / "cache" / "onnx")  # the session's encoder export
    # The faults are the data's, not the models': the two cheapest models (one reads the
    # images, one only the captions, for the unreadable test images' fallback) go through
    # every stage the default pipeline does.
    assert run(tmp_path, data, "all", *TINY_RUN_ARGS) == 0
    sub = read_submission(tmp_path / "submissions" / "faulty-latest.csv")
    test_ids = [
        ln.split(",", 1)[0].strip()
        for ln in (data / "test.csv").read_bytes().decode("utf-8-sig").splitlines()[1:]
        if ln.strip()
    ]
    assert list(sub["ImageID"]) == test_ids  # every test row, in order, unreadable images included
    assert check_submission(sub, test_ids, pd.read_csv(data / "classes.csv")["id"].tolist()) == []
    manifest = read_json(tmp_path / "submissions" / "faulty-latest.json")
    # The fallback is the best caption-only model by CV, whichever that is on this data.
    caption_only = {
        m.parent.name: read_json(m)["cv_mean_f1"]
        for m in (tmp_path / "runs" / "faulty").glob("*/metrics.json")
        if not read_json(m)["needs_image"]
    }
    assert manifest["image_fallback"]["model"] == max(caption_only, key=caption_only.get)
    assert sorted(manifest["image_fallback"]["rows"]) == sorted(expected["test"])
    assert manifest["train_rows_quarantined"] == len(expected["train"])
    folds = pd.read_csv(tmp_path / "folds" / "faulty.csv", dtype={"ImageID": str})
    assert not set(folds["ImageID"]) & set(expected["train"]) - {"dup.jpg"}  # quarantined rows get no fold
    assert (tmp_path / "runs" / "faulty" / "validation.txt").exists()
