"""Training time of the ``net`` models at competition size, on synthetic features of the real shapes.

COMP5329 has 30,000 train images: 5-fold CV fits each fold on 24,000 rows, predicts 6,000
held-out rows and the 10,000 test rows. This module writes random float16 memory maps of the
shapes the embed step caches (pooled image vectors [N, 1280] and 4x4 token grids [N, 16, 1280]
for the original and the flipped view, MiniLM token states [N, 24, 384] with their mask, GloVe
vectors [N, 32, 50]) and fits one fold of each ``net`` model of a pipeline config on them,
through the same ``NetModel.fit_fold`` that ``capfuse train`` calls.

The features carry signal (each row is the sum of its classes' random prototypes plus noise), so
early stopping runs a realistic number of epochs instead of stopping on noise. Labels are drawn
per class with skewed frequencies, about 2.7 per row as in COMP5329. Each model fits in a fresh
process, so its peak RSS is its own.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from capfuse.config.load import load_config
from capfuse.config.schema import resolve_model
from capfuse.models import MODELS
from capfuse.models.settings import val_score
from capfuse.training.selection import select_models

N_CLASSES = 18
LABELS_PER_ROW = 2.7
IMAGE_DIM, GRID_TOKENS = 1280, 16  # EfficientNet-Lite0 and MobileNetV2 both end in 1280 channels
TEXT_DIMS = {"minilm": 384, "glove": 50}


def synthetic_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 18] uint8 multi-labels: one very common class (COMP5329's "person") and a long tail."""
    freq = np.r_[0.75, 0.4 * 0.8 ** np.arange(N_CLASSES - 1)]
    freq[1:] *= (LABELS_PER_ROW - freq[0]) / freq[1:].sum()
    Y = (rng.random((n, N_CLASSES)) < freq).astype(np.uint8)
    empty = Y.sum(1) == 0
    Y[empty, rng.integers(0, N_CLASSES, int(empty.sum()))] = 1  # every image shows something
    return Y


def _write(path: Path, shape: tuple, fill, dtype=np.float16, chunk: int = 2048) -> None:
    """A ``.npy`` memory map filled chunk by chunk (``fill(start, stop)``), so RAM stays small."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    for start in range(0, shape[0], chunk):
        arr[start : start + chunk] = fill(start, min(shape[0], start + chunk))
    arr.flush()
    del arr


def write_features(folder: Path, Y: np.ndarray, seed: int = 0, encoders: tuple[str, ...] = ("minilm",)) -> dict:
    """Write the synthetic caches for all rows of ``Y`` (train then test); returns their paths."""
    rng = np.random.default_rng(seed)
    n = len(Y)
    paths: dict = {}

    def signal(dim: int, scale: float) -> np.ndarray:
        proto = rng.standard_normal((N_CLASSES, dim)).astype(np.float32) * scale
        return proto

    img_proto = signal(IMAGE_DIM, 0.5)
    # Each token sees a random subset of the image's classes: attention has something to find.
    for view in ("orig", "hflip"):
        pooled, tokens = folder / f"img_pooled_{view}.npy", folder / f"img_tokens_{view}.npy"

        def fill_tokens(a: int, b: int, view=view) -> np.ndarray:
            r = np.random.default_rng([seed, a, view == "hflip"])
            present = (r.random((b - a, GRID_TOKENS, N_CLASSES)) < 0.5) * Y[a:b, None, :]
            out = present.astype(np.float32) @ img_proto
            out += r.standard_normal(out.shape, dtype=np.float32)
            return np.maximum(out, 0)  # post-activation features are non-negative

        _write(tokens, (n, GRID_TOKENS, IMAGE_DIM), fill_tokens)
        tok = np.load(tokens, mmap_mode="r")
        _write(pooled, (n, IMAGE_DIM), lambda a, b, tok=tok: np.asarray(tok[a:b], np.float32).mean(1))
        paths[view] = {"img_pooled": pooled, "img_tokens": tokens}
    for name in encoders:
        dim = TEXT_DIMS[name]
        length = 24 if name == "minilm" else 32
        proto = signal(dim, 1.0)
        lengths = rng.integers(6, length + 1, n)
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.uint8)
        tokens = folder / f"{name}_tokens.npy"

        def fill_caption(a: int, b: int, proto=proto, length=length, mask=mask) -> np.ndarray:
            r = np.random.default_rng([seed, a, 7])
            words = (r.random((b - a, length, N_CLASSES)) < 0.15) * Y[a:b, None, :]
            out = words.astype(np.float32) @ proto + r.standard_normal((b - a, length, proto.shape[1]), np.float32)
            return out * mask[a:b, :, None]

        _write(tokens, (n, length, dim), fill_caption)
        np.save(folder / f"{name}_mask.npy", mask)
        tok = np.load(tokens, mmap_mode="r")

        def fill_pooled(a: int, b: int, tok=tok, mask=mask) -> np.ndarray:
            m = mask[a:b, :, None].astype(np.float32)
            return (np.asarray(tok[a:b], np.float32) * m).sum(1) / m.sum(1)

        _write(folder / f"{name}_pooled.npy", (n, dim), fill_pooled)
        paths[name] = {k: folder / f"{name}_{k}.npy" for k in ("tokens", "mask", "pooled")}
    return paths


def load_features(paths: dict, inputs: list[str], caption_encoder: str, n_test: int) -> dict:
    """The ``feats`` dict ``FeatureStore.for_net`` would hand a model, from the synthetic caches."""
    views: dict = {"orig": {}, "hflip": {}}
    dims: dict = {}
    if "image" in inputs:
        for view in views:
            views[view].update({k: np.load(p, mmap_mode="r") for k, p in paths[view].items()})
        dims.update(img_pooled=IMAGE_DIM, img_tokens=IMAGE_DIM)
    if "caption" in inputs:
        cap = {k: np.load(p, mmap_mode="r") for k, p in paths[caption_encoder].items()}
        if caption_encoder == "glove":  # computed in memory by the lookup, never cached
            cap = {k: np.array(v) for k, v in cap.items()}
            cap["pooled"] = cap["pooled"].astype(np.float32)
        for view in views:
            views[view].update(cap_pooled=cap["pooled"], cap_tokens=cap["tokens"], cap_mask=cap["mask"])
        dims.update(cap_pooled=cap["pooled"].shape[1], cap_tokens=cap["tokens"].shape[2])
    names = [f"class {c}" for c in range(N_CLASSES)]
    return {"views": views, "dims": dims, "n_test": n_test, "class_names": names, "class_ids": list(range(N_CLASSES))}


def _peak_rss_mb() -> float:
    """This process's own high-water mark: Linux's ``VmHWM`` starts afresh at exec, whereas
    ``ru_maxrss`` carries over the parent's peak (here: the parent that wrote the caches)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def fit_one(job: dict) -> dict:
    """Fit one fold of one model (in its own process); seconds, epochs, peak RSS and held-out F1."""
    settings = resolve_model(job["config"])
    Y = np.load(job["labels"])
    n_train = job["n_train"]
    feats = load_features(job["paths"], list(settings.inputs), settings.caption_encoder.name, len(Y) - n_train)
    model = MODELS.create("net", cfg=settings, seed=settings.seed)
    # The label-query head's class prompts: random text embeddings instead of loading MiniLM.
    model._class_text = np.random.default_rng(0).standard_normal((N_CLASSES, 384)).astype(np.float32)
    rows = np.arange(n_train)
    va = rows[job["n_fit"] :]
    tr = rows[: job["n_fit"]]
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    out = model.fit_fold(feats, Y[:n_train], tr, va, fold_dir=Path(job["fold_dir"]))
    total = time.perf_counter() - t0
    info = out.info
    peak = _peak_rss_mb()
    return {
        "model": job["name"],
        "threads": torch.get_num_threads(),
        "batch_size": info.get("batch_size", settings.train.batch_size),
        "epochs_run": info["epochs_run"],
        "best_epoch": info["best_epoch"],
        "epoch_s": info["train_seconds"] / max(1, info["epochs_run"]),
        "train_s": info["train_seconds"],
        "fold_s": total,
        "peak_rss_mb": peak,
        "val_f1": val_score(Y[va], out.val_logits),
    }


def bench_training(
    config: Path,
    models: list[str] | None = None,
    rows: int = 30000,
    test_rows: int = 10000,
    folds: int = 5,
    epochs: int | None = None,
    seed: int = 0,
) -> Iterator[dict]:
    """Fit one fold (``rows`` labelled rows, 1/``folds`` held out, ``test_rows`` test rows) of each
    ``net`` model in ``config`` (or the ``models`` among them) on synthetic features; yields each
    model's figures as it finishes. ``epochs``: exactly that many (no early stop), for a quick look."""
    cfg = load_config(config)
    fixed = {"epochs": epochs, "early_stop": "none"} if epochs else {}
    chosen = {
        name: {**m, "train": {**(m.get("train") or {}), **fixed}}
        for name, m in select_models(cfg, Path(config), models).items()
        if resolve_model(m).kind == "net" and not resolve_model(m).finetune
    }
    encoders = tuple(sorted({resolve_model(m).caption_encoder.name for m in chosen.values()} & set(TEXT_DIMS)))
    rng = np.random.default_rng(seed)
    Y = synthetic_labels(rows + test_rows, rng)
    with tempfile.TemporaryDirectory(prefix="capfuse-bench-train-") as tmp:
        folder = Path(tmp)
        np.save(folder / "labels.npy", Y[:rows])
        paths = write_features(folder, Y, seed, encoders)
        n_fit = rows - rows // folds
        for name, model_cfg in chosen.items():
            job = {
                "name": name,
                "config": model_cfg,
                "labels": folder / "labels.npy",
                "paths": paths,
                "n_train": rows,
                "n_fit": n_fit,
                "fold_dir": folder / "runs" / name,
            }
            # A fresh process per model: its peak RSS is its own, and no model warms another's caches.
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                yield pool.submit(fit_one, job).result()


def print_training(results: Iterable[dict], rows: int, test_rows: int, folds: int = 5) -> list[dict]:
    """The table ``capfuse bench --only training`` prints, a line per model as it finishes."""
    n_fit = rows - rows // folds
    print(
        f"net models, one fold on synthetic features: {n_fit} training, {rows - n_fit} held-out, {test_rows} test rows"
    )
    print(f"  {'model':<14}{'batch':>6}{'s/epoch':>9}{'epochs':>8}{'s/fold':>9}{'peak RSS MB':>13}{'held-out F1':>13}")
    out = []
    for r in results:
        print(
            f"  {r['model']:<14}{r['batch_size']:>6}{r['epoch_s']:>9.1f}{r['epochs_run']:>8}{r['fold_s']:>9.1f}"
            f"{r['peak_rss_mb']:>13.0f}{r['val_f1']:>13.3f}",
            flush=True,
        )
        out.append(r)
    return out


def report_training(
    rows: int = 30000,
    epochs: int | None = None,
    test_rows: int = 10000,
    config: Path = Path("configs/pipeline.yaml"),
    models: list[str] | None = None,
) -> list[dict]:
    """``capfuse bench --only training [--rows N] [--epochs E]``: every net model of the pipeline."""
    return print_training(bench_training(config, models, rows, test_rows, epochs=epochs), rows, test_rows)
