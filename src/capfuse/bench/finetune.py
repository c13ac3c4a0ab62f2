"""``capfuse bench --only finetune``: end-to-end fine-tuning throughput, batches made ahead or not.

One fold of a ``finetune: true`` model trains for a fixed number of epochs (no early stop) on the
dataset's training rows (every fifth row held out; no fold file needed), then predicts the held-out
and the test rows with flip TTA, exactly as ``capfuse train`` runs a fold. Each round trains it
twice: with ``finetune_options.prefetch: 0`` (each batch decoded in the training thread while the
accelerator waits) and with the config's value; rounds alternate the two, and medians are printed.
Images per second count every image the fold decodes: training rows times epochs, and the
predicted rows times their views.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from capfuse.config.load import load_config
from capfuse.config.schema import resolve_model
from capfuse.data.dataset import load_dataset
from capfuse.features.store import FeatureStore
from capfuse.models import MODELS
from capfuse.paths import Paths
from capfuse.training.selection import select_models


def bench_finetune(
    data: Path, config: Path, *, model: str | None, epochs: int = 1, rounds: int = 2, root: Path = Path(".")
) -> dict:
    """Median seconds and images/s of one fold with prefetch 0 and with the config's prefetch."""
    cfg = load_config(config, [f"train.epochs={epochs}", "train.early_stop=none"])
    tuned = {n: m for n, m in select_models(cfg, Path(config)).items() if resolve_model(m).finetune}
    if not tuned or (model and model not in tuned):
        raise ValueError(f"{config}: no finetune: true model{' ' + model if model else ''} to time")
    name = model or next(iter(tuned))
    model_cfg = tuned[name]
    settings = resolve_model(model_cfg)
    ahead = settings.finetune_options.prefetch or 2  # a config that turned it off still gets the comparison
    ds = load_dataset(Paths(data_dir=data, root=root.resolve()), cfg, quiet=True)
    feats = FeatureStore(ds, True, {name: model_cfg}).for_model(model_cfg)
    rows = np.arange(len(ds.train_ids))
    va, tr = rows[::5], np.setdiff1d(rows, rows[::5])
    views = 2 if settings.train.tta and "image" in settings.inputs else 1
    images = len(tr) * epochs + (len(va) + feats["n_test"]) * views
    seconds: dict[int, list[float]] = {0: [], ahead: []}
    with tempfile.TemporaryDirectory(prefix="capfuse-bench-finetune-") as tmp:
        for r in range(rounds):
            for prefetch in (0, ahead) if r % 2 == 0 else (ahead, 0):
                opts = {**(model_cfg.get("finetune_options") or {}), "prefetch": prefetch}
                net = MODELS.create("net", cfg={**model_cfg, "finetune_options": opts}, seed=settings.seed)
                t0 = time.perf_counter()
                # fit_fold returns host arrays of the logits, so the clock stops after the device is done.
                net.fit_fold(feats, ds.Y, tr, va, fold_dir=Path(tmp) / f"r{r}-p{prefetch}")
                seconds[prefetch].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "model": name,
        "device": settings.device,
        "epochs": epochs,
        "images": images,
        "train_rows": len(tr),
        "ahead": ahead,
        "seconds": med,
        "img_s": {k: images / v for k, v in med.items()},
    }


def print_finetune(r: dict) -> None:
    print(
        f"fine-tune {r['model']} on {r['device']}, one fold: {r['train_rows']} training rows x {r['epochs']} epoch(s)"
        f" + held-out and test predictions = {r['images']} images decoded (medians of alternating rounds):"
    )
    for k, label in ((0, "no prefetch"), (r["ahead"], f"prefetch {r['ahead']}")):
        print(f"  {label:<12}: {r['seconds'][k]:7.1f} s  {r['img_s'][k]:7.1f} images/s")
    print(f"  speed-up    : {r['seconds'][0] / r['seconds'][r['ahead']]:.2f}x")
