"""What "light" means in numbers: parameters, checkpoint size, inference ms per image.

Measured for the whole predictor a user would deploy, encoders included: a frozen backbone
still runs for every test image. Times are torch eager on this machine's CPU, batch 32, after
a warm-up, so models compare on the same footing; the ONNX path of the embed step is faster.
"""

from __future__ import annotations

import time
from functools import cache

import torch

from capfuse.config.schema import ModelSettings, resolve_model
from capfuse.encoders.glove import glove_table
from capfuse.encoders.registry import build_caption, build_image, caption_entry


def time_ms(fn, n_items: int, repeats: int = 3) -> float:
    fn()  # warm-up: allocator, lazy init
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / n_items


@cache
def image_encoder_cost(name: str, size: int) -> tuple[int, float]:
    """(parameters, ms per image) of a timm backbone without its classifier."""
    model, _ = build_image(name, weights="none")
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(32, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ms = time_ms(lambda: model(x), 32)
    return sum(p.numel() for p in model.parameters()), ms


@cache
def caption_encoder_cost(name: str, max_len: int) -> tuple[int, float]:
    """(parameters, ms per caption) of a transformers encoder at ``max_len`` tokens, or of GloVe.

    GloVe's parameters are its whole 400k-word table, which is what a deployed model carries.
    """
    entry = caption_entry(name)
    if entry.lookup is not None:
        captions = ["a man rides a horse past a red bus, near a bench"] * 32
        return int(glove_table()[0].size), time_ms(lambda: entry.lookup(captions, max_len), 32)
    model, tokenizer, _ = build_caption(name)
    batch = tokenizer(
        ["a man rides a horse past a red bus, near a bench"] * 32,
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
    )
    with torch.inference_mode():
        ms = time_ms(lambda: model(**batch), 32)
    return sum(p.numel() for p in model.parameters()), ms


def light_report(cfg: dict | ModelSettings, head_params: int, head_ms: float = 0.0) -> dict:
    """``params``, ``file_mb`` (fp32 weights) and ``ms_per_image`` of encoders + head."""
    settings = resolve_model(cfg)
    params, ms = head_params, head_ms
    if "image" in settings.inputs:
        enc = settings.image_encoder
        p, t = image_encoder_cost(enc.name, enc.size)
        params, ms = params + p, ms + t
    if "caption" in settings.inputs and settings.kind == "net":
        enc = settings.caption_encoder
        p, t = caption_encoder_cost(enc.name, enc.max_len)
        params, ms = params + p, ms + t
    return {"params": int(params), "file_mb": round(params * 4 / 2**20, 2), "ms_per_image": round(ms, 2)}
