"""Submission format: the checker against every malformed case, and the guarded writer."""

import json

import numpy as np
import pandas as pd
import pytest

from capfuse.submission import (
    SubmissionError,
    check_submission,
    format_labels,
    predictions_to_frame,
    read_submission,
    write_submission,
)
from capfuse.utils.io import sha256_file

TEST_IDS = ["30000.jpg", "30001.jpg", "30002.jpg", "30003.jpg"]
CLASSES = [1, 2, 3, 19]


def valid() -> pd.DataFrame:
    return pd.DataFrame({"ImageID": TEST_IDS, "Labels": ["1", "1 19", "3", "2 3"]})


def test_format_labels():
    assert format_labels([19, 1]) == "1 19"
    assert format_labels(np.array([3])) == "3"
    assert format_labels([]) == ""
    with pytest.raises(ValueError):
        format_labels([1.5])


def test_predictions_to_frame_keeps_user_ids_sorted():
    # Columns deliberately not in ascending id order.
    binary = np.array([[1, 0, 1], [0, 1, 0]])
    sub = predictions_to_frame(["a.jpg", "b.jpg"], binary, [19, 2, 1])
    assert sub.columns.tolist() == ["ImageID", "Labels"]
    assert sub["Labels"].tolist() == ["1 19", "2"]


def test_valid_submission_passes():
    assert check_submission(valid(), TEST_IDS, CLASSES) == []


def _problems(sub, test_ids=TEST_IDS):
    return check_submission(sub, test_ids, CLASSES)


def test_missing_id():
    sub = valid().drop(index=2).reset_index(drop=True)
    problems = _problems(sub)
    assert any("3 rows" in p for p in problems)
    assert any("'30002.jpg'" in p and "missing" in p for p in problems)


def test_duplicate_id():
    sub = valid()
    sub.loc[3, "ImageID"] = "30001.jpg"
    problems = _problems(sub)
    assert any(p.startswith("row 4 (ImageID '30001.jpg'): duplicate") and "row(s) 2" in p for p in problems)
    assert any("'30003.jpg'" in p and "missing" in p for p in problems)


def test_duplicate_allowed_when_test_repeats_it():
    test_ids = ["a", "b", "a"]
    sub = pd.DataFrame({"ImageID": ["a", "b", "a"], "Labels": ["1", "2", "3"]})
    assert _problems(sub, test_ids) == []
    sub = pd.DataFrame({"ImageID": ["a", "b", "a", "a"], "Labels": ["1", "2", "3", "1"]})
    assert any(p.startswith("row 4 (ImageID 'a'): duplicate") for p in _problems(sub, test_ids))


def test_wrong_order():
    sub = valid().iloc[[0, 2, 1, 3]].reset_index(drop=True)
    problems = _problems(sub)
    assert problems == [
        "row 3 (ImageID '30001.jpg'): out of order, test.csv has it at position 2, before a row above it"
    ]


def test_unknown_id():
    sub = valid()
    sub.loc[1, "ImageID"] = "99.jpg"
    problems = _problems(sub)
    assert any(p == "row 2 (ImageID '99.jpg'): id not in test.csv" for p in problems)


def test_label_problems_name_their_rows():
    sub = valid()
    sub["Labels"] = ["1 12", "1 x", "", "2.0"]
    problems = _problems(sub)
    assert any(
        p.startswith("row 1 (ImageID '30000.jpg'): labels not in the class set") and p.endswith(": 12")
        for p in problems
    )
    assert any(p.startswith("row 2 (ImageID '30001.jpg'): labels that are not integers: 'x'") for p in problems)
    assert "row 3 (ImageID '30002.jpg'): empty label set" in problems
    assert any(p.startswith("row 4 (ImageID '30003.jpg'): labels that are not integers: '2.0'") for p in problems)
    assert len(problems) == 4


def test_wrong_header():
    sub = valid().rename(columns={"Labels": "labels"})
    assert _problems(sub) == ["header is 'ImageID,labels', must be exactly 'ImageID,Labels'"]
    sub = valid()[["Labels", "ImageID"]]
    problems = _problems(sub)
    assert problems == ["header is 'Labels,ImageID', must be exactly 'ImageID,Labels'"]  # rows still checked: fine


def test_wrong_row_count():
    sub = pd.concat([valid(), pd.DataFrame({"ImageID": ["30004.jpg"], "Labels": ["1"]})], ignore_index=True)
    problems = _problems(sub)
    assert "5 rows, test.csv has 4" in problems
    assert "row 5 (ImageID '30004.jpg'): id not in test.csv" in problems


def test_many_problems_are_capped_and_counted():
    ids = [f"{i}.jpg" for i in range(50)]
    sub = pd.DataFrame({"ImageID": ids, "Labels": [""] * 50})
    problems = check_submission(sub, ids, CLASSES)
    assert len(problems) == 21
    assert problems[-1] == "... and 30 more rows with empty label sets"


def test_read_submission_keeps_strings(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("ImageID,Labels\n001.jpg,1 19\nNA,\n")
    sub = read_submission(path)
    assert sub["ImageID"].tolist() == ["001.jpg", "NA"]
    assert sub["Labels"].tolist() == ["1 19", ""]


def test_write_submission_writes_nothing_when_check_fails(tmp_path):
    sub = valid()
    sub.loc[0, "Labels"] = ""
    out = tmp_path / "submissions"
    with pytest.raises(SubmissionError) as err:
        write_submission(sub, TEST_IDS, CLASSES, out, "demo", {"model": "m"}, timestamp="20261122-143015")
    assert err.value.problems == ["row 1 (ImageID '30000.jpg'): empty label set"]
    assert not out.exists() or not any(out.iterdir())


def test_write_submission_writes_csv_latest_and_manifests(tmp_path):
    out = tmp_path / "submissions"
    manifest = {"model": "fused", "threshold": 0.4}
    paths = write_submission(valid(), TEST_IDS, CLASSES, out, "demo", manifest, timestamp="20261122-143015")
    assert paths == {
        "csv": out / "demo-20261122-143015.csv",
        "manifest": out / "demo-20261122-143015.json",
        "latest_csv": out / "demo-latest.csv",
        "latest_manifest": out / "demo-latest.json",
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())  # no temp files
    text = paths["csv"].read_text()
    assert text.splitlines() == ["ImageID,Labels", "30000.jpg,1", "30001.jpg,1 19", "30002.jpg,3", "30003.jpg,2 3"]
    assert paths["latest_csv"].read_bytes() == paths["csv"].read_bytes()
    assert check_submission(read_submission(paths["latest_csv"]), TEST_IDS, CLASSES) == []
    for key in ("manifest", "latest_manifest"):
        meta = json.loads(paths[key].read_text())
        assert meta["model"] == "fused" and meta["threshold"] == 0.4
        assert meta["sha256"] == sha256_file(paths["csv"])
        assert meta["rows"] == 4 and meta["timestamp"] == "20261122-143015"
    assert manifest == {"model": "fused", "threshold": 0.4}  # the caller's dict is not modified


def test_write_submission_default_timestamp_is_utc_stamp(tmp_path):
    paths = write_submission(valid(), TEST_IDS, CLASSES, tmp_path, "demo", {})
    stem = paths["csv"].stem
    assert stem.startswith("demo-") and len(stem) == len("demo-20261122-143015")
    with pytest.raises(ValueError, match="timestamp"):
        write_submission(valid(), TEST_IDS, CLASSES, tmp_path, "demo", {}, timestamp="2026-11-22")
