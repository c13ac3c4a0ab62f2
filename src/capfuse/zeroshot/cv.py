"""The cross-fitted zero-shot evaluation: held-out folds, unseen classes, ZSL/GZSL tables.

For every evaluation fold a projector trains on the other folds' train rows and on the test
rows (captions only) and embeds the held-out fold's images, which it never saw in any form.
The unseen classes' labels never reach training. With discovered class names
(``capfuse.data.names``) each fold's label prompts come from names discovered on that fold's
training rows only: the held-out fold's labels shape neither its projector nor its prompts.
``capfuse.stages.zeroshot`` writes what this returns; the names comparison reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from capfuse.data.names import ClassNames, fold_prompt_terms, prompt_terms
from capfuse.utils.log import log
from capfuse.zeroshot.evaluate import per_class_ap, random_metrics, results_table, zeroshot_metrics
from capfuse.zeroshot.inputs import ImageFeatures
from capfuse.zeroshot.settings import ZeroShotSettings
from capfuse.zeroshot.text import CaptionSpace
from capfuse.zeroshot.train import embed_rows, train_projection


@dataclass
class CrossFitted:
    table: pd.DataFrame  # one row per scorer (image, caption, image+caption, random)
    per_class: pd.DataFrame
    rows: np.ndarray  # the evaluated train rows
    logs: list[dict]
    image_scores: np.ndarray  # [len(rows), C]: each evaluated image against its fold's label prompts


def label_text(
    space: CaptionSpace,
    prompts,
    names: list[str],
    discovery: ClassNames | None,
    captions=None,
    Y=None,
    rows=None,
    groups: list[list[int]] | None = None,
) -> np.ndarray:
    """Unit label vectors: from ``names`` or, with discovered names and ``rows``, from the names
    discovered on those rows only (several terms per class, averaged).

    ``groups``: column groups discovered apart (the seen classes, then the unseen ones), so that
    one group's labels never move another's names: discovery weighs each class against its
    rivals, and the unseen classes' labels must not reach the seen classes' prompts.
    """
    if discovery is None or not discovery.discovered:
        return space.labels(names, prompts)
    if rows is None:
        terms = [prompt_terms(f, discovery.settings.prompt_terms) for f in discovery.found]
    else:
        ids = [f.id for f in discovery.found]
        terms = [[] for _ in ids]
        for cols in groups or [list(range(len(ids)))]:
            part = np.asarray(Y)[np.ix_(rows, cols)]
            _, found = fold_prompt_terms(captions, part, rows, [ids[c] for c in cols], discovery.settings)
            for c, t in zip(cols, found):
                terms[c] = t
    return space.class_labels(terms, prompts)


def evaluation_setup(
    ds, folds: np.ndarray, settings: ZeroShotSettings
) -> tuple[ClassNames | None, np.ndarray, list[int]]:
    """What a cross-fitted evaluation of ``ds`` needs besides the features: the discovered names
    (None when the names come from classes.csv or are numbers), the test rows with a usable
    image (the unlabelled pool, dataset row indices) and the folds whose held-out images are scored."""
    discovery = ds.names if ds.names is not None and ds.names.discovered else None
    n_train = len(ds.train_ids)
    test_rows = n_train + np.flatnonzero(ds.image_ok[n_train:])
    eval_folds = sorted(set(folds.tolist())) if settings.eval_folds == "all" else [int(k) for k in settings.eval_folds]
    return discovery, test_rows, eval_folds


def cross_fitted(
    feats: ImageFeatures,
    Y: np.ndarray,
    folds: np.ndarray,
    eval_folds: list[int],
    test_rows: np.ndarray,
    unseen: list[int],
    settings: ZeroShotSettings,
    seed: int,
    space: CaptionSpace,
    names: list[str],
    discovery: ClassNames | None = None,
    captions: list[str] | None = None,
    text: np.ndarray | None = None,
    train=train_projection,
) -> CrossFitted:
    """Train a projector per evaluation fold and score its held-out images (see the module).

    ``text``: the label vectors of ``names`` when already embedded (names not discovered);
    ``train``: the projector's trainer (``train_projection``; a test may watch it)."""
    n_train = len(Y)
    seen = [c for c in range(len(names)) if c not in unseen]
    per_fold = discovery is not None and discovery.discovered
    if not per_fold and text is None:
        text = label_text(space, settings.prompts, names, None)
    # The image embeddings live in the caption space: the captions' width.
    emb = np.full((n_train, feats.caption.shape[1]), np.nan, np.float32)
    image_scores = np.full((n_train, len(names)), np.nan, np.float32)
    caption_scores = np.full((n_train, len(names)), np.nan, np.float32)
    logs = []
    for k in eval_folds:
        held = np.flatnonzero(folds == k)
        if not len(held):
            raise ValueError(f"zeroshot.eval.eval_folds: fold {k} has no rows in the fold file")
        train_rows = np.flatnonzero(folds != k)
        rows = np.concatenate([train_rows, test_rows])
        labelled = rows < n_train
        fold_text = label_text(space, settings.prompts, names, discovery, captions, Y, train_rows) if per_fold else text
        # Only the seen columns are handed over: the unseen labels cannot reach training.
        labels = np.zeros((len(rows), len(seen)), np.float32)
        labels[labelled] = Y[np.ix_(rows[labelled], seen)]
        net, history = train(
            feats, rows, settings, seed=seed + k, labels=labels, labelled=labelled, label_text=fold_text[seen]
        )
        emb[held] = embed_rows(net, feats, held, tta=settings.tta)
        if per_fold:
            image_scores[held] = emb[held] @ fold_text.T
            caption_scores[held] = feats.caption[held] @ fold_text.T
        logs.append({"fold": k, "train_rows": int(len(rows)), "eval_rows": int(len(held)), "history": history})
        log.info(
            "zeroshot fold %d: %d training rows, %d held out, final loss %.3f",
            k,
            len(rows),
            len(held),
            history[-1]["loss"],
        )
    rows_eval = np.flatnonzero(np.isfinite(emb[:, 0]))
    Ye = Y[rows_eval]
    if per_fold:
        img, cap = image_scores[rows_eval], caption_scores[rows_eval]
    else:  # one product over every evaluated row, as before names could be discovered
        img, cap = emb[rows_eval] @ text.T, feats.caption[rows_eval] @ text.T
    results = {
        "image": zeroshot_metrics(Ye, img, unseen),
        # References: the held-out image's own caption against the prompts, and both averaged.
        "caption": zeroshot_metrics(Ye, cap, unseen),
        "image+caption": zeroshot_metrics(Ye, (img + cap) / 2, unseen),
        "random": random_metrics(Ye, unseen, settings.random_seeds, seed),
    }
    per_class = per_class_ap(Ye, {"image": img, "caption": cap}, names, unseen)
    return CrossFitted(results_table(results), per_class, rows_eval, logs, img)
