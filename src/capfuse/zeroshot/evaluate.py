"""MKT's evaluation protocol: which classes are unseen, and how their rankings are scored.

ZSL ranks only the unseen classes on the images that carry at least one of them; GZSL ranks
every class on every evaluation image; both with mAP, F1@3, F1@5 and GAP@10. A seeded random
scorer and a per-class AP table put the numbers in context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from capfuse import metrics

SETTINGS = ("zsl", "gzsl")
F1_KS = (3, 5)
GAP_K = 10


def pick_unseen(
    Y: np.ndarray, names: Sequence[str], unseen: int | Sequence, *, min_positives: int, seed: int
) -> list[int]:
    """Column indices of the unseen classes: ``unseen`` names (or ids), or N drawn by ``seed``.

    Drawn classes need ``min_positives`` training positives so that their evaluation has
    something to rank; they are never all the classes, so something stays seen.
    """
    names = list(names)
    if isinstance(unseen, (list, tuple)):
        cols = []
        for item in unseen:
            matches = [i for i, n in enumerate(names) if n == str(item)]
            if not matches:
                raise ValueError(f"zeroshot.unseen: {item!r} is not a class name; names: {names}")
            cols.append(matches[0])
        cols = sorted(set(cols))
    else:
        n = int(unseen)
        eligible = np.flatnonzero(np.asarray(Y).sum(0) >= min_positives)
        if not 1 <= n < len(names) or n > len(eligible):
            raise ValueError(
                f"zeroshot.unseen={n}: need 1 <= N < {len(names)} classes and N <= "
                f"{len(eligible)} classes with >= {min_positives} positives"
            )
        cols = sorted(np.random.default_rng(seed).choice(eligible, size=n, replace=False).tolist())
    if len(cols) >= len(names):
        raise ValueError("zeroshot.unseen holds every class: nothing would be left to train on")
    return [int(c) for c in cols]


def zeroshot_metrics(Y: np.ndarray, scores: np.ndarray, unseen: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{"zsl": {...}, "gzsl": {...}}`` with map, f1@3, f1@5, gap@10, n_images, n_classes.

    ZSL: only the unseen columns, on images holding at least one unseen label. GZSL: every
    column on every image. F1@k is NaN where k exceeds the classes ranked.
    """
    Y, scores = np.asarray(Y), np.asarray(scores, np.float64)
    unseen = list(unseen)
    zsl_rows = np.flatnonzero(Y[:, unseen].any(1))
    parts = {"zsl": (Y[np.ix_(zsl_rows, unseen)], scores[np.ix_(zsl_rows, unseen)]), "gzsl": (Y, scores)}
    out = {}
    for setting, (y, s) in parts.items():
        row = {"map": metrics.mean_average_precision(y, s) if len(y) else float("nan")}
        for k in F1_KS:
            row[f"f1@{k}"] = metrics.f1_at_k(y, s, k) if len(y) and k <= y.shape[1] else float("nan")
        row[f"gap@{GAP_K}"] = metrics.gap_at_k(y, s, GAP_K) if len(y) else float("nan")
        row.update(n_images=int(len(y)), n_classes=int(y.shape[1]))
        out[setting] = row
    return out


def random_metrics(Y: np.ndarray, unseen: Sequence[int], seeds: int, seed: int) -> dict[str, dict[str, float]]:
    """The random scorer's metrics, averaged over ``seeds`` draws of uniform scores."""
    rng = np.random.default_rng(seed)
    runs = [zeroshot_metrics(Y, rng.random(Y.shape), unseen) for _ in range(max(1, seeds))]
    return {
        s: {
            k: float(np.mean([r[s][k] for r in runs])) if k not in ("n_images", "n_classes") else runs[0][s][k]
            for k in runs[0][s]
        }
        for s in SETTINGS
    }


def results_table(results: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """One row per scorer x setting: the columns of ``runs/<dataset>/zeroshot.csv``."""
    rows = [
        {"scorer": scorer, "setting": setting, **vals}
        for scorer, by_setting in results.items()
        for setting, vals in by_setting.items()
    ]
    cols = ["scorer", "setting", "map", *(f"f1@{k}" for k in F1_KS), f"gap@{GAP_K}", "n_images", "n_classes"]
    return pd.DataFrame(rows, columns=cols)


def per_class_ap(
    Y: np.ndarray, scores: dict[str, np.ndarray], names: Sequence[str], unseen: Sequence[int]
) -> pd.DataFrame:
    """Each class's AP over the evaluation images (GZSL ranking of images per class) per scorer."""
    out = pd.DataFrame(
        {"class": list(names), "unseen": [c in unseen for c in range(len(names))], "support": Y.sum(0).astype(int)}
    )
    for name, s in scores.items():
        out[f"ap_{name}"] = metrics.average_precision_per_class(Y, s)
    return out
