"""Fold 0's labels never reach fold 0's out-of-fold answers, through the real CLI.

``capfuse all`` runs a second time on the tiny data with fold 0's label sets shuffled among
fold 0's rows (same images, captions and fold file). What the code promises, and is checked:

* every base model's fold-0 OOF logits are bit-for-bit the same: fold 0's models were trained
  on the other folds only; the other folds' logits move, since their models trained on fold 0's
  rows, which shows the shuffle is real;
* the second level's fold-0 probabilities (``oof_probs.csv``, nested: fold k's blend weights and
  stacker are fitted on the other folds' OOF rows) do not depend on fold 0's labels. They do
  depend on the other folds' OOF logits, which a base model trained on fold 0's rows made, so
  the second run's second level is not the first's; the promise is checked where it holds, on
  the same base logits: ``capfuse stack`` with fold 0's labels shuffled and with them restored
  gives fold 0 the same probabilities and the other folds different ones.

The same holds with the choice among candidates made on the test-like rows
(``ensemble.shift.use: always``): fold 0's rows of ``oof_probs_nested.csv`` come from the
candidate chosen on the other folds alone, so fold 0's labels steer neither the candidate nor
its probabilities there.

The submitted thresholds are tuned on every OOF row (in-sample, as the manifest says), so they
are not part of the promise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capfuse.cli import main
from capfuse.utils.io import read_json
from conftest import TINY_RUN_ARGS, TinyRun

FITTED = ("weighted_blend", "stack")  # the second-level candidates fitted on labels


def _shuffle_fold0_labels(train_csv: Path, fold0: set[str], seed: int = 0) -> int:
    """Give fold 0's rows each other's label sets (captions and ids stay); returns rows changed."""
    head, *lines = train_csv.read_text(encoding="utf-8").splitlines()
    fields = [line.split(",", 2) for line in lines]  # ImageID, Labels, the caption (commas and all)
    at = [i for i, f in enumerate(fields) if f[0] in fold0]
    labels = [fields[i][1] for i in np.random.default_rng(seed).permutation(at)]
    changed = sum(fields[i][1] != lab for i, lab in zip(at, labels))
    for i, lab in zip(at, labels):
        fields[i][1] = lab
    train_csv.write_text("\n".join([head, *(",".join(f) for f in fields)]) + "\n", encoding="utf-8")
    return changed


def _run(run: TinyRun, *args: str) -> None:
    common = ["--data", str(run.data), "--root", str(run.root), "--config", str(run.config), "--quiet"]
    assert main([args[0], *common, *TINY_RUN_ARGS, *args[1:]]) == 0


def _by_fold(csv: Path, fold0: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.read_csv(csv, dtype={"ImageID": str}).set_index("ImageID").sort_index()
    frame = frame.drop(columns=[c for c in ("fold",) if c in frame])
    held = frame.index.isin(sorted(fold0))
    return frame[held], frame[~held]


@pytest.fixture(scope="module")
def shuffled(tiny_run, tmp_path_factory) -> tuple[TinyRun, set[str]]:
    root = tmp_path_factory.mktemp("shuffled") / "project"
    shutil.copytree(tiny_run.data, root / "data" / tiny_run.data.name)
    shutil.copytree(tiny_run.root / "folds", root / "folds")
    # The encoders' features do not depend on labels: the cache is reused, the models are not.
    shutil.copytree(tiny_run.root / "runs" / "tiny" / "cache", root / "runs" / "tiny" / "cache")
    run = TinyRun(root, root / "data" / tiny_run.data.name, tiny_run.config)
    folds = pd.read_csv(root / "folds" / "tiny.csv", dtype={"ImageID": str})
    fold0 = set(folds.loc[folds["fold"] == 0, "ImageID"])
    changed = _shuffle_fold0_labels(run.data / "train.csv", fold0)
    assert changed >= len(fold0) // 2, "the shuffle left most of fold 0's label sets where they were"
    _run(run, "all")
    return run, fold0


@pytest.mark.slow
def test_fold0_oof_logits_of_every_model_ignore_fold0_labels(tiny_run, shuffled):
    run, fold0 = shuffled
    models = list(read_json(tiny_run.root / "runs" / "tiny" / "ensemble" / "stack.json")["base_models"])
    assert models and models == list(read_json(run.root / "runs" / "tiny" / "ensemble" / "stack.json")["base_models"])
    for model in models:
        before = _by_fold(tiny_run.root / "runs" / "tiny" / model / "oof_logits.csv", fold0)
        after = _by_fold(run.root / "runs" / "tiny" / model / "oof_logits.csv", fold0)
        pd.testing.assert_frame_equal(before[0], after[0], check_exact=True, obj=f"{model}: fold 0")
        assert not before[1].equals(after[1]), f"{model}: the other folds did not move; the shuffle reached nothing"


@pytest.mark.slow
@pytest.mark.parametrize("candidate", FITTED)
def test_fold0_second_level_probabilities_ignore_fold0_labels(tiny_run, shuffled, candidate, tmp_path):
    run, fold0 = shuffled
    # A private copy: the second level is refitted twice on the same base logits.
    own = TinyRun(tmp_path / "project", tmp_path / "project" / "data" / run.data.name, run.config)
    shutil.copytree(run.root, own.root, symlinks=True, ignore=shutil.ignore_patterns("cache"))
    probs = own.root / "runs" / "tiny" / "ensemble" / "oof_probs.csv"
    _run(own, "stack", "--set", f"ensemble.candidates=[{candidate}]")
    shuffled_labels = _by_fold(probs, fold0)
    shutil.copy(tiny_run.data / "train.csv", own.data / "train.csv")  # fold 0's true labels again
    _run(own, "stack", "--set", f"ensemble.candidates=[{candidate}]")
    true_labels = _by_fold(probs, fold0)
    assert read_json(own.root / "runs" / "tiny" / "ensemble" / "stack.json")["chosen"] == candidate
    pd.testing.assert_frame_equal(shuffled_labels[0], true_labels[0], check_exact=True, obj=f"{candidate}: fold 0")
    assert not shuffled_labels[1].equals(true_labels[1]), f"{candidate}: the other folds' probabilities did not move"


@pytest.mark.slow
def test_fold0_second_level_probabilities_ignore_fold0_labels_when_chosen_on_test_like_rows(
    tiny_run, shuffled, tmp_path
):
    run, fold0 = shuffled
    own = TinyRun(tmp_path / "project", tmp_path / "project" / "data" / run.data.name, run.config)
    shutil.copytree(run.root, own.root, symlinks=True, ignore=shutil.ignore_patterns("cache"))
    ens = own.root / "runs" / "tiny" / "ensemble"
    assert (own.root / "runs" / "tiny" / "shift_scores.csv").exists()
    _run(own, "stack", "--set", "ensemble.shift.use=always")
    # The nested choice's OOF probabilities (the kept candidate's own are in oof_probs.csv).
    shuffled_labels = _by_fold(ens / "oof_probs_nested.csv", fold0)
    shutil.copy(tiny_run.data / "train.csv", own.data / "train.csv")  # fold 0's true labels again
    _run(own, "stack", "--set", "ensemble.shift.use=always")
    true_labels = _by_fold(ens / "oof_probs_nested.csv", fold0)
    choice = read_json(ens / "stack.json")["choice"]
    assert choice["score"] == "like_nested_mean_f1" and len(choice["per_fold"]) == 3
    pd.testing.assert_frame_equal(shuffled_labels[0], true_labels[0], check_exact=True, obj="fold 0")
    assert not shuffled_labels[1].equals(true_labels[1]), "the other folds' probabilities did not move"
