"""Smaller bundles: ``predict --fast`` (caption-only models, one fold each) and ``export --top-k``
(the best K models by drop-one nested CV). Both refit their second level from OOF only; the
figures they store are checked here against the same scores computed from the run's files."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from capfuse.bundle import Predictor
from capfuse.cli import main
from capfuse.config import load_config
from capfuse.data.csvio import read_split
from capfuse.data.dataset import load_dataset
from capfuse.ensemble.decision import fit_global_threshold
from capfuse.ensemble.second_level import nested_global_f1
from capfuse.models import MODELS
from capfuse.paths import Paths
from capfuse.submission import read_submission
from capfuse.utils.io import read_json
from capfuse.utils.numeric import sigmoid
from conftest import TINY_RUN_ARGS


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A private copy of the shared tiny run (export records its timings in runs/)."""
    return tiny_run.copy(tmp_path_factory.mktemp("prune") / "project")


def _common(run) -> list[str]:
    return ["--data", str(run.data), "--root", str(run.root), "--config", str(run.config), "--quiet", *TINY_RUN_ARGS]


def _oof_and_labels(run) -> tuple[dict, np.ndarray, np.ndarray]:
    cfg = load_config(run.config, list(TINY_RUN_ARGS[1::2]))
    paths = Paths(data_dir=run.data, root=run.root)
    ds = load_dataset(paths, cfg, quiet=True)
    cols = [str(c) for c in ds.class_ids]
    oof = {}
    for model in ("caption_linear", "image_linear"):
        frame = pd.read_csv(paths.model_dir(model) / "oof_logits.csv", dtype={"ImageID": str}).set_index("ImageID")
        oof[model] = sigmoid(frame.loc[ds.train_ids, cols].to_numpy(np.float32))
    return oof, ds.Y, ds.folds()


def test_fast_predicts_from_the_caption_models_first_fold_without_embedding_an_image(run, tmp_path):
    bundle = tmp_path / "bundle"
    assert main(["export", *_common(run), "--out", str(bundle)]) == 0
    fast = read_json(bundle / "bundle.json")["fast"]
    assert fast["second_level"] == {"candidate": "best_single", "models": ["caption_linear"], "model": "caption_linear"}
    # Its stored figures are the nested score of caption_linear's OOF at a global threshold, as computed here.
    oof, Y, folds = _oof_and_labels(run)
    rule = {"min_labels": fast["thresholds"]["min_labels"], "max_labels": fast["thresholds"]["max_labels"]}
    assert fast["nested_mean_f1"] == round(nested_global_f1(Y, oof["caption_linear"], folds, rule), 5)
    assert fast["thresholds"]["values"] == fit_global_threshold(Y, oof["caption_linear"], **rule)[0]

    work = tmp_path / "work"
    predictor = Predictor.load(bundle, work_dir=work, fast=True)
    assert list(predictor.models) == ["caption_linear"] and predictor.folds["caption_linear"] == 1
    pred = predictor.predict_folder(run.data)
    # caption_linear's fold 0 alone, replayed from the run's own files, gives the same logits.
    captions = [r.caption for r in read_split(run.data / "test.csv", "test")[0]]
    settings = predictor.models["caption_linear"]
    fold0 = MODELS.create("linear", cfg=settings, seed=settings.seed).predict_saved(
        run.root / "runs" / "tiny" / "caption_linear" / "fold0", image=None, captions=captions
    )
    assert np.array_equal(pred.logits["caption_linear"], fold0)
    assert not list(work.rglob("*.onnx")) and not list(work.rglob("*pooled.npy")), "an image was embedded"
    assert pred.probs.dtype == np.float64 and np.allclose(pred.probs, sigmoid(pred.logits["caption_linear"]), atol=1e-6)
    assert all(len(labels) >= 1 for labels in pred.labels)

    out = tmp_path / "predictions"
    args = ["predict", "--bundle", str(bundle), "--data", str(run.data), "--out", str(out), "--fast"]
    assert main([*args, "--cache", str(work)]) == 0
    manifest = read_json(out / "tiny-latest.json")
    assert manifest["fast"] is True and manifest["folds"] == {"caption_linear": 1}
    sub = read_submission(out / "tiny-latest.csv")
    assert list(sub["ImageID"]) == pred.ids
    assert [s.split() for s in sub["Labels"]] == [[str(c) for c in labels] for labels in pred.labels]


def test_top_k_keeps_the_best_models_by_nested_contribution_refitted_on_oof(run, tmp_path, capsys, predict_work):
    kept = read_json(run.root / "runs" / "tiny" / "ensemble" / "kept" / "kept.json")
    if len(kept["models"]) < 2:
        pytest.skip(f"the tiny run's second level kept one model ({kept['candidate']}): nothing to prune")
    bundle = tmp_path / "top1"
    assert main(["export", *_common(run), "--out", str(bundle), "--top-k", "1"]) == 0
    record = read_json(bundle / "bundle.json")
    oof, Y, folds = _oof_and_labels(run)
    rule = {"min_labels": record["thresholds"]["min_labels"], "max_labels": record["thresholds"]["max_labels"]}
    alone = {m: nested_global_f1(Y, oof[m], folds, rule) for m in kept["models"]}
    best = max(kept["models"], key=lambda m: (alone[m], -kept["models"].index(m)))
    assert record["pruning"]["kept"] == [best]
    assert record["second_level"] == {"candidate": "best_single", "models": [best], "model": best}
    assert record["thresholds"]["values"] == fit_global_threshold(Y, oof[best], **rule)[0]
    assert record["cv"]["thresholds_nested_mean_f1"] == round(alone[best], 5)
    assert set(record["models"]) == {best}, "K models means K models, the caption fallback included"
    assert not list(bundle.glob("models/*/fold*/*")) or {p.parts[-3] for p in bundle.glob("models/*/fold*/*")} == {best}

    sizes = re.search(r"size ([\d.]+) MB before, ([\d.]+) MB after", capsys.readouterr().out)
    assert sizes and float(sizes[1]) >= float(sizes[2]) > 0
    after = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20
    assert record["pruning"]["full_mb"] == float(sizes[1]) and abs(after - float(sizes[2])) < 0.01

    # The pruned bundle predicts the test folder: every row, in test.csv's order, none empty.
    pred = Predictor.load(bundle, work_dir=predict_work).predict_folder(run.data)
    want = pd.read_csv(run.root / "submissions" / "tiny-latest.csv", dtype=str)
    assert pred.ids == list(want["ImageID"]) and all(len(labels) >= 1 for labels in pred.labels)
