"""Embedding throughput on COMP5329-sized JPEGs, against a naive timm loop on the same images.

The images are demo scenes upscaled to 640×480 JPEGs; every side decodes them (the naive loop at
full size with timm's eval transform and the default memory layout), so the ratio is what the
feature cache's loader, layout and runtime buy.

Each variant (runtime × precision) embeds the same images in turn, round after round (A, B, C,
A, B, C, ...), and the median of its rounds is reported: the machine's speed drifts (other work,
clocks), and alternating keeps the comparison fair. Absolute figures drift from run to run;
the ratios are what to compare.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from capfuse.config.schema import CaptionEncoderSettings
from capfuse.data.csvio import read_split
from capfuse.data.demo import make_demo
from capfuse.data.images import load_array, resolve_image_path
from capfuse.encoders.registry import build_caption, build_image
from capfuse.encoders.runtime import ort_session
from capfuse.encoders.text import encode
from capfuse.features.image import ImageEncoderSpec, embed_image_views
from capfuse.features.text import caption_runner


def make_bench_images(folder: Path, n: int, size=(640, 480), seed: int = 0) -> list[str]:
    """COMP5329-like photos: demo scenes upscaled to 640×480 and saved as quality-90 JPEGs."""
    src = folder / "demo-src"
    make_demo(src, n_train=n, n_test=0, size=256, seed=seed)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        with Image.open(src / "data" / f"{i}.jpg") as im:
            im.convert("RGB").resize(size, Image.BICUBIC).save(folder / "data" / f"{i}.jpg", quality=90)
        ids.append(f"{i}.jpg")
    return ids


def naive_timm_loop(folder: Path, ids: list[str], name: str, batch_size: int) -> float:
    model, _ = build_image(name, weights="package", num_classes=0)
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            batch = torch.stack(
                [transform(Image.open(folder / "data" / j).convert("RGB")) for j in ids[i : i + batch_size]]
            )
            model(batch)
    return len(ids) / (time.perf_counter() - start)


def runtime_available(backend: str) -> bool:
    if backend != "openvino":
        return True
    try:
        import nncf  # noqa: F401, PLC0415 (optional: the OpenVINO rows appear only when it is installed)
        import openvino  # noqa: F401, PLC0415 (optional, as above)
    except ImportError:
        return False
    return True


def _timed_pass(folder: Path, ids: list[str], requests: list, cache: Path) -> float:
    """Seconds to embed ``requests`` over ``ids`` from scratch (the sidecars go first: no cache hit)."""
    for meta in cache.glob("*.json"):
        meta.unlink()
    start = time.perf_counter()
    embed_image_views(folder, ids, np.ones(len(ids), bool), requests, cache, quiet=True)
    return time.perf_counter() - start


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)).mean())


def bench_embed(
    n: int, name: str, size: int, batch_size: int, *, rounds: int = 3, second: str = "mobilenetv2_100"
) -> dict:
    """images/s of one view per runtime × precision, the naive loop, the decode-once pass of two
    backbones × two views against four separate passes, and each int8 variant's cosine to fp32."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ids = make_bench_images(folder, n)
        ok = np.ones(len(ids), bool)
        base = ImageEncoderSpec(name=name, size=size, weights="package", batch_size=batch_size)
        variants = {
            f"{backend} {precision}": replace(base, backend=backend, precision=precision)
            for backend in ("onnx", "openvino")
            for precision in ("fp32", "int8")
            if runtime_available(backend)
        }
        cache = folder / "cache"
        # Warm-up: exports, int8 calibration (cached for every later round) and the allocator,
        # on the full id list so that the int8 graphs are calibrated on these very images.
        pooled = {}
        for label, spec in variants.items():
            got = embed_image_views(folder, ids, ok, [(spec, "orig", ("pooled",))], cache, quiet=True)
            pooled[label] = np.array(got[(spec, "orig")]["pooled"])
        times: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(rounds):
            for label, spec in variants.items():
                times[label].append(_timed_pass(folder, ids, [(spec, "orig", ("pooled",))], cache))
        out = {
            "images": n,
            "encoder": name,
            "size": size,
            "img_s": {label: n / float(np.median(t)) for label, t in times.items()},
            "cosine": {
                label: _cosine(pooled[label], pooled[label.replace("int8", "fp32")])
                for label in variants
                if "int8" in label
            },
        }
        out["naive_img_s"] = naive_timm_loop(folder, ids, name, batch_size)
        out["parts_img_s"] = bench_parts(folder, ids, cache, name, size, batch_size, rounds)

        # Decode once: two backbones x two views in one pass, against one pass per (backbone, view).
        # The default runtime, the one the pipeline embeds with.
        fastest = f"{base.backend} {base.precision}"
        spec = variants[fastest]
        specs = [spec, replace(spec, name=second)]
        requests = [(s, view, ("pooled", "tokens")) for s in specs for view in ("orig", "hflip")]
        embed_image_views(folder, ids, ok, requests, cache, quiet=True)  # warm-up: the second export
        once, apart = [], []
        for _ in range(rounds):
            once.append(_timed_pass(folder, ids, requests, cache))
            apart.append(sum(_timed_pass(folder, ids, [r], cache) for r in requests))
        out["multi"] = {
            "runtime": fastest,
            "encoders": [s.name for s in specs],
            "views": len(requests),
            "once_img_s_per_view": n * len(requests) / float(np.median(once)),
            "apart_img_s_per_view": n * len(requests) / float(np.median(apart)),
        }
        out["captions"] = bench_captions(read_captions(folder / "demo-src" / "train.csv"), rounds=rounds)
    return out


def bench_parts(folder: Path, ids: list[str], cache: Path, name: str, size: int, batch_size: int, rounds: int) -> dict:
    """images/s of the two halves of a pass, each alone: decoding on one thread (the loader's),
    and the default runtime's fp32 graph on already-decoded batches with the session's threads.
    The pass overlaps them, so neither bounds it alone; together they say which side to speed up."""
    paths = [resolve_image_path(folder, i) for i in ids]
    decode, model = [], []
    # The fp32 export the warm-up wrote (its int8 siblings carry "-int8-" in their names).
    exported = [p for p in (cache / "onnx").glob(f"{name}-{size}px-u8-fmap-*.onnx") if "-int8" not in p.name]
    if len(exported) != 1:
        raise RuntimeError(f"expected one fp32 export of {name} in {cache / 'onnx'}, found {len(exported)}")
    session = ort_session(exported[0])
    for _ in range(rounds):
        start = time.perf_counter()
        pixels = np.stack([load_array(p, size) for p in paths])
        decode.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, len(pixels), batch_size):
            session.run(None, {"x": pixels[i : i + batch_size]})
        model.append(time.perf_counter() - start)
    return {"decode": len(ids) / float(np.median(decode)), "model": len(ids) / float(np.median(model))}


def read_captions(path: Path) -> list[str]:
    rows, _ = read_split(path, "train")
    return [row.caption for row in rows]


def bench_captions(captions: list[str], *, batch_size: int = 128, max_len: int = 24, rounds: int = 3) -> dict:
    """MiniLM captions/s through torch and through ONNX Runtime (alternating rounds), and the
    mean cosine of their mean-pooled vectors."""
    model, tokenizer, _ = build_caption("minilm", weights="package")
    with tempfile.TemporaryDirectory() as tmp:
        run = caption_runner(model, tokenizer, CaptionEncoderSettings(backend="onnx"), Path(tmp))
        order = np.argsort([len(c) for c in captions], kind="stable")  # as the cache batches them
        batches = [[captions[i] for i in order[j : j + batch_size]] for j in range(0, len(captions), batch_size)]

        def once(runner) -> tuple[float, np.ndarray]:
            start = time.perf_counter()
            pooled = np.concatenate([encode(model, tokenizer, b, max_len, run=runner)[2] for b in batches])
            return time.perf_counter() - start, pooled

        once(run), once(None)  # warm-up
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        for _ in range(rounds):
            for label, runner in (("torch", None), ("onnx", run)):
                seconds, pooled = once(runner)
                times[label].append(seconds)
                if label == "torch":
                    reference = pooled
        onnx_pooled = once(run)[1]
    return {
        "captions": len(captions),
        "batch_size": batch_size,
        "captions_s": {label: len(captions) / float(np.median(t)) for label, t in times.items()},
        "cosine": _cosine(onnx_pooled, reference),
    }
