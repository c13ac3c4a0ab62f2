"""Each base model three ways, on a dataset that ships its answers (``test_labels.csv``): its CV
mean F1 on all training rows, on the training rows most like the test (the shift report's
test-likeness, the second level's ``ensemble.shift.share``), and held out on the answers.

Where CV and held-out scores part, a model's CV is inflated for this test set; whether its
test-like score parts from its CV the same way says whether the second level can see it
(docs/shift.md). Every score uses the model's own best global threshold on its OOF rows, the
leaderboard's, so the three differ only in the rows scored. ``capfuse infer`` writes the table
to ``runs/<dataset>/held_out_models.csv`` beside ``held_out.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.data.logits import read_logits
from capfuse.ensemble.decision import apply_threshold, fit_global_threshold
from capfuse.ensemble.under_shift import row_f1
from capfuse.metrics import mean_average_precision
from capfuse.results.floor import ANSWERS, binary
from capfuse.utils.numeric import sigmoid

MODELS_FILE = "held_out_models.csv"


def model_scores(ds, paths, names: list[str], like: np.ndarray | None, rule: dict) -> pd.DataFrame | None:
    """One row per model: CV, test-like CV and held-out mean F1 (and CV and held-out mAP); None
    when the dataset ships no answers. ``like``: the test-like training rows (None: not measured)."""
    path = Path(ds.paths.data_dir) / ANSWERS
    if not path.exists():
        return None
    classes = list(ds.class_ids)
    answers = pd.read_csv(path, dtype=str, keep_default_na=False)
    answers = answers.assign(ImageID=answers["ImageID"].str.strip()).drop_duplicates("ImageID").set_index("ImageID")
    rows = [i for i, image in enumerate(ds.test_ids) if image in answers.index]
    if not rows:
        return None
    known = [" ".join(t for t in str(s).split() if t.isdigit() and int(t) in classes) for s in answers["Labels"]]
    truth = binary(pd.Series(known, index=answers.index).loc[[ds.test_ids[i] for i in rows]].tolist(), classes)
    out = []
    for name in names:
        oof = sigmoid(read_logits(paths.model_dir(name) / "oof_logits.csv", ds.train_ids, classes))
        test = sigmoid(read_logits(paths.model_dir(name) / "test_logits.csv", ds.test_ids, classes))[rows]
        t, cv = fit_global_threshold(ds.Y, oof, **rule)
        held = row_f1(truth, apply_threshold(test, t, **rule)).mean()
        like_f1 = None if like is None else row_f1(ds.Y[like], apply_threshold(oof[like], t, **rule)).mean()
        out.append(
            {
                "model": name,
                "threshold": round(float(t), 4),
                "cv_mean_f1": round(float(cv), 5),
                "test_like_mean_f1": None if like_f1 is None else round(float(like_f1), 5),
                "held_out_mean_f1": round(float(held), 5),
                "cv_minus_held_out": round(float(cv - held), 5),
                "cv_map": round(float(mean_average_precision(ds.Y, oof)), 5),
                "held_out_map": round(float(mean_average_precision(truth, test)), 5),
            }
        )
    return pd.DataFrame(out)
