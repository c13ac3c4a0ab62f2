"""Validation policy on a dataset with every known fault, and the pipeline's promises around it."""

import pytest
from PIL import Image

from capfuse.data.faults import make_faulty_dataset
from capfuse.data.problems import DataError
from capfuse.data.validate import load_validated, validate_dataset


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    expected = make_faulty_dataset(root / "faulty")
    return root / "faulty", expected


def test_every_fault_is_reported_with_its_code_and_line(faulty, tmp_path):
    data, expected = faulty
    result = load_validated(data, tmp_path)
    quarantined = dict(zip(result.quarantine["ImageID"], result.quarantine["codes"]))
    for image_id, code in expected["train"].items():
        assert code in quarantined.get(image_id, ""), (image_id, code, quarantined)
    # the first dup.jpg row is fine; only the later one is quarantined
    assert list(result.train["ImageID"]).count("dup.jpg") == 1
    warnings = {(p.image_id, p.code) for p in result.problems if p.severity == "warning"}
    for image_id, code in expected["warnings"].items():
        assert (image_id, code) in warnings
        assert image_id in set(result.train["ImageID"])  # repaired rows are used
    for p in result.problems:
        assert p.line is not None and p.file.endswith((".csv",))
    text = (tmp_path / "validation.txt").read_text()
    assert "quarantined 10" in text and "train.csv:" in text
    assert (tmp_path / "validation.json").exists()


def test_test_rows_are_never_dropped(faulty, tmp_path):
    data, expected = faulty
    result = validate_dataset(data)
    lines = [ln for ln in (data / "test.csv").read_bytes().decode("utf-8-sig").splitlines()[1:] if ln.strip()]
    assert list(result.test["ImageID"]) == [ln.split(",", 1)[0].strip() for ln in lines]
    bad = set(result.test.loc[~result.test["image_ok"], "ImageID"])
    assert bad == set(expected["test"])


def test_escaping_ids_are_never_opened(faulty, monkeypatch):
    data, _ = faulty
    opened = []
    real_open = Image.open

    def spy(fp, *args, **kwargs):
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    validate_dataset(data)
    assert opened and not any("escape" in p or p.startswith("/etc") for p in opened)


def test_strict_mode_fails_and_names_rows(faulty):
    data, _ = faulty
    with pytest.raises(DataError, match=r"(?s)strict mode: 10 train row\(s\).*train.csv:\d+"):
        validate_dataset(data, strict=True)


def test_duplicate_test_id_is_an_error_naming_both_lines(faulty, tmp_path):
    data, _ = faulty
    import shutil

    copy = tmp_path / "dup"
    shutil.copytree(data, copy)
    with open(copy / "test.csv", "ab") as fh:
        fh.write(b"10000.jpg,again\n")
    with pytest.raises(DataError, match=r"test.csv:\d+: ImageID '10000.jpg' is also on line 2"):
        validate_dataset(copy)


def test_image_verdicts_are_cached_and_redone_when_a_file_changes(faulty, tmp_path, monkeypatch):
    data, _ = faulty
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    load_validated(copy, tmp_path / "out")
    import capfuse.data.validate as v

    calls = []
    real = v.check_image
    monkeypatch.setattr(v, "check_image", lambda path, *a, **k: calls.append(path.name) or real(path, *a, **k))
    load_validated(copy, tmp_path / "out")
    assert calls == ["missing.jpg", "t_missing.jpg"] or sorted(calls) == ["missing.jpg", "t_missing.jpg"]
    (copy / "data" / "zero.jpg").write_bytes((copy / "data" / "0.jpg").read_bytes())
    calls.clear()
    result = load_validated(copy, tmp_path / "out")
    assert "zero.jpg" in calls and "zero.jpg" in set(result.train["ImageID"])


def test_missing_folder_messages(tmp_path):
    with pytest.raises(DataError, match="make data"):
        validate_dataset(tmp_path / "nowhere")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="image folder not found"):
        validate_dataset(tmp_path / "x")
