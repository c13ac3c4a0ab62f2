"""Train/test shift: adversarial validation against its null, novelty, shift.json, the run's
report, and the shifted demo set's disjoint looks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from capfuse.data.demo import PRESETS, generate_sample
from capfuse.data.demo.drawing import render_object
from capfuse.data.demo.objects import SHAPES, STYLES
from capfuse.data.demo.shifted import INK, split_look
from capfuse.data.demo.writer import _params
from capfuse.shift import report as R
from capfuse.shift.adversarial import adversarial, delong_auc, null_reference, reduce
from capfuse.shift.novelty import novelty

N_TRAIN, N_TEST, DIMS = 400, 200, 24


def vectors(shift: float, seed: int = 0) -> np.ndarray:
    """Train rows then test rows from one Gaussian; the test rows moved by ``shift`` along 8 axes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_TRAIN + N_TEST, DIMS)).astype(np.float32)
    x[N_TRAIN:, :8] += shift
    return x


@pytest.fixture(scope="module")
def unshifted():
    return adversarial("image", vectors(0.0), N_TRAIN, DIMS)


@pytest.fixture(scope="module")
def shifted():
    return adversarial("image", vectors(0.5), N_TRAIN, DIMS)


def test_no_shift_gives_chance_auc_and_no_warning(unshifted):
    result = unshifted
    assert 0.4 < result.test.auc < 0.6
    assert result.test.low < 0.5 < result.test.high or abs(result.test.auc - 0.5) < 0.06
    assert not result.shifted
    assert R.warning_text([result], "demo") is None


def test_a_planted_shift_is_found_and_warned_about(shifted):
    result = shifted
    assert result.test.auc > 0.7 and result.test.low > result.null_high
    assert result.shifted
    warning = R.warning_text([result], "demo")
    assert warning is not None and "folds.groups: auto" in warning and "optimistic" in warning
    assert "runs/demo/shift_scores.csv" in warning


def test_the_null_sees_training_rows_only_and_stays_at_chance(unshifted, shifted):
    # The same seed, the same training rows: a shift planted in the test rows does not move the
    # null, which never reads them.
    assert [a.auc for a in unshifted.null] == [a.auc for a in shifted.null]
    assert all(0.38 < a.auc < 0.62 for a in shifted.null)
    assert shifted.null_high < 0.65 < shifted.test.auc
    # Its pseudo-test side is the test's share of the rows.
    x = vectors(0.0)
    small = null_reference(x[:120], 100, 20, seed=3)
    large = null_reference(x, N_TRAIN, N_TEST, seed=3)
    assert min(a.high - a.low for a in small) > max(a.high - a.low for a in large)


def test_delong_matches_sklearn_and_a_hand_computed_case():
    y = np.array([1, 1, 0, 0], bool)
    assert delong_auc(y, np.array([0.9, 0.4, 0.5, 0.1])).auc == pytest.approx(0.75)
    assert delong_auc(y, np.array([0.5, 0.5, 0.5, 0.5])).auc == pytest.approx(0.5)  # ties count half
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.3
    s = rng.random(500) + 0.4 * y
    got = delong_auc(y, s)
    assert got.auc == pytest.approx(roc_auc_score(y, s))
    assert got.low < got.auc < got.high
    # More rows, a narrower interval.
    y2, s2 = np.tile(y, 4), np.tile(s, 4)
    wide, narrow = got.high - got.low, delong_auc(y2, s2).high - delong_auc(y2, s2).low
    assert narrow == pytest.approx(wide / 2, rel=0.05)


def test_novelty_fraction_is_about_five_percent_without_shift_and_large_with_new_images():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16)) * 3
    train = centres[rng.integers(20, size=800)] + rng.standard_normal((800, 16))
    same = centres[rng.integers(20, size=400)] + rng.standard_normal((400, 16))
    new = rng.standard_normal((400, 16)) * 3 + rng.standard_normal((400, 16))  # new clusters
    quiet = novelty(train, same)
    assert 0.0 <= quiet.fraction_beyond < 0.15
    loud = novelty(train, new)
    assert loud.fraction_beyond > 0.5
    # A test row that duplicates a training row is at distance 0 from it (not leave-one-out).
    dup = novelty(train, train[:5])
    assert np.allclose(dup.test_distance, 0.0, atol=1e-5) and list(dup.test_nearest) == list(range(5))
    # Training rows are scored leave-one-out: never against themselves.
    assert (quiet.train_distance > 1e-4).all()


def test_report_schema_and_summary(shifted):
    z = reduce(vectors(0.5), dims=16)
    assert z.shape == (N_TRAIN + N_TEST, 16)
    results = [shifted, adversarial("caption", z[:, :8], N_TRAIN, 8)]
    ids = [f"{i}.jpg" for i in range(N_TRAIN + N_TEST)]
    image = R.Input("image", z[:N_TRAIN], z[N_TRAIN:], np.arange(N_TEST), "synthetic", DIMS)
    caption = R.Input("caption", z[:N_TRAIN, :8], z[N_TRAIN:, :8], np.arange(N_TEST), "synthetic", 8)
    rep = R.build("synth", ids[:N_TRAIN], ids[N_TRAIN:], results, {"image": image, "caption": caption},
                  novelty(z[:N_TRAIN], z[N_TRAIN:]))  # fmt: skip
    rep = json.loads(json.dumps(rep))  # plain JSON, as written
    assert set(rep) == {"schema", "dataset", "rows", "method", "inputs", "scores_from", "novelty", "shifted",
                        "warning", "train_most_test_like", "test_most_novel"}  # fmt: skip
    assert rep["rows"] == {"train": N_TRAIN, "test": N_TEST} and rep["shifted"] and rep["warning"]
    assert [r["input"] for r in rep["inputs"]] == ["image", "caption"] and rep["scores_from"] == "image"
    for r in rep["inputs"]:
        assert {"auc", "ci95", "null_auc", "null_high", "margin", "shifted", "source", "dims", "rows"} <= set(r)
    assert len(rep["train_most_test_like"]) == R.TOP_ROWS
    likeness = [r["test_likeness"] for r in rep["train_most_test_like"]]
    assert likeness == sorted(likeness, reverse=True)
    assert all(r["ImageID"] in ids[N_TRAIN:] and r["nearest_train"] in ids[:N_TRAIN] for r in rep["test_most_novel"])
    summary = R.summary(rep, "runs/synth/shift.json")
    assert summary["shifted"] and summary["auc"]["image"] == rep["inputs"][0]["auc"]
    assert summary["file"] == "runs/synth/shift.json"
    assert "YES" in R.table(rep) and "novelty" in R.table(rep)


def test_the_tiny_run_writes_the_shift_report_without_a_warning(tiny_run):
    runs = tiny_run.root / "runs" / "tiny"
    rep = json.loads((runs / "shift.json").read_text())
    assert [r["input"] for r in rep["inputs"]] == ["image", "caption", "both"]
    assert rep["warning"] is None and not rep["shifted"]
    assert rep["novelty"]["test_rows"] == 40
    scores = (runs / "shift_scores.csv").read_text().splitlines()
    assert scores[0] == "ImageID,score" and len(scores) == 1 + 80
    manifest = json.loads((tiny_run.root / "submissions" / "tiny-latest.json").read_text())
    assert manifest["shift"]["shifted"] is False and manifest["shift"]["file"] == "runs/tiny/shift.json"
    assert set(manifest["shift"]["auc"]) == {"image", "caption", "both"}


def test_the_report_section_shows_tables_thumbnails_and_the_warning(tiny_run, tmp_path):
    from capfuse.report import open_run
    from capfuse.report.shift import shift_section

    run = open_run(tiny_run.data, tiny_run.root, tiny_run.config)
    body = "\n".join(shift_section(run).parts)
    # test rows most unlike training, their nearest training rows, and the most test-like train rows
    assert body.count('src="data:image/jpeg;base64,') == 3 * R.TOP_ROWS
    assert "AUC" in body and "shift_scores.csv" in body
    assert 'id="shift-warning"' not in body
    # The confidence-based estimate of the test score, from the run's manifest.
    manifest = json.loads((tiny_run.root / "submissions" / "tiny-latest.json").read_text())
    assert f"Expected mean F1 on the test rows: {manifest['expected_test']['mean_f1']:.4f}" in body
    # A run that warns shows the warning, its `code` rendered as code.
    copy = tiny_run.copy(tmp_path / "project")
    path = copy.root / "runs" / "tiny" / "shift.json"
    rep = json.loads(path.read_text())
    path.write_text(json.dumps(rep | {"shifted": True, "warning": "shift: try `folds.groups: auto`"}))
    body = "\n".join(shift_section(open_run(copy.data, copy.root, copy.config)).parts)
    assert '<p class="missing" id="shift-warning">shift: try <code>folds.groups: auto</code></p>' in body


def test_the_shifted_preset_draws_train_and_test_in_disjoint_looks():
    assert PRESETS["shifted"]["n_train"] == PRESETS["default"]["n_train"]
    train, test = split_look("disjoint", "train"), split_look("disjoint", "test")
    assert split_look(None, "test") is None
    for cls in SHAPES:
        shapes = (
            [SHAPES[cls].index(v) for v in train.shapes(SHAPES[cls])],
            [SHAPES[cls].index(v) for v in test.shapes(SHAPES[cls])],
        )
        palettes = train.palettes(STYLES[cls]["palettes"]), test.palettes(STYLES[cls]["palettes"])
        if len(SHAPES[cls]) > 1:
            assert not set(shapes[0]) & set(shapes[1]), cls
        assert not {tuple(p) for p in palettes[0]} & {tuple(p) for p in palettes[1]}, cls
        assert palettes[0] and palettes[1] and shapes[0] and shapes[1]
    # The test split inks a contour around each object; train and the demo never do.
    inked = []
    for look in (None, train, test):
        obj = np.asarray(render_object(np.random.default_rng(0), "bus", 80, 32, look))
        inked.append(bool((np.abs(obj[..., :3].astype(int) - INK).sum(-1) < 3)[obj[..., 3] > 0].any()))
    assert inked == [False, False, True]
    # Same scene and labels as the demo's draws; only the drawing changes.
    for split in ("train", "test"):
        img, labels, _ = generate_sample(0, split, 3, 64, "disjoint")
        demo_img, demo_labels, _ = generate_sample(0, split, 3, 64)
        assert labels == demo_labels
    with pytest.raises(ValueError, match="unknown demo shift"):
        split_look("sideways", "test")
    # The demo's stamp gains no key: existing datasets stay up to date.
    assert "shift" not in _params(80, 40, 64, 0) and _params(80, 40, 64, 0, shift="disjoint")["shift"] == "disjoint"
