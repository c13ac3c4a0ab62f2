"""Pseudo-label rounds of one model: ``name@r1..name@rR``, each labelled by the round before.

The targets of a round (selection, provenance, the kNN graph) are ``capfuse.training.pseudo``'s;
this module runs the rounds through the trainer, stops them when CV stops rising, and writes the
per-round, per-class report (``pseudo_rounds.csv``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.training.cv import train_model
from capfuse.training.leaderboard import update_leaderboard
from capfuse.training.pseudo import PseudoSettings, PseudoSource, pseudo_counts, pseudo_quality
from capfuse.utils.io import write_csv
from capfuse.utils.log import log, stage


def pseudo_rounds(
    paths,
    ds,
    name: str,
    model_cfg: dict,
    metrics: dict,
    settings: PseudoSettings,
    common: dict,
    *,
    out_root: Path | None = None,
    labelled: np.ndarray | None = None,
    report: Path | None = None,
    leaderboard: bool = True,
    producer_root: Path | None = None,
    before_round: Callable[[str, dict, Path, PseudoSource], None] | None = None,
) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """Rounds 1..R of ``name``, each a model ``name@r<r>`` labelled by the round before it.

    A round whose CV mean F1 does not beat the previous round's by more than ``min_gain`` ends
    the rounds. Returns (leaderboard, one report row per round and class), and writes the report
    to ``report`` (default ``runs/<dataset>/pseudo_rounds.csv``). ``out_root`` and ``labelled``
    serve label-ratio mode: runs live elsewhere and only some train rows keep their labels.
    ``producer_root`` holds round 0 when it lives elsewhere than the rounds (default ``out_root``).
    ``before_round(name, config, run folder, source)`` trains a round's folds before the trainer
    assembles them (the train stage's parallel jobs): a round needs the previous round's
    assembled run, so rounds follow one another and only the folds of one round run at once.
    """
    out_root = out_root or paths.runs
    report = report or paths.runs / "pseudo_rounds.csv"
    truth = _pool_truth(paths, ds)
    rows = [_round_rows(name, 0, metrics, None, None, ds.class_ids, "labelled data only")]
    prev_name, prev = name, metrics
    board = None
    for r in range(1, settings.rounds + 1):
        rname = f"{name}@r{r}"
        src = PseudoSource(prev_name, ((producer_root or out_root) if r == 1 else out_root) / prev_name, settings, r)
        with stage(f"train {rname}", f"pseudo-labels from {prev_name}"):
            round_cfg = {**model_cfg, "name": rname, "pseudo_round": r, "pseudo": dataclasses.asdict(settings)}
            if before_round is not None:
                before_round(rname, round_cfg, out_root / rname, src)
            cur = train_model(rname, round_cfg, out_dir=out_root / rname, pseudo_from=src, labelled=labelled, **common)
        if not cur:
            return None, pd.DataFrame()
        if leaderboard:
            board = update_leaderboard(paths.runs / "leaderboard.csv", cur)
        gain = cur["cv_mean_f1"] - prev["cv_mean_f1"]
        improved = gain > settings.min_gain
        note = f"CV {gain:+.4f} vs round {r - 1}" + ("" if improved or r == settings.rounds else "; rounds stopped")
        rows.append(_round_rows(rname, r, cur, out_root / rname, truth, ds.class_ids, note))
        log.info("%s: CV mean F1 %.4f (%s)", rname, cur["cv_mean_f1"], note)
        if not improved:
            break
        prev_name, prev = rname, cur
    new = pd.concat(rows, ignore_index=True)
    old = pd.read_csv(report) if report.exists() else None
    if old is not None:
        new = pd.concat([old[old["base_model"] != name], new], ignore_index=True)
    write_csv(report, new)
    return board, pd.concat(rows, ignore_index=True)


def _pool_truth(paths, ds) -> np.ndarray | None:
    """True labels of every feature row (train, test, unlabelled folder), for the report only.

    The test part comes from the demo's ``test_labels.csv`` and the folder's from its
    ``unlabelled_labels.csv``; no stage trains on either. Rows without a known label are -1.
    """

    def read(path, ids) -> np.ndarray:
        out = np.full((len(ids), len(ds.class_ids)), -1, np.int8)
        if not path.exists():
            return out
        labels = pd.read_csv(path, dtype={"ImageID": str, "Labels": str}, keep_default_na=False).set_index("ImageID")
        known = [i for i, image_id in enumerate(ids) if image_id in labels.index]
        if len(known) < len(ids):
            log.warning(
                "%s lacks %d of %d ids: no pseudo-label precision for them", path, len(ids) - len(known), len(ids)
            )
        if known:
            out[known] = ds.val.classes.to_matrix(
                [[int(x) for x in labels.loc[ids[i], "Labels"].split()] for i in known]
            )
        return out

    parts = [ds.Y.astype(np.int8), read(paths.data_dir / "test_labels.csv", ds.test_ids)]
    if ds.extra is not None:
        parts.append(read(ds.extra_dir / "unlabelled_labels.csv", list(ds.extra["ImageID"])))
    truth = np.concatenate(parts)
    return truth if (truth[len(ds.Y) :] >= 0).any() else None


def _round_rows(
    model: str, round_: int, metrics: dict, run_dir: Path | None, truth, class_ids, note: str
) -> pd.DataFrame:
    """One row per class (and one for all classes) of one round: pseudo-labels, their quality, CV.

    Every fold labels the same pool with its own producer; counts are the mean over folds, and
    precision and recall pool the folds' entries.
    """
    base = {
        "base_model": model.split("@")[0],
        "model": model,
        "round": round_,
        "cv_mean_f1": metrics["cv_mean_f1"],
        "cv_map": metrics["cv_map"],
        "note": note,
    }
    if run_dir is None:
        return pd.DataFrame([{**base, "class": "all"}])
    c = len(class_ids)
    n_pos, n_neg, tp, n_true, n_kept = (np.zeros(c) for _ in range(5))
    fold_files = sorted(run_dir.glob("fold*/pseudo_targets.npy"))
    for f in fold_files:
        targets, mask = np.load(f), np.load(f.with_name("pseudo_mask.npy"))
        if truth is not None:
            q = pseudo_quality(targets, mask, truth[np.load(f.with_name("pseudo_rows.npy"))])
            tp, n_true, n_kept = tp + q["tp"], n_true + q["n_true"], n_kept + q["n_kept"]
        pos, neg = pseudo_counts(targets, mask)
        n_pos, n_neg = n_pos + pos, n_neg + neg
    k = max(len(fold_files), 1)

    def quality(sel) -> dict:
        if truth is None:
            return {}
        # Precision over the kept positives whose truth is known; recall over the known positives.
        pos, hit, true = n_kept[sel].sum(), tp[sel].sum(), n_true[sel].sum()
        return {"precision": round(hit / pos, 4) if pos else None, "recall": round(hit / true, 4) if true else None}

    out = [
        {
            **base,
            "class": cid,
            "pseudo_pos": round(n_pos[j] / k, 1),
            "pseudo_neg": round(n_neg[j] / k, 1),
            **quality([j]),
        }
        for j, cid in enumerate(class_ids)
    ]
    out.append(
        {
            **base,
            "class": "all",
            "pseudo_pos": round(n_pos.sum() / k, 1),
            "pseudo_neg": round(n_neg.sum() / k, 1),
            **quality(slice(None)),
        }
    )
    return pd.DataFrame(out)
