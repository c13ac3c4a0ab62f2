"""Smaller bundles: ``predict --fast`` (caption-only models, one fold each) and ``export --top-k``
(the best K models by drop-one nested CV). Both refit their second level from OOF only; the
figures they store are checked here against the same scores computed from the run's files."""

from __future__ import annotations

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
    for model in ("cap_lr", "img_lr"):
        frame = pd.read_csv(paths.model_dir(model) / "oof_logits.csv", dtype={"ImageID": str}).set_index("ImageID")
        oof[model] = sigmoid(frame.loc[ds.train_ids, cols].to_numpy(np.float32))
    return oof, ds.Y, ds.folds()


def test_fast_predicts_from_the_caption_models_first_fold_without_embedding_an_image(run, tmp_path):
    bundle = tmp_path / "bundle"
    assert main(["export", *_common(run), "--out", str(bundle)]) == 0
    fast = read_json(bundle / "bundle.json")["fast"]
    assert fast["second_level"] == {"candidate": "best_single", "models": ["cap_lr"], "model": "cap_lr"}
    # Its stored figures are the nested score of cap_lr's OOF at a global threshold, as computed here.
    oof, Y, folds = _oof_and_labels(run)
    rule = {"min_labels": fast["thresholds"]["min_labels"], "max_labels": fast["thresholds"]["max_labels"]}
    assert fast["nested_mean_f1"] == round(nested_global_f1(Y, oof["cap_lr"], folds, rule), 5)
    assert fast["thresholds"]["values"] == fit_global_threshold(Y, oof["cap_lr"], **rule)[0]

    work = tmp_path / "work"
    predictor = Predictor.load(bundle, work_dir=work, fast=True)
    assert list(predictor.models) == ["cap_lr"] and predictor.folds["cap_lr"] == 1
    pred = predictor.predict_folder(run.data)
    # cap_lr's fold 0 alone, replayed from the run's own files, gives the same logits.
    captions = [r.caption for r in read_split(run.data / "test.csv", "test")[0]]
    settings = predictor.models["cap_lr"]
    fold0 = MODELS.create("linear", cfg=settings, seed=settings.seed).predict_saved(
        run.root / "runs" / "tiny" / "cap_lr" / "fold0", image=None, captions=captions
    )
    assert np.array_equal(pred.logits["cap_lr"], fold0)
    assert not list(work.rglob("*.onnx")) and not list(work.rglob("*pooled.npy")), "an image was embedded"
    assert pred.probs.dtype == np.float64 and np.allclose(pred.probs, sigmoid(pred.logits["cap_lr"]), atol=1e-6)
    assert all(len(labels) >= 1 for labels in pred.labels)

    out = tmp_path / "predictions"
    args = ["predict", "--bundle", str(bundle), "--data", str(run.data), "--out", str(out), "--fast"]
    assert main([*args, "--cache", str(work)]) == 0
    manifest = read_json(out / "tiny-latest.json")
    assert manifest["fast"] is True and manifest["folds"] == {"cap_lr": 1}
    sub = read_submission(out / "tiny-latest.csv")
    assert list(sub["ImageID"]) == pred.ids
    assert [s.split() for s in sub["Labels"]] == [[str(c) for c in labels] for labels in pred.labels]
