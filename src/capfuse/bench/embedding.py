"""Embedding throughput on COMP5329-sized JPEGs, against a naive timm loop on the same images.

The images are demo scenes upscaled to 640×480 JPEGs; both sides decode them (the naive loop at
full size with timm's eval transform and the default memory layout), so the ratio is what the
feature cache's loader and layout buy.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from capfuse.data.demo import make_demo
from capfuse.encoders.registry import build_image
from capfuse.features.image import ImageEncoderSpec, embed_images


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


def bench_embed(n: int, name: str, size: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ids = make_bench_images(folder, n)
        spec = ImageEncoderSpec(name=name, size=size, weights="package", batch_size=batch_size)
        # Warm-up on a few images in the same cache folder, so that one-off costs (the ONNX
        # export, which the cache keeps for every later run, the allocator) are not timed; the
        # full id list has another checksum, so the timed run embeds every image again.
        embed_images(folder, ids[:batch_size], np.ones(batch_size, bool), spec, folder / "cache", quiet=True)
        start = time.perf_counter()
        embed_images(folder, ids, np.ones(len(ids), bool), spec, folder / "cache", quiet=True)
        ours = len(ids) / (time.perf_counter() - start)
        naive = naive_timm_loop(folder, ids, name, batch_size)
    return {"images": n, "encoder": name, "size": size, "ours_img_s": ours, "naive_img_s": naive}
