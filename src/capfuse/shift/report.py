"""The shift report as data: what ``runs/<dataset>/shift.json`` holds, the manifest's summary of
it, the log block and the warning line. Pure functions of the analyses' results."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capfuse.shift.adversarial import DIMS, MARGIN, NULL_REPEATS, Adversarial, K
from capfuse.shift.novelty import Novelty

TOP_ROWS = 8  # rows listed (and shown as thumbnails in the HTML report) per table
SCHEMA = 1


@dataclass(frozen=True)
class Input:
    """One input's vectors: every training row, and the test rows ``test_rows`` (indices into the
    test ids: test rows without a usable image have no image vector and are left out)."""

    name: str
    train: np.ndarray
    test: np.ndarray
    test_rows: np.ndarray
    source: str  # where the vectors come from, in words
    dims: int  # the input's width before any projection

    def stacked(self) -> np.ndarray:
        """Training rows, then test rows, in the cache's own dtype (float16 for image vectors)."""
        return np.concatenate([self.train, self.test])


def primary(results: list[Adversarial]) -> Adversarial:
    """The input whose training-row scores are written out: both inputs together when measured."""
    by_name = {r.name: r for r in results}
    return next(by_name[n] for n in ("both", "image", "caption", *by_name) if n in by_name)


def warning_text(results: list[Adversarial], dataset: str) -> str | None:
    """The one-line warning, or None when no input shows more shift than random splits do."""
    shifted = [r for r in results if r.shifted]
    if not shifted:
        return None
    worst = max(shifted, key=lambda r: r.test.auc)
    return (
        f"train/test shift: a classifier tells test rows from training rows ({worst.name} vectors: AUC "
        f"{worst.test.auc:.3f}, 95 % CI {worst.test.low:.3f}-{worst.test.high:.3f}; random splits of the training "
        f"rows reach at most {worst.null_high:.3f}). Random K-fold CV is then likely optimistic for this test set: "
        "expect the test score below the CV and nested-CV figures. The second level chooses on the most test-like "
        f"training rows (runs/{dataset}/shift_scores.csv, ensemble.shift); where images recur, use grouped folds "
        "(folds.groups: auto)."
    )


def build(
    dataset: str,
    train_ids: list[str],
    test_ids: list[str],
    results: list[Adversarial],
    inputs: dict[str, Input],
    novelty: Novelty | None,
) -> dict:
    """Everything ``shift.json`` holds."""
    n_train = len(train_ids)
    main = primary(results) if results else None
    train_like = []
    if main is not None:
        order = np.argsort(-main.scores[:n_train], kind="stable")[:TOP_ROWS]
        train_like = [{"ImageID": train_ids[i], "test_likeness": round(float(main.scores[i]), 4)} for i in order]
    novel = []
    if novelty is not None:
        image = inputs["image"]
        # Test-likeness of a test row: its OOF score under the image input, where it has one.
        image_scores = next((r.scores[n_train:] for r in results if r.name == "image"), None)
        for j in np.argsort(-novelty.test_distance, kind="stable")[:TOP_ROWS]:
            novel.append(
                {
                    "ImageID": test_ids[int(image.test_rows[j])],
                    "distance": round(float(novelty.test_distance[j]), 4),
                    "nearest_train": train_ids[int(novelty.test_nearest[j])],
                    "test_likeness": None if image_scores is None else round(float(image_scores[j]), 4),
                }
            )
    return {
        "schema": SCHEMA,
        "dataset": dataset,
        "rows": {"train": n_train, "test": len(test_ids)},
        "method": {
            "classifier": f"logistic regression on the standardised top-{DIMS} principal components",
            "folds": f"{K}-fold stratified on the train/test indicator, out of fold",
            "ci": "DeLong 95 %",
            "null": f"{NULL_REPEATS} random splits of the training rows in the train:test proportions",
            "shift_when": f"auc > null_high + {MARGIN}",
        },
        "inputs": [r.as_dict() | {"source": inputs[r.name].source} for r in results],
        "scores_from": None if main is None else main.name,
        "novelty": None if novelty is None else novelty.as_dict(),
        "shifted": any(r.shifted for r in results),
        "warning": warning_text(results, dataset),
        "train_most_test_like": train_like,
        "test_most_novel": novel,
    }


def summary(report: dict, path: str) -> dict:
    """The manifest's ``shift`` block: the verdict, each input's AUC against its null, novelty."""
    novelty = report["novelty"]
    return {
        "shifted": report["shifted"],
        "warning": report["warning"],
        "auc": {r["input"]: r["auc"] for r in report["inputs"]},
        "null_high": {r["input"]: r["null_high"] for r in report["inputs"]},
        "test_beyond_train_p95": None if novelty is None else novelty["test_beyond_train_p95"],
        "file": path,
    }


def table(report: dict) -> str:
    """The log block: one line per input, then novelty."""
    lines = [f"{'input':<8} {'rows':>6} {'AUC':>6}  {'95 % CI':<13} {'null max':>8}  shift"]
    for r in report["inputs"]:
        low, high = r["ci95"]
        lines.append(
            f"{r['input']:<8} {r['rows']:>6} {r['auc']:>6.3f}  {low:.3f}-{high:.3f}   {r['null_high']:>8.3f}  "
            f"{'YES' if r['shifted'] else 'no'}"
        )
    n = report["novelty"]
    if n is not None:
        lines.append(
            f"novelty: {100 * n['test_beyond_train_p95']:.1f} % of test images lie farther from training than 95 % of "
            f"training images do (about {100 * n['expected_without_shift']:.0f} % without a shift); median nearest "
            f"distance test {n['test_median']:.3f}, train {n['train_median']:.3f}"
        )
    return "\n".join(lines)
