"""The run report: its numbers on hand-made cases, its sections on a real tiny run, and the page
as headless Chromium renders it."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from capfuse.cli import main
from capfuse.report import tables
from capfuse.report.plots import ablation_plot
from capfuse.report.sections import SECTION_IDS
from capfuse.utils.io import read_json
from report_page import check_page_numbers, page_tables

FIGURE_SECTIONS = ("folds", "models", "per-class", "stacking", "pseudo", "label-ratios", "ablation", "submission")
NAMES = ["a", "b", "c"]
IDS = [1, 2, 5]


# -- tables on cases whose answer is known ----------------------------------------------------
def test_pair_confusions_counts_wrong_predictions_where_only_the_other_class_is_true():
    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    pred = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 0]])
    out = tables.pair_confusions(Y, pred, IDS, NAMES).set_index(["true_id", "predicted_id"])
    # a true and b not: rows 0 and 3; b predicted on row 0 only. Row 1 has both true: no confusion.
    assert out.loc[(1, 2), "rows"] == 1 and out.loc[(1, 2), "rate"] == pytest.approx(0.5)
    assert out.loc[(1, 2), "together"] == 1
    assert out.loc[(5, 1), "rows"] == 1 and out.loc[(5, 1), "rate"] == pytest.approx(1.0)
    assert out["rows"].sum() == 2  # nothing else is wrongly predicted
    # Sorted by count: the two confusions come first.
    assert set(map(tuple, out.reset_index().head(2)[["true_id", "predicted_id"]].to_numpy())) == {(1, 2), (5, 1)}


def test_pair_confusions_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    Y, pred = rng.random((60, 4)) < 0.4, rng.random((60, 4)) < 0.4
    out = tables.pair_confusions(Y, pred, [1, 2, 3, 4], list("wxyz")).set_index(["true_id", "predicted_id"])
    for b in range(4):
        for a in range(4):
            if a == b:
                continue
            rows = [i for i in range(60) if Y[i, b] and not Y[i, a]]
            hits = sum(pred[i, a] for i in rows)
            assert out.loc[(b + 1, a + 1), "rows"] == hits
            assert out.loc[(b + 1, a + 1), "rate"] == pytest.approx(hits / len(rows))


def test_class_threshold_curves_match_sklearn_per_class_f1():
    rng = np.random.default_rng(1)
    Y = (rng.random((80, 3)) < 0.35).astype(int)
    P = np.clip(Y * 0.4 + rng.random((80, 3)) * 0.6, 0, 1)
    curves = tables.class_threshold_curves(Y, P, IDS, NAMES, grid=[0.2, 0.5, 0.8])
    for t in (0.2, 0.5, 0.8):
        expected = f1_score(Y, (P >= t).astype(int), average=None, zero_division=0)
        np.testing.assert_allclose(curves.loc[t].to_numpy(), expected)


def test_threshold_curve_peaks_where_the_classes_separate():
    Y = np.array([[1, 0], [0, 1], [1, 1], [1, 0]])
    P = np.where(Y == 1, 0.7, 0.3)
    curve = tables.threshold_curve(Y, P, grid=[0.1, 0.5, 0.9])
    # 0.1: every class on every row (F1 2/3, 2/3, 1, 2/3); 0.9: nothing passes, so the
    # never-empty rule keeps each row's top class (row 2's tie goes to the first: F1 2/3).
    assert curve.set_index("threshold")["mean_f1"].to_dict() == pytest.approx({0.1: 0.75, 0.5: 1.0, 0.9: 11 / 12})


def test_worst_examples_lowest_f1_first_then_most_confident_mistake():
    Y = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    pred = np.array([[0, 1], [0, 1], [0, 1], [1, 0]])
    P = np.array([[0.4, 0.6], [0.1, 0.95], [0.2, 0.9], [0.9, 0.3]])
    worst = tables.worst_examples(Y, pred, P, ["r0", "r1", "r2", "r3"], ["c0", "c1", "c2", "c3"], ["a", "b"], k=3)
    assert list(worst["ImageID"]) == ["r1", "r0", "r3"]  # F1 0, 0 (r1 more confident), then 2/3
    assert list(worst["f1"]) == [0.0, 0.0, pytest.approx(0.667)]
    assert worst.loc[0, "truth"] == "a" and worst.loc[0, "predicted"] == "b (0.95)"


def test_fold_balance_counts_and_spread():
    folds = np.array([0, 0, 1, 1, 2, 2])
    Y = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0], [1, 0]])
    out = tables.fold_balance(folds, Y, [3, 7], ["x", "y"])
    assert out.loc[3, ["fold 0", "fold 1", "fold 2", "total"]].tolist() == [2, 1, 1, 4]
    assert out.loc[3, "spread"] == pytest.approx((2 - 1) / (4 / 3), abs=1e-3)
    assert out.loc[7, "spread"] == pytest.approx(2 / (2 / 3), abs=1e-3)


def test_submission_summary_shares_and_priors():
    sub = pd.DataFrame({"ImageID": ["a", "b", "c", "d"], "Labels": ["1", "1 5", "2", "1"]})
    Y = np.array([[1, 0, 0], [1, 1, 0]])
    facts, per_class, per_row = tables.submission_summary(sub, IDS, NAMES, Y)
    assert facts == {"rows": 4, "labels_per_row": 1.25, "train_labels_per_row": 1.5, "empty_rows": 0}
    assert per_class["predicted_share"].tolist() == [0.75, 0.25, 0.25]
    assert per_class["train_prior"].tolist() == [1.0, 0.5, 0.0]
    assert per_class["ratio"].iloc[0] == 0.75 and np.isnan(per_class["ratio"].iloc[2])  # no prior: no ratio
    assert per_row.to_dict() == {1: 3, 2: 1}
    with pytest.raises(ValueError, match="row 3: label 9"):
        tables.submission_summary(pd.DataFrame({"ImageID": ["a", "b"], "Labels": ["1", "9"]}), IDS, NAMES, Y)


def test_stacking_table_gain_over_the_best_single_model():
    stack = {
        "chosen": "weighted_blend",
        "candidates": {
            "best_single": {"cv_mean_f1": 0.80, "nested_mean_f1": 0.79, "cv_map": 0.8, "threshold": 0.3},
            "weighted_blend": {"cv_mean_f1": 0.83, "nested_mean_f1": 0.82, "cv_map": 0.85, "threshold": 0.3},
            "stack": {"cv_mean_f1": 0.85, "nested_mean_f1": 0.81, "cv_map": 0.86, "threshold": 0.3},
        },
    }
    out = tables.stacking_table(stack)
    assert list(out["candidate"]) == ["weighted_blend", "stack", "best_single"]
    assert out["nested_gain"].tolist() == pytest.approx([0.03, 0.02, 0.0])
    assert out["kept"].tolist() == [True, False, False]


def test_ablation_plot_ignores_extra_columns_and_empty_metrics():
    table = pd.DataFrame(
        {
            "variant": ["ref", "no_x"],
            "group": ["reference", "fusion"],
            "mean_f1": [0.8, 0.78],
            "map": [None, None],
            "minutes": [1.0, 0.5],
            "something_new": ["p", "q"],
        }
    )
    fig = ablation_plot(table)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["CV mean F1", "minutes"]  # mAP has no values, gap_at_10 is absent
    with pytest.raises(ValueError, match="mean_f1"):
        ablation_plot(table.drop(columns="mean_f1"))


# -- the report on a real tiny run ------------------------------------------------------------
def _report(run, *extra: str) -> int:
    return main(
        ["report", "--data", str(run.data), "--root", str(run.root), "--config", str(run.config), "--quiet", *extra]
    )


@pytest.fixture(scope="module")
def full_report(tiny_run_full) -> tuple[Path, str, float]:
    t0 = time.perf_counter()
    assert _report(tiny_run_full) == 0
    seconds = time.perf_counter() - t0
    path = tiny_run_full.root / "runs" / "tiny" / "report" / "index.html"
    return path, path.read_text(encoding="utf-8"), seconds


@pytest.mark.slow
def test_report_is_self_contained_with_every_section(full_report):
    path, page, seconds = full_report
    for sid in SECTION_IDS:
        assert re.search(rf'<section id="{sid}">\s*<h2>[^<]+</h2>', page), f"section {sid} missing"
    assert "not run yet" not in page  # every optional artefact is present in this run
    sections = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.DOTALL))
    # data: class counts, co-occurrence, captions; 2 threshold plots; one figure in each other
    # section of the run's tables (the shift section's own figures are its tests' to count).
    figures = {"data": 3, "thresholds": 2, **dict.fromkeys(FIGURE_SECTIONS, 1)}
    for sid, n in figures.items():
        srcs = re.findall(r'<img [^>]*src="([^"]+)"', sections[sid])
        assert len(srcs) == n, f"section {sid}: {len(srcs)} figures, not {n}"
        for src in srcs:
            assert src.startswith("data:image/png;base64,")
            im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            assert im.format == "PNG" and im.width > 200 and len(np.unique(np.asarray(im.convert("L")))) > 5
    # Nothing is fetched from anywhere: no external scripts, styles, images or links.
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "<link" not in page
    assert not [p for p in path.parent.iterdir() if p.name != "index.html"]  # no stray temp file
    assert seconds < 60, f"report took {seconds:.1f} s"


@pytest.mark.slow
def test_every_number_on_the_page_is_the_runs_own(tiny_run_full, full_report):
    """Read from the rendered HTML: validation.json, the fold file, leaderboard.csv, the kept OOF
    probabilities at the thresholds of thresholds.json, stack.json, and the submission scored
    against the demo's answer key, each recounted here."""
    _, page, _ = full_report
    check_page_numbers(page, tiny_run_full.root, tiny_run_full.data)
    tables, notes = page_tables(page)
    cut = read_json(tiny_run_full.root / "runs" / "tiny" / "ensemble" / "thresholds.json")
    assert any(f"Used: {cut['kind'].replace('_', '-')} thresholds" in n for n in notes["thresholds"])


def test_page_tables_reads_each_sections_cells():
    page = (
        '<section id="models"><table><thead><tr><th>model</th><th>cv_mean_f1</th></tr></thead>'
        "<tbody><tr><td>m</td><td>0.5000</td></tr></tbody></table></section>"
    )
    tables, _ = page_tables(page)
    assert tables["models"][0].to_dict("records") == [{"model": "m", "cv_mean_f1": "0.5000"}]


@pytest.mark.slow
def test_missing_optional_artefacts_say_which_command_writes_them(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path / "project")
    shutil.rmtree(run.root / "runs" / "tiny" / "ensemble")
    shutil.rmtree(run.root / "submissions")
    assert _report(run) == 0
    page = (run.root / "runs" / "tiny" / "report" / "index.html").read_text(encoding="utf-8")
    for target in ("thresholds", "stack", "ratios", "ablate", "infer"):
        assert f"not run yet: <code>make {target} DATA=data/tiny</code>" in page, target
    assert "No pseudo-label rounds in this run" in page
    assert "best single model" in page  # the per-class section falls back to the leaderboard's best model
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page


@pytest.mark.slow
def test_no_trained_run_is_a_clear_error(tiny_run, tmp_path, caplog):
    run = tiny_run.copy(tmp_path / "project")
    (run.root / "runs" / "tiny" / "leaderboard.csv").unlink()
    assert _report(run) == 2
    assert "leaderboard.csv does not exist" in caplog.text and "make all DATA=data/tiny" in caplog.text
    (run.root / "folds" / "tiny.csv").unlink()
    caplog.clear()
    assert _report(run) == 2
    assert "tiny.csv does not exist" in caplog.text and "make folds DATA=data/tiny" in caplog.text
    assert not (run.root / "runs" / "tiny" / "report" / "index.html").exists()


# -- the page in a browser ------------------------------------------------------------------------
def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium) when run as root")
    pytest.skip(
        "chromium is not installed (`apt-get install chromium`, or `make test` as root); "
        "the browser check fails instead of skipping when CI=true"
    )


def _browser(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_report_renders_in_headless_chromium(full_report, tmp_path):
    exe = _chromium()
    path, page, _ = full_report
    url = path.resolve().as_uri()
    dom = _browser(exe, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, "no <body> in the rendered DOM"
    ok = re.search(r'data-images-ok="(\d+)"', body.group(1))
    total = re.search(r'data-images-total="(\d+)"', body.group(1))
    assert ok and total, f"the page's load script did not run: {body.group(0)}"
    n_img = len(re.findall(r"<img ", page))
    assert int(total.group(1)) == n_img and int(ok.group(1)) == n_img, "some figures did not decode"
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in dom.stdout

    shot = tmp_path / "report.png"
    res = _browser(exe, f"--screenshot={shot}", "--window-size=1280,4000", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert shot.stat().st_size > 50_000
    im = Image.open(shot).convert("RGB")
    assert im.size == (1280, 4000)
    colours = im.resize((320, 1000)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the screenshot is (almost) a single colour"


def _label_matrix(labels, classes) -> np.ndarray:
    return np.array([[str(c) in str(v).split() for c in classes] for v in labels], dtype=int)


def test_the_shift_views_hold_the_runs_own_estimates_and_held_out_score(tiny_run):
    from capfuse.metrics import mean_sample_f1
    from capfuse.report import open_run, views

    run = open_run(str(tiny_run.data), str(tiny_run.root), str(tiny_run.config))
    manifest = read_json(tiny_run.root / "submissions" / "tiny-latest.json")
    table = views.shift_estimates(run).set_index("estimate")
    # The tiny dataset ships its answers: the last row is the submission's own held-out score,
    # recomputed here from the files, and every other row's distance is its figure less that one.
    answers = pd.read_csv(tiny_run.data / "test_labels.csv", dtype=str, keep_default_na=False).set_index("ImageID")
    sub = pd.read_csv(tiny_run.root / "submissions" / "tiny-latest.csv", dtype=str, keep_default_na=False)
    truth = _label_matrix(answers.loc[sub["ImageID"], "Labels"], run.class_ids)
    held_out = mean_sample_f1(truth, _label_matrix(sub["Labels"], run.class_ids))
    held = table.loc["held-out: test_labels.csv (never trained on)", "mean F1"]
    assert held == pytest.approx(held_out, abs=1e-5)
    nested = table.loc["nested CV, all rows"]
    assert nested["mean F1"] == manifest["cv_nested_mean_f1"]
    assert nested["minus held-out"] == pytest.approx(manifest["cv_nested_mean_f1"] - held, abs=1e-5)
    expected = table.loc["expected from the models' confidence on the test rows", "mean F1"]
    assert expected == manifest["expected_test"]["mean_f1"]
    inputs = views.shift_inputs(run)
    report = read_json(tiny_run.root / "runs" / "tiny" / "shift.json")
    assert list(inputs["AUC"]) == [r["auc"] for r in report["inputs"]]
