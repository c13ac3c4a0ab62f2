"""The caption half of the feature cache: transformer token states, masks and pooled vectors.

Stored like the image cache (float16 ``.npy`` files read memory-mapped, a JSON sidecar written
last): keyed by encoder, token length and a checksum of the caption texts and the encoder's
source, so a second run reuses them and a changed caption invalidates them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from capfuse.encoders.text import TextEncoderSpec, create_text_encoder, encode
from capfuse.utils.io import atomic_path, read_json, write_json
from capfuse.utils.log import log, progress

PARTS = ("tokens", "mask", "pooled")


def captions_checksum(captions: list[str]) -> str:
    h = hashlib.sha256()
    for c in captions:
        h.update(c.encode("utf-8") + b"\x00")
    return h.hexdigest()


def _files(cache_dir: Path, spec: TextEncoderSpec, key: str) -> dict[str, Path]:
    stem = f"txt-{Path(spec.name).name}-{spec.max_len}tok-{key}"
    return {part: cache_dir / f"{stem}.{part}.npy" for part in PARTS} | {"meta": cache_dir / f"{stem}.json"}


def embed_captions(captions: list[str], spec: TextEncoderSpec, cache_dir: Path, *, key: str = "all",
                   quiet: bool | None = None) -> dict:
    """``tokens`` [N, L, D] f16, ``mask`` [N, L] u8, ``pooled`` [N, D] f16 (memory-mapped) and ``checksum``."""
    files = _files(Path(cache_dir), spec, key)
    model, tokenizer, source = create_text_encoder(spec.name, weights=spec.weights)
    checksum = hashlib.sha256(f"{captions_checksum(captions)}|{source}|{spec.max_len}".encode()).hexdigest()
    if files["meta"].exists() and all(files[p].exists() for p in PARTS):
        if read_json(files["meta"]).get("checksum") == checksum:
            log.info("caption cache hit: %s", files["meta"].name)
            return {p: np.load(files[p], mmap_mode="r") for p in PARTS} | {"checksum": checksum}
        log.info("caption cache stale (captions changed): %s", files["meta"].name)

    n, dim = len(captions), model.config.hidden_size
    tokens = np.zeros((n, spec.max_len, dim), np.float16)
    mask = np.zeros((n, spec.max_len), np.uint8)
    pooled = np.zeros((n, dim), np.float16)
    # Similar lengths side by side: fewer padded positions per batch (padding to max_len stays,
    # so the stored arrays have one shape).
    order = np.argsort([len(c) for c in captions], kind="stable")
    batches = [order[i : i + spec.batch_size] for i in range(0, n, spec.batch_size)]
    for rows in progress(batches, f"embed captions {spec.name}", quiet=quiet):
        t, m, p = encode(model, tokenizer, [captions[r] for r in rows], spec.max_len)
        tokens[rows], mask[rows], pooled[rows] = t, m, p
    for part, arr in (("tokens", tokens), ("mask", mask), ("pooled", pooled)):
        with atomic_path(files[part]) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
    write_json(files["meta"], {"encoder": spec.name, "weights": source, "max_len": spec.max_len, "rows": n,
                               "dim": dim, "checksum": checksum})
    log.info("wrote caption cache %s (%d × %d × %d)", files["meta"].stem, n, spec.max_len, dim)
    return {p: np.load(files[p], mmap_mode="r") for p in PARTS} | {"checksum": checksum}
