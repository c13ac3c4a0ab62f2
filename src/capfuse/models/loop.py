"""The epochs of one fold, shared by the cached and the fine-tuning modes of the ``net`` kind.

Early stopping on an inner split of the fold's training rows (or fixed epochs), the cosine
schedule with warm-up, gradient accumulation and clipping, an optional moving average of the
weights (what the stopping rows judge and the fold keeps), pseudo-labelled rows with their masks
and ramped weights, checkpoints every epoch and an exact resume, DDP shards with rank 0's stopping
decision broadcast. The held-out fold is predicted once, after the last epoch.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from capfuse.models.base import FoldOutput
from capfuse.models.settings import TrainSettings, cosine_with_warmup, inner_split, schedule_epochs, val_score
from capfuse.nn.calibration import calibrate_net
from capfuse.utils import deadline
from capfuse.utils.io import atomic_path
from capfuse.utils.log import log, progress
from capfuse.utils.prefetch import prefetched


def _save_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))


def _save_torch(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train_epochs(
    settings: TrainSettings,
    seed: int,
    net,
    Y,
    tr,
    va,
    test_rows,
    fold_dir: Path,
    *,
    predict,
    make_batch,
    train_step,
    param_groups=None,
    scaler=None,
    rank: int = 0,
    world: int = 1,
    pseudo=None,
    extra_rows: np.ndarray | None = None,
    fixed_epochs: int | None = None,
    prefetch: int = 0,
) -> FoldOutput:
    """Epochs with early stopping on an inner split of ``tr``, checkpoints and resume; shared by
    both modes. ``va`` (the held-out fold) is predicted once, after the last epoch.

    ``fixed_epochs`` trains exactly that many epochs on all of ``tr`` and keeps the last
    (the second pass of ``early_stop: refit``); ``early_stop: none`` does the same for
    ``train.epochs``. Under DDP every rank runs this loop on its own shard of each epoch's
    order; rank 0 scores the stopping rows and checkpoints, and broadcasts the score so that
    all ranks take the same early-stopping decision. ``prefetch`` batches are made ahead in a
    background thread (fine-tuning, where making a batch decodes images); the same batches either way.
    """
    s = settings
    is_main = rank == 0
    fold_dir.mkdir(parents=True, exist_ok=True)
    stopping = fixed_epochs is None and s.early_stop != "none"
    # Every rank draws the same split: it depends on the training rows' labels and the seed only.
    fit_rows, stop_rows = inner_split(Y, tr, s.inner_frac, seed) if stopping else (np.asarray(tr), None)
    groups = (
        param_groups if param_groups is not None else [{"params": [p for p in net.parameters() if p.requires_grad]}]
    )
    # foreach: one kernel per step for all tensors instead of one per tensor (torch's default on
    # CPU is the per-tensor loop); the same arithmetic, so the same weights to the last bit.
    opt = torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay, foreach=True)
    for g in opt.param_groups:
        g.setdefault("lr_mult", 1.0)
        g["initial_lr"] = s.lr * g["lr_mult"]
    # Pseudo-labelled pool rows join the labelled ones in every epoch; their targets,
    # masks and (ramped) weights come from ``pseudo``, keyed by feature row.
    train_rows = fit_rows if pseudo is None else np.concatenate([fit_rows, pseudo.rows])
    if pseudo is not None:  # feature row -> its index in ``pseudo``, -1 for labelled rows
        pseudo_at = np.full(max(len(Y), int(pseudo.rows.max(initial=0)) + 1), -1, np.int64)
        pseudo_at[pseudo.rows] = np.arange(len(pseudo.rows))

    def targets_for(rows: np.ndarray, epoch: int) -> dict:
        if pseudo is None:
            return {"targets": torch.from_numpy(Y[rows].astype(np.float32))}
        at = pseudo_at[rows]
        is_pseudo = at >= 0
        targets = np.zeros((len(rows), Y.shape[1]), np.float32)
        mask = np.ones((len(rows), Y.shape[1]), np.float32)
        weight = np.ones(len(rows), np.float32)
        targets[~is_pseudo] = Y[rows[~is_pseudo]]
        targets[is_pseudo], mask[is_pseudo] = pseudo.targets[at[is_pseudo]], pseudo.mask[at[is_pseudo]]
        weight[is_pseudo] = pseudo.weight_at(epoch)
        return {
            "targets": torch.from_numpy(targets),
            "target_mask": torch.from_numpy(mask),
            "sample_weight": torch.from_numpy(weight),
        }

    steps_per_epoch = max(1, math.ceil(len(train_rows) / s.batch_size / s.accumulate))
    # The schedule always spans ``train.epochs`` (fewer under ``train.max_steps``): a refit for
    # E epochs follows the same learning-rate curve as the inner run that chose E.
    span = schedule_epochs(s, steps_per_epoch)
    n_epochs = span if fixed_epochs is None else int(fixed_epochs)
    total = steps_per_epoch * span
    warmup = int(round(s.warmup_epochs * steps_per_epoch))

    ema = None
    if s.ema_halflife > 0:
        decay = 0.5 ** (1.0 / (s.ema_halflife * steps_per_epoch))
        ema = AveragedModel(_unwrap(net), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    start_epoch, best, best_epoch, bad, step = 0, -1.0, -1, 0, 0
    last = fold_dir / "last.pt"
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        _unwrap(net).load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, best, best_epoch, bad, step = (
            state["epoch"] + 1,
            state["best"],
            state["best_epoch"],
            state["bad"],
            state["step"],
        )
        torch.set_rng_state(state["torch_rng"])  # dropout continues as if never interrupted
        log.info("  resumed %s at epoch %d (best %.4f at epoch %d)", fold_dir.name, start_epoch, best, best_epoch)

    t0 = time.perf_counter()
    # A budgeted run stops a fold at a step boundary once its deadline passes (the caller drops
    # the whole model). Under DDP the ranks' clocks could disagree by a step and one rank would
    # wait for the others forever, so the deadline applies to single-process training only.
    budgeted = deadline.remaining() is not None and world == 1
    timing: dict = {"step_seconds": [], "epoch_seconds": []}
    completed = start_epoch
    # A budget's clean stop (capfuse.utils.deadline): with early stopping on and one process, a
    # fold ends after the epoch whose successor would overrun its share of the model's allowance,
    # keeping its best epoch like early stopping does; a replayed plan stops it at the same epoch.
    clean_stop = stop_rows is not None and world == 1
    replayed = deadline.replayed_stop(deadline.stop_key(fold_dir)) if clean_stop else None
    if replayed is not None:
        n_epochs = min(n_epochs, replayed)
    stopped_by_time = False
    first = start_epoch if bad < s.patience else n_epochs  # a resumed fold that had already stopped
    for epoch in progress(range(first, n_epochs), f"{fold_dir.name} epochs", quiet=None if is_main else True):
        # One generator per (seed, epoch): the order is reproducible and resumes identically.
        rng = np.random.default_rng([seed, epoch])
        order = train_rows[rng.permutation(len(train_rows))]
        flips = rng.random(len(order)) < s.flip_p
        if world > 1:  # equal, disjoint shards: DDP needs the same number of steps on every rank
            keep = len(order) // world * world
            order, flips = order[:keep][rank::world], flips[:keep][rank::world]
        net.train()
        losses = []
        epoch_start = time.perf_counter()
        slices = [
            (order[i : i + s.batch_size], flips[i : i + s.batch_size]) for i in range(0, len(order), s.batch_size)
        ]
        for b, ((rows, _), batch) in enumerate(zip(slices, prefetched(make_batch, slices, prefetch), strict=True)):
            losses.append(train_step(batch, targets_for(rows, epoch)))
            if budgeted:
                deadline.check(f"{fold_dir.parent.name} {fold_dir.name}")
            if (b + 1) % s.accumulate == 0 or b == len(slices) - 1:
                if scaler is not None:
                    scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
                if s.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], s.grad_clip)
                mult = cosine_with_warmup(step, total, warmup, s.min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"] * mult
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if ema is not None:
                    ema.update_parameters(_unwrap(net))
        # Where an epoch's time goes, for a time budget's rehearsal (capfuse.budget.probe): the
        # steps grow with the rows, the stopping rows' scores and the checkpoints much less.
        timing["step_seconds"].append(round(time.perf_counter() - epoch_start, 4))
        if ema is not None:  # the stopping rows, and the checkpoint below, read the average
            _swap_weights(_unwrap(net), ema.module)
        if stop_rows is None:  # no stopping rows: the last epoch is the model
            score, improved = float("nan"), epoch == n_epochs - 1
        else:
            score = val_score(Y[stop_rows], predict(stop_rows), s.stop_metric) if is_main else 0.0
            if world > 1:
                shared = [score]
                torch.distributed.broadcast_object_list(shared, src=0)
                score = shared[0]
            improved = score > best + 1e-5
        if improved:
            best, best_epoch, bad = score, epoch, 0
            if is_main:
                _save_safetensors(fold_dir / "best.safetensors", _unwrap(net).state_dict())
        elif stop_rows is not None:
            bad += 1
        if ema is not None:  # training goes on from the live weights
            _swap_weights(_unwrap(net), ema.module)
        if is_main:
            log.debug(
                "  %s epoch %d: loss %.4f, stopping-set mean F1 %.4f%s",
                fold_dir.name,
                epoch,
                float(np.mean(losses)),
                score,
                " *" if improved else "",
            )
            _save_torch(
                last,
                {
                    "model": _unwrap(net).state_dict(),
                    "optimizer": opt.state_dict(),
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "bad": bad,
                    "step": step,
                    "torch_rng": torch.get_rng_state(),
                }
                | ({"ema": ema.state_dict()} if ema is not None else {}),
            )
        timing["epoch_seconds"].append(round(time.perf_counter() - epoch_start, 4))
        completed = epoch + 1
        if bad >= s.patience:
            break
        if replayed is not None and completed >= replayed:
            stopped_by_time = True
        elif clean_stop and completed < n_epochs and _past_share(timing["epoch_seconds"][-1]):
            stopped_by_time = True
            log.info("  %s: stopped after epoch %d by its share of the time budget", fold_dir.name, completed)
            break

    if world > 1:
        torch.distributed.barrier()  # rank 0 has written best.safetensors
    _unwrap(net).load_state_dict(load_file(str(fold_dir / "best.safetensors")))
    calibration = None
    if s.calibrate and stop_rows is not None and is_main:
        # On the stopping rows (training rows), after every epoch choice: the held-out fold
        # still meets the model only below.
        calibration = calibrate_net(_unwrap(net), lambda: predict(stop_rows), Y[stop_rows])
        if calibration is not None:
            _save_safetensors(fold_dir / "best.safetensors", _unwrap(net).state_dict())
    empty = np.zeros((0, Y.shape[1]), np.float32)
    # The first and only time the held-out rows meet the model: after every choice is made.
    predict_start = time.perf_counter()
    val_logits = predict(va) if is_main and len(va) else empty
    test_logits = predict(test_rows) if is_main and len(test_rows) else empty
    timing["predict_seconds"] = round(time.perf_counter() - predict_start, 4)
    if is_main and last.exists():
        os.remove(last)  # the fold is finished; best.safetensors is what later stages need
    info = {
        "early_stop": s.early_stop if fixed_epochs is None else "refit",
        "best_epoch": int(best_epoch),
        "epochs_run": int(completed),
        "n_fit": int(len(fit_rows)),
        "n_stop": int(0 if stop_rows is None else len(stop_rows)),
        "batch_size": int(s.batch_size),
        "train_seconds": round(time.perf_counter() - t0, 1),
        **timing,
    }
    if stop_rows is not None:
        info["best_stop_mean_f1"] = round(float(best), 5)
    if stopped_by_time:
        info["stopped_by"] = "time"
    if calibration is not None:
        info["logit_scale"], info["logit_shift"] = (round(v, 5) for v in calibration)
    extra = predict(extra_rows) if is_main and extra_rows is not None and len(extra_rows) else None
    return FoldOutput(val_logits, test_logits, info, extra)


def _past_share(epoch_seconds: float) -> bool:
    """Might one more epoch end past the fold's share of the allowance? It is counted half as long
    again as the last one: the fold's predictions follow it, and a loaded machine slows it."""
    end = deadline.fold_end()
    return end is not None and time.monotonic() + 1.5 * epoch_seconds > end


@torch.no_grad()
def _swap_weights(net: torch.nn.Module, other: torch.nn.Module) -> None:
    """Exchange the values of two modules of one architecture, parameters and buffers, in place
    (the optimiser and ``predict`` keep their references to ``net``'s tensors)."""
    for a, b in zip(
        itertools.chain(net.parameters(), net.buffers()),
        itertools.chain(other.parameters(), other.buffers()),
        strict=True,
    ):
        held = a.clone()
        a.copy_(b)
        b.copy_(held)


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if hasattr(net, "module") else net
