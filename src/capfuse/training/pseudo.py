"""Pseudo-label rounds without leakage: selection, provenance, and the ramp of the pseudo loss.

Round r+1's fold-k model trains on the labelled rows of the other folds plus the unlabelled
pool (the test images) labelled by round r's fold-k model. That model never saw fold k's
labels, so fold k's OOF predictions stay honest. Every fold's pseudo-labels carry a provenance
record (round, fold, producing model and the fold it held out, the fold file's checksum) that
is checked before training: a producer that trained on fold k is refused.

Selection is class-aware, as in semantic-aware alignment: cut-offs per class, not one global cut. Class c expects about
``prior_c * n_pool`` positives in the pool, with ``prior_c`` its rate in the producer's
training rows; the ``pos_keep`` most confident of those become positives, the ``neg_keep``
least likely of the expected negatives become negatives, and every entry in between is masked
out of the loss (a partial label), not forced to 0 or 1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from scipy import sparse

from capfuse.config.schema import PseudoSettings  # noqa: F401 (the pseudo: block; re-exported)
from capfuse.utils.io import read_json
from capfuse.utils.numeric import sigmoid


class ProvenanceError(RuntimeError):
    """Pseudo-labels whose producer saw the labels of the fold they would train."""


@dataclass
class PseudoTargets:
    """Targets for unlabelled rows: ``rows`` index the feature rows (train rows first, then the pool)."""

    rows: np.ndarray  # [P] int
    targets: np.ndarray  # [P, C] float32 (0/1, or probabilities when soft)
    mask: np.ndarray  # [P, C] uint8: 1 = the entry counts in the loss
    weight: float = 1.0
    ramp_epochs: float = 5.0
    info: dict = field(default_factory=dict)

    def weight_at(self, epoch: int) -> float:
        return self.weight * ramp(epoch, self.ramp_epochs)


def ramp(epoch: int, ramp_epochs: float) -> float:
    """Linear warm-up of the pseudo loss: (epoch + 1) / ramp_epochs, capped at 1.

    Early epochs follow the clean labels; the pseudo-labels, which carry the producer's
    mistakes, weigh in fully only once the model has a view of its own.
    """
    if ramp_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / ramp_epochs)


def select(
    probs: np.ndarray, prior: np.ndarray, settings: PseudoSettings, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Class-aware pseudo-labels for the pool: (targets [P, C], mask [P, C], cut-offs per class).

    For class c with ``e = prior_c * P`` expected positives, the ``round(pos_keep * e)`` rows
    scoring highest are positives and the ``round(neg_keep * (P - e))`` rows scoring lowest are
    negatives; the rest are masked. A class then gets about as many pseudo-positives as its
    prior says, whatever the calibration of the producer's scores for that class. ``order``
    (default: ``probs``) are the scores that rank the rows, e.g. a blend with the graph's;
    soft targets and the reported cut-offs always come from ``probs``.
    """
    p = np.asarray(probs, dtype=np.float64)
    o = p if order is None else np.asarray(order, dtype=np.float64)
    n, c = p.shape
    prior = np.clip(np.asarray(prior, dtype=np.float64), 0.0, 1.0)
    targets = np.zeros((n, c), np.float32)
    mask = np.zeros((n, c), np.uint8)
    cut_pos, cut_neg = np.full(c, np.nan), np.full(c, np.nan)
    for j in range(c):
        order_j = np.argsort(-o[:, j], kind="stable")
        expected = prior[j] * n
        n_pos = int(round(settings.pos_keep * expected))
        n_neg = int(round(settings.neg_keep * (n - expected)))
        n_neg = min(n_neg, n - n_pos)  # never both positive and negative
        pos, neg = order_j[:n_pos], order_j[n - n_neg :] if n_neg else order_j[:0]
        targets[pos, j] = p[pos, j] if settings.soft else 1.0
        targets[neg, j] = p[neg, j] if settings.soft else 0.0
        mask[pos, j] = mask[neg, j] = 1
        if n_pos:
            cut_pos[j] = p[pos[-1], j]
        if n_neg:
            cut_neg[j] = p[neg[0], j]
    return targets, mask, {"positive_cutoff": cut_pos, "negative_cutoff": cut_neg}


def folds_sha(folds: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(folds, dtype=np.int64).tobytes()).hexdigest()


def provenance(round_: int, fold: int, producer: str, producer_record: dict, folds_checksum: str) -> dict:
    """The record written beside fold ``fold``'s pseudo-labels of round ``round_``."""
    return {
        "round": round_,
        "fold": fold,
        "producer": producer,
        "producer_held_out_fold": producer_record.get("fold"),
        "producer_folds_sha256": producer_record.get("folds_sha256"),
        "folds_sha256": folds_checksum,
    }


def check_provenance(record: dict, fold: int, folds_checksum: str) -> None:
    """Refuse pseudo-labels for fold ``fold`` unless their producer held out that very fold.

    A producer that held out another fold trained on fold ``fold``'s labels, and its predictions
    on the pool would carry them into the model whose OOF predictions fold ``fold`` scores.
    """
    where = f"round {record.get('round')} fold {fold} (producer {record.get('producer')})"
    if record.get("fold") != fold:
        raise ProvenanceError(f"{where}: pseudo-labels recorded for fold {record.get('fold')}, not {fold}")
    if record.get("producer_held_out_fold") != fold:
        raise ProvenanceError(
            f"{where}: the producer held out fold {record.get('producer_held_out_fold')}, so it trained on "
            f"fold {fold}'s labels; only the fold-{fold} model of the previous round may label for fold {fold}"
        )
    if record.get("producer_folds_sha256") != folds_checksum or record.get("folds_sha256") != folds_checksum:
        raise ProvenanceError(f"{where}: the producer was trained on another fold file; retrain the rounds")


def kept_positives(targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[P, C] bool: kept entries whose target rounds to 1 (soft targets included)."""
    return (mask == 1) & (targets >= 0.5)


def pseudo_counts(targets: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class: kept pseudo-positives and kept pseudo-negatives."""
    pos = kept_positives(targets, mask)
    return pos.sum(0).astype(int), ((mask == 1) & ~pos).sum(0).astype(int)


def pseudo_quality(targets: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> dict:
    """Per class: true positives among the kept pseudo-positives, and true labels in the pool.

    For the report only: ``truth`` is the demo's test_labels.csv, which no stage trains on.
    """
    known = truth >= 0  # -1: a row whose label nobody knows (e.g. an unlabelled folder without labels)
    kept = kept_positives(targets, mask) & known
    return {
        "tp": (kept & (truth == 1)).sum(0).astype(int),
        "n_true": (truth == 1).sum(0).astype(int),
        "n_kept": kept.sum(0).astype(int),
    }


def label_subset(Y: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """Which train rows keep their labels in label-ratio mode (the low-label setting): a stratified ``ratio``.

    Multilabel-stratified (iterative stratification), so each class keeps about ``ratio`` of its
    positives; a class that would lose all of them gets one row back, so every class present in
    ``Y`` stays present when it can.
    """
    Y = np.asarray(Y)
    n = len(Y)
    if not 0 < ratio <= 1:
        raise ValueError(f"label ratio must be in (0, 1], got {ratio}")
    keep = np.zeros(n, bool)
    if ratio >= 1 or round(ratio * n) >= n:
        return ~keep
    split = MultilabelStratifiedShuffleSplit(n_splits=1, train_size=ratio, test_size=1 - ratio, random_state=seed)
    rows, _ = next(split.split(np.zeros((n, 1)), Y))
    keep[rows] = True
    rng = np.random.default_rng(seed)
    for c in np.flatnonzero(Y.any(0) & ~Y[keep].any(0)):
        keep[rng.choice(np.flatnonzero(Y[:, c] == 1))] = True
    return keep


def propagate(
    features: np.ndarray,
    labelled: np.ndarray,
    Y: np.ndarray,
    *,
    k: int = 10,
    alpha: float = 0.99,
    gamma: float = 3.0,
    iters: int = 20,
) -> np.ndarray:
    """Label propagation over a kNN graph of the rows (Iscen et al., 2019): scores [N, C].

    ``features`` [N, D] holds every row of the graph (labelled rows and the pool); ``labelled``
    indexes the rows whose labels ``Y`` [len(labelled), C] seed the diffusion. Each class's
    seeds are scaled to sum to 1, so rare classes are not drowned by common ones. The scores of
    a network and of the graph err differently (one generalises through its weights, the other
    through neighbours in feature space), which is why blending them makes better pseudo-labels
    than either, and why the graph needs no label beyond the ones the fold trains on.
    """

    x = np.asarray(features, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    k = min(k, n - 1)
    nbr = np.empty((n, k), np.int64)
    sim = np.empty((n, k), np.float32)
    for start in range(0, n, 2048):  # chunks keep the similarity block small at 30k rows
        s = x[start : start + 2048] @ x.T
        np.fill_diagonal(s[:, start : start + 2048], -np.inf)
        idx = np.argpartition(-s, k, axis=1)[:, :k]
        nbr[start : start + len(s)] = idx
        sim[start : start + len(s)] = np.take_along_axis(s, idx, axis=1)
    w = sparse.csr_matrix(
        (np.clip(sim, 0, None).ravel() ** gamma, (np.repeat(np.arange(n), k), nbr.ravel())), shape=(n, n)
    )
    w = w + w.T
    d = np.asarray(w.sum(1)).ravel()
    d = 1.0 / np.sqrt(np.maximum(d, 1e-12))
    s = sparse.diags(d) @ w @ sparse.diags(d)
    seeds = np.zeros((n, Y.shape[1]), np.float64)
    seeds[labelled] = Y
    seeds /= np.maximum(seeds.sum(0, keepdims=True), 1.0)
    f = seeds.copy()
    for _ in range(iters):
        f = alpha * (s @ f) + (1 - alpha) * seeds
    return f.astype(np.float32)


def rank_blend(probs: np.ndarray, graph: np.ndarray, weight: float) -> np.ndarray:
    """Per-class percentile ranks of the producer's and the graph's scores, mixed by ``weight``.

    Selection only orders each class's scores, so ranks lose nothing and need no calibration
    between two scores on unrelated scales.
    """

    def ranks(a: np.ndarray) -> np.ndarray:
        r = np.argsort(np.argsort(a, axis=0, kind="stable"), axis=0, kind="stable")
        return r / max(len(a) - 1, 1)

    return (1 - weight) * ranks(probs) + weight * ranks(graph)


@dataclass(frozen=True)
class PseudoSource:
    """Where a pseudo-label round takes its labels from: the previous round's run of the model."""

    producer: str  # the previous round's model name, e.g. fusion_crossattention or fusion_crossattention@r1
    producer_dir: Path
    settings: PseudoSettings
    round: int

    def fingerprint(self) -> str:
        # The producer's own fingerprint: retraining it invalidates every later round.
        return read_json(self.producer_dir / "fingerprint.json")["fingerprint"]


def pseudo_targets(
    src: PseudoSource,
    fold: int,
    Y: np.ndarray,
    tr: np.ndarray,
    n_train: int,
    pool_ok: np.ndarray,
    folds_checksum: str,
    train_ids: list[str] | None = None,
    unlabelled: np.ndarray | None = None,
    folds: np.ndarray | None = None,
    feats: dict | None = None,
) -> PseudoTargets:
    """Fold ``fold``'s pseudo-labels: the previous round's fold-``fold`` test predictions, checked.

    The prior that sets each class's cut-offs is the positive rate of the rows this fold trains
    on (``tr``), the same rows the producer was trained on.
    """
    record = read_json(src.producer_dir / f"fold{fold}" / "done.json")
    if "folds_sha256" not in record and train_ids is not None and (src.producer_dir / "oof_logits.csv").exists():
        # A run from before fold records carried the fold file's checksum: its OOF file says
        # which fold held out each row, which is the same fact.
        oof = pd.read_csv(src.producer_dir / "oof_logits.csv", dtype={"ImageID": str}, usecols=["ImageID", "fold"])
        record = {**record, "folds_sha256": folds_sha(oof.set_index("ImageID").loc[list(train_ids), "fold"].to_numpy())}
    prov = provenance(src.round, fold, src.producer, record, folds_checksum)
    check_provenance(prov, fold, folds_checksum)
    fold_dir = src.producer_dir / f"fold{fold}"
    logits = np.load(fold_dir / "test_logits.npy")
    align = None
    if src.settings.scores == "align":
        # Semantic alignment: the label-query head's alignment scores rank the pool; the producer's
        # probabilities still give the soft targets and the cut-offs reported.
        if not (fold_dir / "test_align.npy").exists():
            raise ValueError(
                f"pseudo.scores: align needs a producer with a label-query head "
                f"(fusion.label_query); {fold_dir} has no test_align.npy"
            )
        align = np.load(fold_dir / "test_align.npy")
    pool = np.flatnonzero(pool_ok)  # unreadable test images: zeros in, nothing to learn from
    rows, pool_logits = n_train + pool, logits[pool]
    pool_align = align[pool] if align is not None else None
    if unlabelled is not None and len(unlabelled):
        # Label-ratio mode: the other folds' unlabelled train rows join the pool (never fold
        # ``fold``'s own rows, which it is scored on), and so do the rows of an unlabelled
        # folder. The producer predicted every one, in ``unlabelled``'s order (``extra_logits.npy``).
        extra = np.load(src.producer_dir / f"fold{fold}" / "extra_logits.npy")
        if len(extra) != len(unlabelled):
            raise ProvenanceError(f"{src.producer_dir}: its unlabelled rows differ from this run's; retrain the rounds")
        keep = np.ones(len(unlabelled), bool)
        in_train = unlabelled < n_train  # rows of the extra folder belong to no fold
        keep[in_train] = folds[unlabelled[in_train]] != fold
        rows, pool_logits = np.concatenate([unlabelled[keep], rows]), np.concatenate([extra[keep], pool_logits])
        if pool_align is not None:
            pool_align = np.concatenate([np.load(fold_dir / "extra_align.npy")[keep], pool_align])
    probs, info = sigmoid(pool_logits), {"scores": src.settings.scores}
    order = pool_align
    if src.settings.graph > 0:
        x = graph_features(feats or {})
        if x is None:
            raise ValueError(f"pseudo.graph needs cached pooled features; {src.producer} has none")
        # The graph holds this fold's training rows (its only seeds) and the pool; fold
        # ``fold``'s rows are absent, so neither their labels nor their places steer it.
        nodes = np.concatenate([tr, rows])
        scores = propagate(x[nodes], np.arange(len(tr)), Y[tr], k=src.settings.graph_k)[len(tr) :]
        order = rank_blend(probs if order is None else order, scores, src.settings.graph)
        info.update(graph=src.settings.graph, graph_k=src.settings.graph_k)
    targets, mask, cuts = select(probs, Y[tr].mean(0), src.settings, order)
    return PseudoTargets(
        rows=rows,
        targets=targets,
        mask=mask,
        weight=src.settings.weight,
        ramp_epochs=src.settings.ramp_epochs,
        info={**prov, "pool_rows": int(len(pool)), **info, **{k: v.tolist() for k, v in cuts.items()}},
    )


def graph_features(feats: dict) -> np.ndarray | None:
    """[N, D] rows for the label-propagation graph: the pooled image and caption vectors, each
    L2-normalised so that neither modality dominates the distances; None without cached vectors."""
    view = feats.get("views", {}).get("orig", {})
    parts = [np.asarray(view[key], dtype=np.float32) for key in ("img_pooled", "cap_pooled") if key in view]
    if not parts:
        return None
    return np.concatenate([a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12) for a in parts], axis=1)
