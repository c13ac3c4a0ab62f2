"""What the submission should score on the test rows, from how sure the models are there.

Nested CV scores the pipeline on training rows. When the test images are unlike the training
ones, it overstates the test score, and no fold of training rows can show by how much: no
training row has the test's look. What the test rows do show, without a label, is how confident
the models are on them. Models grow less sure on rows unlike those they learnt from, and the
drop in confidence from the training rows to the test rows tracks the drop in the score: the
difference of confidences (DoC, Guillory et al., 2021) estimates the test score as

    nested CV - (confidence on the out-of-fold rows - confidence on the test rows).

The confidence of a row here is the mean F1 its submitted label set would score if the labels
were drawn from the submitted probabilities: the metric's own expectation, exact for each row.
Both sides use the same probabilities and the same decision rule, so a miscalibration common to
both cancels in the difference. No label of a test row is read.

The manifest's readers live here too: the run's closing lines, its results file and the report
each give the estimate and, under a warning, the nested score on the most test-like rows.
"""

from __future__ import annotations

import numpy as np

CHUNK = 4096  # rows per block: the joint count table is rows x (C+1) x (C+1) floats


def _count_distribution(p: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Per row, the distribution of how many of the classes where ``member`` is True come out
    positive, each class independently with its probability in ``p``: ``[N, C+1]``."""
    n, c = p.shape
    dist = np.zeros((n, c + 1))
    dist[:, 0] = 1.0
    for j in range(c):
        q = np.where(member[:, j], p[:, j], 0.0)[:, None]
        dist[:, 1:] = dist[:, 1:] * (1.0 - q) + dist[:, :-1] * q
        dist[:, 0] *= 1.0 - q[:, 0]
    return dist


def expected_f1(probs: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """Per row, the expected sample F1 of the label set ``decided`` when each class is positive
    independently with its probability in ``probs``. With ``a`` positives inside the set of size
    ``s`` and ``b`` outside it, the row scores ``2a / (s + a + b)`` (1 when both sets are empty,
    as ``capfuse.metrics.mean_sample_f1`` scores it)."""
    p = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    d = np.asarray(decided, bool)
    if p.shape != d.shape or p.ndim != 2:
        raise ValueError(f"probabilities {p.shape} and decisions {d.shape} must be one [rows, classes] pair")
    out = np.empty(len(p))
    c = p.shape[1]
    a = np.arange(c + 1, dtype=np.float64)
    for start in range(0, len(p), CHUNK):
        pi, di = p[start : start + CHUNK], d[start : start + CHUNK]
        inside, outside = _count_distribution(pi, di), _count_distribution(pi, ~di)
        size = di.sum(1).astype(np.float64)[:, None, None]
        denominator = size + a[None, :, None] + a[None, None, :]
        f1 = np.where(denominator == 0, 1.0, 2.0 * a[None, :, None] / np.maximum(denominator, 1.0))
        out[start : start + CHUNK] = np.einsum("na,nb,nab->n", inside, outside, f1)
    return out


def confidence_estimate(
    nested: float, oof_probs: np.ndarray, oof_decided: np.ndarray, test_probs: np.ndarray, test_decided: np.ndarray
) -> dict:
    """The DoC estimate of the test score: ``nested`` less the fall in mean expected F1 from the
    out-of-fold rows to the test rows; the manifest's ``expected_test`` block."""
    train_conf = float(expected_f1(oof_probs, oof_decided).mean())
    test_conf = float(expected_f1(test_probs, test_decided).mean())
    return {
        "method": "difference of confidences: nested CV less the fall in expected mean F1 from OOF to test rows",
        "mean_f1": round(nested - (train_conf - test_conf), 5),
        "nested_mean_f1": round(float(nested), 5),
        "confidence_oof": round(train_conf, 5),
        "confidence_test": round(test_conf, 5),
    }


def estimate_line(manifest: dict) -> str | None:
    """The run's closing line for the estimate; None where the manifest has none."""
    found = manifest.get("expected_test")
    if not found:
        return None
    warned = bool((manifest.get("shift") or {}).get("warning"))
    return (
        f"  expected on the test rows from the models' confidence there: {found['mean_f1']:.4f} "
        f"(confidence {found['confidence_oof']:.4f} on the OOF rows, {found['confidence_test']:.4f} on the test rows)"
        + ("  (read this one under the shift)" if warned else "")
    )


def score_on_test_like_rows(manifest: dict) -> tuple[int, float] | None:
    """(rows, score): under a shift warning, the kept second level's nested mean F1 on the
    training rows most like the test, the CV figure nearer what the test will show (still above
    it where the test holds looks that no training row has); None without a warning or score."""
    level = manifest.get("second_level") or {}
    rows = ((level.get("choice") or {}).get("test_like") or {}).get("rows")
    score = (level.get("candidates") or {}).get(level.get("kept"), {}).get("like_nested_mean_f1")
    if not (manifest.get("shift") or {}).get("warning") or score is None or not rows:
        return None
    return int(rows), float(score)


def line_on_test_like_rows(manifest: dict) -> str | None:
    """Under a shift, the kept candidate's nested score on the training rows most like the test:
    nearer the test than all rows, still above it where the test shows looks no training row has
    (the confidence estimate below it is the line to read; docs/shift.md measures both)."""
    found = score_on_test_like_rows(manifest)
    if found is None:
        return None
    rows, score = found
    return (
        f"  on the {rows:,} training rows most like the test: {score:.4f} nested "
        "(still high where the test shows looks no training row has)"
    )
