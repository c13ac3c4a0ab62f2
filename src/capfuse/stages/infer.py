"""The infer stage: base models' logits → blend → threshold → checked submission + manifest.

Thresholds are fitted on out-of-fold predictions only. Test rows whose image could not be
read are predicted by the caption models alone (or, with none, by the class priors), so no
test row is ever dropped.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse import __version__
from capfuse.decision import apply_threshold, fit_global_threshold
from capfuse.metrics import summary as metric_summary
from capfuse.stages.common import load_dataset
from capfuse.submission import predictions_to_frame, write_submission
from capfuse.trainer import read_logits, sigmoid
from capfuse.utils.io import read_json, sha256_file
from capfuse.utils.log import log, stage


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _trained_models(runs: Path) -> dict[str, dict]:
    return {p.parent.name: read_json(p) for p in sorted(runs.glob("*/metrics.json"))}


def choose_models(cfg: dict, trained: dict[str, dict]) -> list[str]:
    """``infer.models``: a list of model names, or ``best`` (the single best by CV mean F1)."""
    want = cfg.get("infer", {}).get("models", "best")
    if not trained:
        raise FileNotFoundError("no trained model found: run `make train` first")
    if want == "best":
        return [max(trained, key=lambda m: trained[m]["cv_mean_f1"])]
    missing = [m for m in want if m not in trained]
    if missing:
        raise FileNotFoundError(f"models {missing} are not trained yet: run `make train`")
    return list(want)


def _caption_fallback(ds, paths, trained: dict, rows: np.ndarray, binary: np.ndarray, min_labels: int,
                      max_labels) -> dict:
    """Predict test rows without a usable image from the best caption-only model, in place.

    The model need not be in the blend: the blend's image models saw zeros for these rows, so
    its scores there mean nothing. The caption model gets its own threshold, fitted on its own
    OOF predictions. With no caption model trained, the class priors decide (top class only).
    """
    ids = [ds.test_ids[i] for i in np.flatnonzero(rows)]
    caption_models = [m for m in trained if not trained[m]["needs_image"]]
    if caption_models:
        name = max(caption_models, key=lambda m: trained[m]["cv_mean_f1"])
        oof = sigmoid(read_logits(paths.model_dir(name) / "oof_logits.csv", ds.train_ids, ds.class_ids))
        test = sigmoid(read_logits(paths.model_dir(name) / "test_logits.csv", ds.test_ids, ds.class_ids))
        t, _ = fit_global_threshold(ds.Y, oof, min_labels=min_labels, max_labels=max_labels)
        binary[rows] = apply_threshold(test[rows], t, min_labels=min_labels, max_labels=max_labels)
        info = {"model": name, "threshold": round(float(t), 4)}
    else:
        prior = np.broadcast_to(ds.Y.mean(0), (int(rows.sum()), ds.Y.shape[1]))
        binary[rows] = apply_threshold(prior, 1.0, min_labels=max(1, min_labels), max_labels=max_labels)
        info = {"model": "class priors", "threshold": None}
    log.warning("%d test rows have no usable image; predicted from %s (listed in the manifest)", len(ids), info["model"])
    return dict(info, rows=ids)


def run_infer(paths, cfg: dict, *, quiet: bool | None = None, timestamp: str | None = None) -> dict:
    with stage("infer", paths.dataset):
        ds = load_dataset(paths, cfg, quiet=quiet)
        folds = ds.folds()
        trained = _trained_models(paths.runs)
        names = choose_models(cfg, trained)
        class_ids = ds.class_ids
        image_ok = ds.val.test["image_ok"].to_numpy(bool)

        oof = np.stack([sigmoid(read_logits(paths.model_dir(m) / "oof_logits.csv", ds.train_ids, class_ids)) for m in names])
        test = np.stack([sigmoid(read_logits(paths.model_dir(m) / "test_logits.csv", ds.test_ids, class_ids)) for m in names])
        oof_p = oof.mean(0)
        test_p = test.mean(0)

        rules = cfg.get("threshold", {})
        min_labels, max_labels = int(rules.get("min_labels", 1)), rules.get("max_labels")
        threshold, oof_f1 = fit_global_threshold(ds.Y, oof_p, min_labels=min_labels, max_labels=max_labels)
        oof_pred = apply_threshold(oof_p, threshold, min_labels=min_labels, max_labels=max_labels)
        cv = metric_summary(ds.Y, oof_pred, oof_p)
        binary = apply_threshold(test_p, threshold, min_labels=min_labels, max_labels=max_labels)
        fallback = None
        if not image_ok.all():
            fallback = _caption_fallback(ds, paths, trained, ~image_ok, binary, min_labels, max_labels)
        sub = predictions_to_frame(ds.test_ids, binary, class_ids)

        manifest = {
            "capfuse_version": __version__,
            "git_commit": git_commit(paths.root),
            "dataset": paths.dataset,
            "data_dir": str(paths.data_dir),
            "data_checksum": {f: sha256_file(paths.data_dir / f) for f in ("train.csv", "test.csv")},
            "folds_file": str(paths.folds_file.relative_to(paths.root)) if paths.folds_file.is_relative_to(paths.root) else str(paths.folds_file),
            "folds_sha256": sha256_file(paths.folds_file),
            "k": int(folds.max()) + 1,
            "models": {m: {k: trained[m].get(k) for k in ("kind", "seed", "cv_mean_f1", "cv_map")} for m in names},
            "blend": "mean of probabilities",
            "threshold": {"kind": "global", "value": round(float(threshold), 4), "min_labels": min_labels,
                          "max_labels": max_labels},
            "cv": {k: round(float(v), 5) for k, v in cv.items()},
            "cv_note": "OOF mean F1 with the threshold fitted on the same OOF rows (in-sample for the threshold)",
            "test_rows": len(ds.test_ids),
            "test_rows_without_image": int((~image_ok).sum()),
            "image_fallback": fallback,
            "train_rows_quarantined": int(len(ds.val.quarantine)),
        }
        written = write_submission(sub, ds.test_ids, class_ids, paths.submissions, paths.dataset, manifest,
                                   timestamp=timestamp)
        log.info("models: %s; threshold %.3f", ", ".join(names), threshold)
        log.info("CV mean F1 %.4f | micro F1 %.4f | macro F1 %.4f | mAP %.4f", cv["mean_f1"], cv["micro_f1"],
                 cv["macro_f1"], cv["map"])
        for key, path in written.items():
            log.info("wrote %s", path)
        return {"manifest": manifest, "paths": {k: str(v) for k, v in written.items()}, "oof_f1": oof_f1}


def summary_table(paths) -> str:
    board = paths.runs / "leaderboard.csv"
    if not board.exists():
        return ""
    return pd.read_csv(board).to_string(index=False)
