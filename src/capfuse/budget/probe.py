"""What this machine pays for the passes a config needs, measured in well under a minute.

- **Encoders**: the embed step's own pass over a sample of the dataset's images (decoding, the
  configured runtime, every view and output the models read), at two sample sizes; each caption
  encoder's pass on its configured runtime. Times the rows a cache lacks.
- **Models**: a rehearsal of each model: epochs of a net model on a sample of fold 0's training
  rows (its real shapes, precision and threads; before its features exist, on the encoder
  pass's sample of them), or a linear model's whole fit on its cached features, predicting the
  fold's held-out rows and a few test rows.
  Scaled by rows and epochs: a fold's prediction; times the folds and the pseudo-label rounds.

What runs after the models (the shift report, the second level, the threshold study) is predicted
by ``capfuse.budget.reserve``.

Each prediction is re-checked against the clock before its model, and the trainer stops at the
deadline whatever the probe said.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from capfuse.config.schema import resolve_model
from capfuse.encoders.registry import build_caption, caption_entry
from capfuse.encoders.text import encode
from capfuse.features.image import cache_files as image_cache_files
from capfuse.features.image import embed_image_views
from capfuse.features.store import encoder_reads, flip_views, uses_cache
from capfuse.features.text import PARTS as CAPTION_PARTS
from capfuse.features.text import cache_files as text_cache_files
from capfuse.features.text import caption_runner
from capfuse.models import MODELS
from capfuse.models.settings import for_rows, schedule_epochs

REHEARSAL_ROWS = 512  # training rows a net model's rehearsal fits on
REHEARSAL_EPOCHS = 3  # the first warms the kernels up; the faster of the other two is kept
# A linear model's fit grows faster than its rows (more solver iterations on more rows): the
# line is drawn through a quarter of this sample and all of it, nearer the run's own sizes.
LINEAR_ROWS = 2048
PREDICT_ROWS = 128  # held-out and test rows it predicts
PASS_IMAGES = (32, 128)  # images of the embed pass's two timed samples
PASS_REPEATS = 2
CAPTION_SAMPLE = 256  # captions the caption encoder's pass is timed on


def image_pass_ms(ds, spec, outputs: tuple[str, ...], views: tuple[str, ...]) -> tuple[dict[str, float], dict]:
    """Milliseconds per image of the embed step's own pass over ``views`` of the dataset's
    images: the first view pays decoding and its forward pass, each later view (a flip of the
    same decoded batch) its forward pass only.

    The pass is the real one (``embed_image_views``: the configured runtime, the decoder thread
    beside it, the arrays written) on a sample of the training images, into a throw-away cache
    whose export folder is the run's, so the graph exported here serves the run. Timed at two
    sample sizes after a warm-up: the slope is the cost per image, without the fixed cost of
    building the runner that each pass pays.
    """
    ids = [i for i, ok in zip(ds.train_ids, ds.image_ok[: len(ds.train_ids)]) if ok]
    small, large = PASS_IMAGES
    sample = ids[:: max(1, len(ids) // large)][:large]
    if len(sample) < large:
        small = max(1, len(sample) // 4)
    exports = ds.paths.cache / "onnx"
    exports.mkdir(parents=True, exist_ok=True)

    arrays: dict = {}

    def seconds(n: int, views_now: tuple[str, ...]) -> float:
        with tempfile.TemporaryDirectory(prefix="capfuse-probe-") as tmp:
            (Path(tmp) / "onnx").symlink_to(exports.resolve(), target_is_directory=True)
            t0 = time.perf_counter()
            got = embed_image_views(
                ds.paths.data_dir,
                sample[:n],
                np.ones(n, bool),
                [(spec, view, outputs) for view in views_now],
                Path(tmp),
                quiet=True,
            )
            took = time.perf_counter() - t0
            if n == len(sample) and views_now == views:  # the whole sample in every view
                # Kept for the rehearsals before the run's own features exist.
                for (_, view), out in got.items():
                    arrays[view] = {o: np.array(out[o]) for o in outputs}
            return took

    seconds(small, ("orig",))  # warm-up: the export (kept for the run), the session, the kernels

    def fastest(n: int, views_now: tuple[str, ...]) -> float:
        # Each size twice, the faster kept (the rule of ``timeit``): a pass of a hundred images
        # lasts a second or two, which a burst of other work shifted by a quarter between runs.
        return min(seconds(n, views_now) for _ in range(PASS_REPEATS))

    span = max(1, len(sample) - small)
    first = max(0.0, fastest(len(sample), ("orig",)) - fastest(small, ("orig",))) / span
    out = {"orig": 1000.0 * first}
    if len(views) > 1:
        every = max(0.0, fastest(len(sample), views) - fastest(small, views)) / span
        # A later view is a flip of the batch already decoded: its forward pass, never more than
        # the first view's decode and forward together. The difference of two timed passes can
        # say more (each pass is a second or two, and noise adds up), so it is bounded by that.
        later = min(max(0.0, every - first) / (len(views) - 1), first)
        out |= {view: 1000.0 * later for view in views if view != "orig"}
    return out, arrays


def embed_costs(ds, models: dict[str, dict]) -> tuple[dict[str, dict], dict, dict]:
    """Per model, the predicted seconds of each cache entry it reads that the cache lacks (an
    image view of an encoder, a caption encoder's vectors; 0 entries for what is cached); the
    measured rates behind them; and a sample of every entry the net models read (``image``: per
    (encoder, view), ``captions``: per caption encoder), from the probe's own pass or the cache,
    for ``capfuse.features.store.SampleStore``. Models that read one entry share it:
    ``keep_encoders`` counts it once, for the first model kept that reads it."""
    n_rows = len(ds.train_ids) + len(ds.test_ids)
    cache = ds.paths.cache
    rates: dict = {}
    # What the models read from each encoder, as the feature store asks for it: every output
    # and view in one pass.
    wanted = encoder_reads(models)
    passes: dict = {}
    captions: dict = {}
    samples: dict = {"image": {}, "captions": {}}
    out: dict[str, dict] = {}
    for name, model_cfg in models.items():
        m = resolve_model(model_cfg)
        needs: dict = {}
        if "image" in m.inputs and uses_cache(m):
            spec = m.image_encoder.cache_spec()
            size = spec.size or 224
            outs, views = wanted[spec]
            for view in flip_views(m):
                if image_cache_files(cache, spec, size, view)["meta"].exists():
                    continue
                if spec not in passes:
                    ordered = tuple(v for v in ("orig", "hflip") if v in views)  # the plain view first
                    passes[spec] = image_pass_ms(ds, spec, tuple(sorted(outs)), ordered)
                    samples["image"].update({(spec, v): arrays for v, arrays in passes[spec][1].items()})
                per_row = passes[spec][0][view]
                rates[f"image {spec.name} {size}px {view} ms/row"] = round(per_row, 2)
                needs[("image", spec.name, size, view)] = per_row * n_rows / 1000.0
            for view in flip_views(m):
                if (spec, view) not in samples["image"]:
                    files = image_cache_files(cache, spec, size, view, tuple(outs))
                    if all(files[o].exists() for o in outs):
                        samples["image"][(spec, view)] = {
                            o: np.array(np.load(files[o], mmap_mode="r")[: PASS_IMAGES[1]]) for o in outs
                        }
        if "caption" in m.inputs and m.kind == "net":
            spec = m.caption_encoder
            key = ("caption", spec.name, spec.max_len)
            files = text_cache_files(cache, spec, "all")
            # A lookup encoder (GloVe) is computed in memory by the run, never cached: nothing to pay.
            cached = files["meta"].exists() or caption_entry(spec.name).lookup is not None
            if spec not in samples["captions"] and cached and all(files[p].exists() for p in CAPTION_PARTS):
                # A cached encoder is not loaded again: its first rows are the sample.
                samples["captions"][spec] = {
                    p: np.array(np.load(files[p], mmap_mode="r")[:CAPTION_SAMPLE]) for p in CAPTION_PARTS
                }
            if spec not in samples["captions"]:
                captions[key], samples["captions"][spec] = caption_pass_ms(ds, spec)
            if not cached:
                rates[f"caption {spec.name} {spec.max_len} tokens ms/row"] = round(captions[key], 2)
                needs[key] = captions[key] * n_rows / 1000.0
        out[name] = needs
    return out, rates, samples


def caption_pass_ms(ds, spec) -> tuple[float, dict]:
    """(milliseconds per caption of the run's own caption pass, a sample of what it computes).

    The encoder the run loads, on the runtime it runs (ONNX Runtime by default; the graph
    exported here is the run's), over ``CAPTION_SAMPLE`` of the dataset's captions in batches of
    the run's size, sorted by length as the run sorts them, after a batch of warm-up. Timing
    torch's eager forward instead said 121 s at 40,000 captions for a pass of 57. GloVe is a
    table lookup the run redoes rather than caches: no cost."""
    captions = list(ds.val.train["Caption"])[:CAPTION_SAMPLE]
    entry = caption_entry(spec.name)
    if entry.lookup is not None:
        pooled, tokens, mask = entry.lookup(captions, spec.max_len)
        return 0.0, {"tokens": np.asarray(tokens), "mask": np.asarray(mask), "pooled": np.asarray(pooled)}
    model, tokenizer, _ = build_caption(spec.name, weights=spec.weights)
    exports = ds.paths.cache / "onnx"
    exports.mkdir(parents=True, exist_ok=True)
    run = caption_runner(model, tokenizer, spec, exports)
    lengths = [len(ids) for ids in tokenizer(captions, truncation=True, max_length=spec.max_len)["input_ids"]]
    ordered = [captions[r] for r in np.argsort(lengths, kind="stable")]
    batches = [ordered[i : i + spec.batch_size] for i in range(0, len(ordered), spec.batch_size)]
    encode(model, tokenizer, batches[0], spec.max_len, run=run)  # warm-up: the export, the session
    t0 = time.perf_counter()
    parts = [encode(model, tokenizer, batch, spec.max_len, run=run) for batch in batches]
    ms = 1000.0 * (time.perf_counter() - t0) / max(1, len(ordered))
    tokens, mask, pooled = (np.concatenate(p) for p in zip(*parts, strict=True))
    # The cache's own types (capfuse.features.text), which the models read.
    return ms, {"tokens": tokens.astype(np.float16), "mask": mask.astype(np.uint8), "pooled": pooled.astype(np.float16)}


def keep_encoders(
    needs: dict[str, dict], share_s: float, train_s: dict[str, float] | None = None, left_s: float = math.inf
) -> dict[str, tuple[float, bool]]:
    """Per model, in order: the seconds its features add to those of the models kept before it,
    and whether they are worth paying for: the encoders' total stays within ``share_s`` with
    them, and the encoders and the kept models' training (``train_s``: the least each model
    may train, where known) within ``left_s``. A dropped model's entries are not counted as
    cached: the next model that reads them pays for them."""
    train_s = train_s or {}
    committed: dict = {}
    training = 0.0
    out = {}
    for name, keys in needs.items():
        extra = {k: v for k, v in keys.items() if k not in committed}
        cost = sum(extra.values())
        need = train_s.get(name, 0.0)
        embedded = sum(committed.values()) + cost
        trains = embedded + training + need <= left_s
        fits = cost <= 0 or (embedded <= share_s and trains)
        if fits:
            committed.update(extra)
        if fits and trains:  # a model whose training cannot fit holds no time from the others
            training += need
        out[name] = (cost, fits)
    return out


def rehearse(model_cfg: dict, feats: dict, Y: np.ndarray, folds: np.ndarray, n_test: int) -> dict:
    """Short fits of the model on samples of fold 0's rows, split into what grows with the rows
    and what does not.

    A net model trains ``REHEARSAL_EPOCHS`` epochs on ``REHEARSAL_ROWS`` rows (at least two
    batches of the size its run's folds train with). The first pays the
    kernels' warm-up; of the later ones the fastest stands for the machine (a burst of other work
    slows an epoch and never speeds one up, the rule of ``timeit``): its steps give the seconds
    per row and epoch, the rest of it (the stopping rows' score, the checkpoints) a cost per
    epoch. The final predictions give a cost per predicted row, and what remains (building the
    model, preparing the fold) a cost per fold. A
    linear model fits twice, on ``LINEAR_ROWS`` rows and a quarter of them: where its solver
    reports its iterations, the two fits give a cost per fold, a cost per row and iteration, and
    how the iterations grow with the rows; else the line through the two times.
    """
    settings = resolve_model(model_cfg)
    is_net = settings.kind == "net"
    tr_all, va_all = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    sample = REHEARSAL_ROWS if is_net else LINEAR_ROWS
    if is_net:
        # The batch a fold of the run trains with: a large fold of a cached-feature model trains
        # with a larger one (models.settings.for_rows), which costs more per row than the small
        # sample's own batch (activations that no longer fit the caches); at least two steps of it.
        t = settings.train
        real = t if settings.finetune else for_rows(t, len(tr_all))
        train = {
            **(model_cfg.get("train") or {}),
            "epochs": REHEARSAL_EPOCHS,
            "early_stop": "none",
            "calibrate": False,
            "batch_size": real.batch_size,
            "lr": real.lr,
            "batch_grow_rows": 0,
        }
        model_cfg = {**model_cfg, "train": train}
        settings = resolve_model(model_cfg)
        sample = max(sample, 2 * real.batch_size * real.accumulate)
    # A few of the test rows stand for all of them: predicting 10,000 would be most of the probe.
    n_probe_test = min(n_test, PREDICT_ROWS)
    feats = fewer_test_rows(feats, n_probe_test)
    rng = np.random.default_rng(0)
    tr = np.sort(rng.choice(tr_all, min(sample, len(tr_all)), replace=False))
    va = np.sort(rng.choice(va_all, min(PREDICT_ROWS, len(va_all)), replace=False))

    def fit(rows: np.ndarray) -> tuple[float, dict]:
        model = MODELS.create(settings.kind, cfg=settings, seed=settings.seed)
        with tempfile.TemporaryDirectory(prefix="capfuse-probe-") as tmp:
            t0 = time.perf_counter()
            out = model.fit_fold(feats, Y, rows, va, fold_dir=Path(tmp) / "fold0")
            return time.perf_counter() - t0, out.info

    if is_net:
        total, info = fit(tr)
        steps, epochs = info["step_seconds"], info["epoch_seconds"]
        predict = info["predict_seconds"]
        later = range(1, len(epochs))
        return {
            "fold_s": max(0.0, total - sum(epochs) - predict),
            "epoch_s": max(0.0, min(epochs[i] - steps[i] for i in later)),
            "row_epoch_s": min(steps[i] for i in later) / len(tr),
            "predict_row_s": predict / max(1, len(va) + n_probe_test),
        }
    small = tr[:: max(1, len(tr) // max(1, len(tr) // 4))][: max(1, len(tr) // 4)]
    t_small, info_small = fit(small)
    t_all, info_all = fit(tr)
    it_small, it_all = info_small.get("lbfgs_iterations"), info_all.get("lbfgs_iterations")
    if not (it_small and it_all) or len(tr) <= len(small):
        # A solver that does not report its iterations: the line through the two times.
        per_row = max(0.0, (t_all - t_small) / max(1, len(tr) - len(small)))
        return {
            "fold_s": max(0.0, t_all - per_row * len(tr)),
            "epoch_s": 0.0,
            "row_epoch_s": per_row,
            "predict_row_s": 0.0,
        }
    # L-BFGS needs more iterations on more rows (33 at 512 rows, 47 at 2,048 and 104 at 24,000 for
    # the default's fusion on the 30k set), and each iteration is one pass over the rows: the time
    # is a fixed cost plus a cost per row and iteration, the iterations a power of the rows.
    work_small, work_all = len(small) * it_small, len(tr) * it_all
    per_row_iter = max(0.0, (t_all - t_small) / max(1, work_all - work_small))
    return {
        "fold_s": max(0.0, t_all - per_row_iter * work_all),
        "epoch_s": 0.0,
        "row_epoch_s": 0.0,
        "predict_row_s": 0.0,
        "row_iter_s": per_row_iter,
        "iterations": float(it_all),
        "iteration_rows": float(len(tr)),
        "iteration_power": min(1.0, max(0.0, math.log(it_all / it_small) / math.log(len(tr) / len(small)))),
    }


def fewer_test_rows(feats: dict, n: int) -> dict:
    """``feats`` as if the test set had its first ``n`` rows only: the arrays that hold test rows
    apart (``*_test``, ``test_*``) are cut, and the ones indexed train-then-test simply end earlier."""
    out = dict(feats, n_test=n)
    for key, value in feats.items():
        if (key.endswith("_test") or key.startswith("test_")) and hasattr(value, "shape"):
            out[key] = value[:n]
    return out


def _split_rows(settings, n_fit: int) -> tuple[int, int]:
    """(rows a net model's epochs train on, rows early stopping scores after each) of a fold
    with ``n_fit`` training rows."""
    t = settings.train
    n_stop = int(round(n_fit * t.inner_frac)) if t.early_stop != "none" else 0
    return n_fit - n_stop, n_stop


def span(model_cfg: dict, n_fit: int) -> int | None:
    """The epochs a net model's schedule spans on folds of ``n_fit`` training rows: its
    ``train.epochs``, or fewer where ``train.max_steps`` caps the steps; None for a linear model."""
    settings = resolve_model(model_cfg)
    if settings.kind != "net":
        return None
    # A large fold of a cached-feature model trains with a larger batch (models.settings.for_rows).
    t = settings.train if settings.finetune else for_rows(settings.train, n_fit)
    rows, _ = _split_rows(settings, n_fit)
    return schedule_epochs(t, max(1, math.ceil(rows / t.batch_size / t.accumulate)))


def fold_seconds(model_cfg: dict, rate: dict, n_fit: int, n_predict: int, epochs: int | None = None) -> float:
    """One fold of the model from its rehearsal: ``epochs`` (default its schedule's span) over
    the fold's ``n_fit`` training rows less the stopping rows, each epoch ending with the stopping
    rows predicted, then ``n_predict`` rows predicted (the held-out fold and the test set)."""
    settings = resolve_model(model_cfg)
    if settings.kind != "net":
        if "row_iter_s" in rate:
            grown = rate["iterations"] * (n_fit / rate["iteration_rows"]) ** rate["iteration_power"]
            iterations = min(float(getattr(settings, "max_iter", grown)), max(1.0, grown))
            return rate["fold_s"] + rate["row_iter_s"] * n_fit * iterations
        return rate["fold_s"] + rate["row_epoch_s"] * n_fit
    e = epochs if epochs is not None else span(model_cfg, n_fit)
    rows, n_stop = _split_rows(settings, n_fit)
    # refit trains the stopping run and then the whole fold again for the chosen epochs.
    passes = 2.0 if settings.train.early_stop == "refit" else 1.0
    per_epoch = rate["row_epoch_s"] * rows + rate["epoch_s"] + rate["predict_row_s"] * n_stop
    return rate["fold_s"] + per_epoch * e * passes + rate["predict_row_s"] * n_predict
