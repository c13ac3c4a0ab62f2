"""One trainer for every model kind: folds, resume, OOF and test logits, metrics, leaderboard.

For fold k the model trains on the other folds and predicts the held-out fold (its OOF rows)
and the test set. Each finished fold is written atomically with a ``done.json`` last, so an
interrupted run skips completed folds; a change of config, data or folds starts over. A fold's
``done.json`` carries the fingerprint it was trained under, and only a fold of the run's own
fingerprint is skipped.

The same fold loop runs as (model, fold) jobs in other processes or machines
(``capfuse.training.jobs``): ``open_run`` prepares the run folder, ``train_fold`` trains one fold
exactly as the loop would, and ``train_model`` then finds every fold done and assembles the run.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capfuse import config as cfglib
from capfuse.data.logits import logits_frame
from capfuse.encoders.cost import light_report
from capfuse.ensemble.decision import apply_threshold, fit_global_threshold
from capfuse.features.align import ALIGNMENT_FILE
from capfuse.metrics import gap_at_k, mean_average_precision, mean_sample_f1
from capfuse.models import MODELS
from capfuse.training.fingerprint import run_fingerprint
from capfuse.training.fold_state import accepted, claim_resume_state, fold_fingerprint
from capfuse.training.pseudo import PseudoSource, folds_sha, pseudo_counts, pseudo_targets
from capfuse.utils import deadline
from capfuse.utils.dist import barrier, rank_world
from capfuse.utils.io import read_json, remove_stale_tmp, write_csv, write_json, write_npy, write_text
from capfuse.utils.lock import fold_lock
from capfuse.utils.log import log
from capfuse.utils.numeric import sigmoid
from capfuse.utils.runs import (
    FINGERPRINT_FILE,
    FINGERPRINT_SCHEME,
    check_inside,
    check_name,
    fingerprint_record,
    read_fingerprint,
    read_scheme,
    remove_run,
)
from capfuse.utils.seed import seed_everything
from capfuse.utils.timing import timed


def model_inputs(ds, folds: np.ndarray, feats: dict) -> dict:
    """What ``train_model`` reads besides the model's config: a dataset's ids, labels and folds,
    and the features (with their fingerprint) that the model reads."""
    return dict(
        train_ids=ds.train_ids,
        test_ids=ds.test_ids,
        Y=ds.Y,
        folds=folds,
        class_ids=ds.class_ids,
        feats=feats,
        data_fingerprint=feats["fingerprint"],
    )


@dataclass(frozen=True)
class _Run:
    """What ``train_model`` settles before its first fold; a (model, fold) job settles the same."""

    name: str
    out_dir: Path
    settings: cfglib.ModelSettings
    model: object
    fp: str
    folds_checksum: str
    labelled: np.ndarray
    unlabelled: np.ndarray
    pseudo_from: PseudoSource | None


def _plan(name: str, model_cfg: dict, out_dir: Path, inputs: dict) -> _Run:
    """``inputs``: ``train_model``'s keyword arguments after ``out_dir``."""
    train_ids, folds, feats = inputs["train_ids"], inputs["folds"], inputs["feats"]
    data_fingerprint, pseudo_from = inputs["data_fingerprint"], inputs.get("pseudo_from")
    labelled = inputs.get("labelled")
    # Resolved once, here, and handed down; the dict itself stays as it is: it is what the run
    # folder's config.yaml holds (its fingerprint hashes the resolved settings).
    settings = cfglib.resolve_model(model_cfg)
    model = MODELS.create(settings.kind, cfg=settings, seed=settings.seed)
    if pseudo_from is not None and settings.kind != "net":
        raise ValueError(
            f"{name}: pseudo-label rounds need a net model (masked partial targets); kind is {settings.kind}"
        )
    # Label-ratio mode: only ``labelled`` train rows train; the others are predicted by every fold
    # (``extra_logits.npy``) so that pseudo-label rounds can use them as unlabelled images.
    labelled = np.ones(len(train_ids), bool) if labelled is None else np.asarray(labelled, bool)
    unlabelled = np.flatnonzero(~labelled)
    if len(unlabelled):
        if settings.kind != "net":
            raise ValueError(f"{name}: label-ratio mode needs a net model; kind is {settings.kind}")
        data_fingerprint = f"{data_fingerprint}|labelled:{hashlib.sha256(labelled.tobytes()).hexdigest()}"
    # The rows of an extra unlabelled folder (``data.unlabelled``) sit after the test rows and
    # are predicted like the unlabelled train rows, for the next round to label.
    unlabelled = np.concatenate([unlabelled, np.asarray(feats.get("extra_pool_rows", []), dtype=np.int64)])
    if pseudo_from is not None:
        data_fingerprint = f"{data_fingerprint}|pseudo:{pseudo_from.producer}:{pseudo_from.fingerprint()}"
    # The run folder is named after a plain name and lies where its parent says, symlinks
    # resolved: it is written into and, on a change, removed.
    check_name(name, "model name")
    check_name(out_dir.name, "run folder name")
    check_inside(out_dir, out_dir.parent)
    return _Run(
        name=name,
        out_dir=out_dir,
        settings=settings,
        model=model,
        fp=run_fingerprint(model_cfg, data_fingerprint, folds),
        folds_checksum=folds_sha(folds),
        labelled=labelled,
        unlabelled=unlabelled,
        pseudo_from=pseudo_from,
    )


def _open(run: _Run, model_cfg: dict, feats: dict) -> None:
    """Make the run folder this run's: a folder of another fingerprint goes first."""
    out_dir = run.out_dir
    # The run folder is this function's to write, so what a killed run of it left goes here,
    # whichever stage (train, pseudo rounds, ratios, ablate) called it.
    remove_stale_tmp(out_dir)
    if out_dir.exists() and read_fingerprint(out_dir) != run.fp and not _empty_dir(out_dir):
        if read_scheme(out_dir) not in (None, FINGERPRINT_SCHEME):
            log.info(
                "%s: run folder fingerprinted from the raw YAML before fingerprints hashed the resolved config; "
                "retraining it once",
                run.name,
            )
        else:
            log.info("%s: config, data or folds changed since the last run; starting over", run.name)
        remove_run(out_dir, out_dir.parent)  # refuses a folder without our fingerprint.json
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / FINGERPRINT_FILE, fingerprint_record(run.fp))
    write_text(out_dir / "config.yaml", cfglib.dump(model_cfg))
    if "alignment" in feats:
        # The channel statistics the test rows were aligned by: a bundle aligns new rows by them.
        write_json(out_dir / ALIGNMENT_FILE, feats["alignment"])


def open_run(name: str, model_cfg: dict, *, out_dir: Path, **inputs) -> list[int]:
    """Prepare ``out_dir`` as ``train_model`` does and return the folds it would still train.

    For (model, fold) jobs (``capfuse.training.jobs``): the parent opens the run, the jobs train
    the folds (``train_fold``), and ``train_model`` then finds them done and assembles the run.
    A fold's ``done.json`` of another fingerprint is removed here, as ``train_model`` removes it.
    """
    run = _plan(name, model_cfg, out_dir, inputs)
    _open(run, model_cfg, inputs["feats"])
    pending = []
    for fold in range(int(inputs["folds"].max()) + 1):
        done = fold_fingerprint(out_dir / f"fold{fold}")
        if done is not None and done != run.fp:
            (out_dir / f"fold{fold}" / "done.json").unlink()
        if done != run.fp:
            pending.append(fold)
    return pending


def train_fold(name: str, model_cfg: dict, fold: int, *, out_dir: Path, **inputs) -> bool:
    """Train fold ``fold`` of a run that ``open_run`` opened, exactly as ``train_model`` trains it.

    The unit of a (model, fold) job. Touches only ``out_dir/fold<fold>/`` (and appends to the
    run's log), so jobs of one run may run at once. Returns False when the fold was already done
    under the run's fingerprint (a retried job whose first attempt finished).
    """
    run = _plan(name, model_cfg, out_dir, inputs)
    if read_fingerprint(out_dir) != run.fp:
        raise RuntimeError(f"{name} fold {fold}: {out_dir} is not open for this run (open_run first)")
    if fold_fingerprint(out_dir / f"fold{fold}") == run.fp:
        return False
    _fit_fold(run, fold, **{key: inputs[key] for key in ("feats", "Y", "folds", "train_ids", "test_ids")}, write=True)
    return True


def train_model(
    name: str,
    model_cfg: dict,
    *,
    out_dir: Path,
    train_ids: list[str],
    test_ids: list[str],
    Y: np.ndarray,
    folds: np.ndarray,
    class_ids: list[int],
    feats: dict,
    data_fingerprint: str,
    pseudo_from: PseudoSource | None = None,
    labelled: np.ndarray | None = None,
) -> dict:
    """Train ``name`` over all folds; returns its CV metrics (also written to metrics.json).

    With ``pseudo_from``, fold k also trains on the unlabelled pool labelled by the previous
    round's fold-k model (checked by ``capfuse.training.pseudo.check_provenance`` before it is used).
    """
    inputs = dict(feats=feats, data_fingerprint=data_fingerprint, pseudo_from=pseudo_from, labelled=labelled)
    run = _plan(name, model_cfg, out_dir, dict(train_ids=train_ids, folds=folds, **inputs))
    settings, model, fp, seed = run.settings, run.model, run.fp, run.settings.seed
    k = int(folds.max()) + 1
    # Under torchrun every rank runs this function; only rank 0 touches the files.
    rank, world = rank_world()
    is_main = rank == 0
    if is_main:
        _open(run, model_cfg, inputs["feats"])
    barrier()

    oof = np.full((len(train_ids), len(class_ids)), np.nan, dtype=np.float32)
    test_sum = np.zeros((len(test_ids), len(class_ids)), dtype=np.float64)
    for fold in range(k):
        fold_dir = out_dir / f"fold{fold}"
        va = np.flatnonzero(folds == fold)  # every row of the fold is scored, labelled for training or not
        done = accepted(fold_fingerprint(fold_dir), fp, fold_dir)
        if done is not None and done != fp:
            # A fold of another config, data or folds (or from before done.json recorded its
            # fingerprint) is not this run's result: it is trained again, its done.json removed
            # first so that an interruption cannot leave it looking finished.
            log.info("%s fold %d: its done.json was written under another fingerprint; training it again", name, fold)
            barrier()  # every rank has read it before rank 0 removes it
            if is_main:
                (fold_dir / "done.json").unlink()
            done = None
        if done == fp:
            log.info("%s fold %d: done earlier, skipped", name, fold)
        elif is_main or getattr(model, "supports_ddp", False):
            _fit_fold(run, fold, feats=feats, Y=Y, folds=folds, train_ids=train_ids, test_ids=test_ids, write=is_main)
        barrier()  # other ranks wait for rank 0's files (or share its DDP training)
        if is_main:
            oof[va] = np.load(fold_dir / "val_logits.npy")
            test_sum += np.load(fold_dir / "test_logits.npy")
    if not is_main:
        return {}
    if np.isnan(oof).any():
        raise RuntimeError(f"{name}: OOF logits do not cover every train row")

    test_logits = (test_sum / k).astype(np.float32)
    write_csv(out_dir / "oof_logits.csv", logits_frame(train_ids, oof, class_ids, {"fold": folds}))
    write_csv(out_dir / "test_logits.csv", logits_frame(test_ids, test_logits, class_ids))

    probs = sigmoid(oof)
    threshold, best_f1 = fit_global_threshold(Y, probs)
    metrics = {
        "model": name,
        "kind": settings.kind,
        "needs_image": bool(model.needs_image),
        "folds": k,
        "seed": seed,
        "cv_mean_f1": round(float(best_f1), 5),
        "cv_mean_f1_at_0.5": round(float(mean_sample_f1(Y, apply_threshold(probs, 0.5))), 5),
        "cv_map": round(float(mean_average_precision(Y, probs)), 5),
        # MuMIC's ranking metrics: GAP@10 pools each image's top 10, GAP every (image, class) pair.
        "cv_gap_at_10": round(float(gap_at_k(Y, probs, 10)), 5),
        "cv_gap": round(float(gap_at_k(Y, probs, None)), 5),
        "threshold": round(float(threshold), 3),
        # Summed over the folds' own records, so a resumed run reports the whole training time.
        "train_minutes": round(
            sum(read_json(out_dir / f"fold{f}" / "done.json")["seconds"] for f in range(k)) / 60.0, 3
        ),
        **light_report(settings, *model.head_cost(feats, len(class_ids))),
    }
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def _fit_fold(run: _Run, fold: int, *, write: bool, **inputs) -> None:
    """Train one fold; when ``write`` (rank 0), under the fold's lock: one writer per fold folder."""
    if not write:
        _fit_fold_unlocked(run, fold, write=False, **inputs)
        return
    lock = run.out_dir / f".fold{fold}.lock"
    with fold_lock(lock, what=f"capfuse: {run.name} fold {fold}"):
        fold_dir = run.out_dir / f"fold{fold}"
        if accepted(fold_fingerprint(fold_dir), run.fp, fold_dir) == run.fp:
            return  # a writer that held the lock before this one finished the fold
        _fit_fold_unlocked(run, fold, write=True, **inputs)


def _fit_fold_unlocked(
    run: _Run,
    fold: int,
    *,
    feats: dict,
    Y: np.ndarray,
    folds: np.ndarray,
    train_ids: list[str],
    test_ids: list[str],
    write: bool,
) -> None:
    """Train one fold and, when ``write`` (rank 0), write its files with ``done.json`` last.

    Everything a fold's result depends on comes from its arguments and ``seed + fold``, never
    from the folds trained before it in this process: a (model, fold) job gives the same bytes.
    """
    name, seed, fold_dir = run.name, run.settings.seed, run.out_dir / f"fold{fold}"
    va = np.flatnonzero(folds == fold)
    tr = np.flatnonzero((folds != fold) & run.labelled)
    seed_everything(seed + fold)
    t0 = time.perf_counter()
    pseudo = None
    if run.pseudo_from is not None:
        pool_ok = feats.get("test_image_ok", np.ones(len(test_ids), bool))
        pseudo = pseudo_targets(
            run.pseudo_from,
            fold,
            Y,
            tr,
            len(train_ids),
            pool_ok,
            run.folds_checksum,
            train_ids,
            unlabelled=run.unlabelled,
            folds=folds,
            feats=feats,
        )
        if write:
            n_pos, n_neg = pseudo_counts(pseudo.targets, pseudo.mask)
            write_json(fold_dir / "pseudo.json", {**pseudo.info, "n_pos": n_pos.tolist(), "n_neg": n_neg.tolist()})
            write_npy(fold_dir / "pseudo_rows.npy", pseudo.rows)
            write_npy(fold_dir / "pseudo_targets.npy", pseudo.targets)
            write_npy(fold_dir / "pseudo_mask.npy", pseudo.mask)
    extra = ({"pseudo": pseudo} if pseudo else {}) | ({"extra_rows": run.unlabelled} if len(run.unlabelled) else {})
    if write:
        claim_resume_state(fold_dir, run.fp, f"{name} fold {fold}")
    with timed("fold", model=name, fold=fold), deadline.fold_share():
        result = run.model.fit_fold(feats, Y, tr, va, fold_dir=fold_dir, **extra)
    if write:
        result.info["folds_sha256"] = run.folds_checksum
        _write_fold(
            fold_dir, run.out_dir / "log.jsonl", result, Y, tr, va, fold, seed, time.perf_counter() - t0, name, run.fp
        )


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _write_fold(
    fold_dir: Path, log_path: Path, result, Y, tr, va, fold: int, seed: int, seconds: float, name: str, fingerprint: str
) -> None:
    """Logits first, the log line next, ``done.json`` last: its presence means the fold is complete,
    and its ``fingerprint`` says under which config, data and folds."""
    write_npy(fold_dir / "val_logits.npy", result.val_logits)
    write_npy(fold_dir / "test_logits.npy", result.test_logits)
    if result.extra_logits is not None:
        write_npy(fold_dir / "extra_logits.npy", result.extra_logits)
    for part, scores in (result.align or {}).items():
        write_npy(fold_dir / f"{part}_align.npy", scores)
    val_pred = apply_threshold(sigmoid(result.val_logits), 0.5)
    record = {
        "fold": fold,
        "seed": seed + fold,
        "n_train": len(tr),
        "n_val": len(va),
        "val_mean_f1@0.5": float(mean_sample_f1(Y[va], val_pred)),
        "seconds": round(seconds, 2),
        **result.info,
        "fingerprint": fingerprint
        + (deadline.stop_suffix(result.info["epochs_run"]) if result.info.get("stopped_by") == "time" else ""),
    }
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    write_json(fold_dir / "done.json", record)
    log.info("%s fold %d: mean F1@0.5 %.4f (%.1f s)", name, fold, record["val_mean_f1@0.5"], record["seconds"])
