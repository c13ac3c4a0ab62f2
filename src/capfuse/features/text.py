"""Caption features for the neural models: transformer token states, cached once per caption set.

The transformer cache is stored like the image cache (float16 ``.npy`` files read memory-mapped,
a JSON sidecar written last). Its key is the encoder, the token length and a caller's key (the
split); its checksum covers the caption texts, the encoder's source and the token length, so a
second run reuses the arrays and a changed caption invalidates them.

Table encoders (GloVe, ``capfuse.encoders.glove``) are looked up instead: faster to redo than to
cache. Class-name prompts are embedded by ``capfuse.encoders.text.label_text_embeddings``.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from capfuse.encoders.registry import build_caption, caption_entry
from capfuse.encoders.runtime import TextRunner
from capfuse.encoders.text import TextEncoderSpec, encode, text_encoder_sources
from capfuse.encoders.weights import state_dict_sha256
from capfuse.utils.io import allocate_npy, atomic_path, read_json, sha256_reprs, write_json
from capfuse.utils.log import log, progress

PARTS = ("tokens", "mask", "pooled")


def captions_checksum(captions: list[str]) -> str:
    """sha256 over the texts in order (NUL-separated, so ["ab", ""] and ["a", "b"] differ)."""
    h = hashlib.sha256()
    for c in captions:
        h.update(c.encode("utf-8") + b"\x00")
    return h.hexdigest()


def cache_files(cache_dir: Path, spec: TextEncoderSpec, key: str) -> dict[str, Path]:
    """``txt-<encoder>-<max_len>tok-<key>.{tokens,mask,pooled}.npy`` and the ``.json`` sidecar."""
    # A folder or hub id gets a short hash of its full name: two folders both called "model"
    # would otherwise overwrite each other's cache on every run.
    tag = (
        spec.name
        if "/" not in spec.name and "\\" not in spec.name
        else (f"{Path(spec.name).name}-{hashlib.sha256(spec.name.encode()).hexdigest()[:8]}")
    )
    stem = f"txt-{tag}-{spec.max_len}tok-{key}"
    return {part: cache_dir / f"{stem}.{part}.npy" for part in PARTS} | {"meta": cache_dir / f"{stem}.json"}


def _checksum(texts_sha: str, source: str, max_len: int) -> str:
    return hashlib.sha256(f"{texts_sha}|{source}|{max_len}".encode()).hexdigest()


def _load(files: dict[str, Path], checksum: str) -> dict:
    return {p: np.load(files[p], mmap_mode="r") for p in PARTS} | {"checksum": checksum}


def caption_runner(model, tokenizer, spec: TextEncoderSpec, export_dir: Path) -> TextRunner | None:
    """The runtime ``spec.backend`` names for the frozen pass: ONNX Runtime, or None for torch."""
    if spec.backend == "torch":
        return None
    if spec.backend != "onnx":
        raise ValueError(f"caption_encoder.backend must be onnx or torch, got {spec.backend!r}")
    names = tuple(tokenizer(["a"], return_tensors="np").keys())
    # Keyed by the weights' checksum: a re-saved model under the same name is exported again.
    return TextRunner(model, names, export_dir, f"txt-{model.config.model_type}-{state_dict_sha256(model)[:16]}")


def caption_features(
    captions: list[str], spec: TextEncoderSpec, cache_dir: Path, *, key: str, quiet: bool | None = None
) -> dict:
    """What a model reads of these captions: ``tokens``, ``mask``, ``pooled`` and ``checksum``.

    A word table (GloVe) is looked up: faster to redo than to cache, so nothing is written. A
    transformer's states come from the cache under ``key`` (``embed_captions``).
    """
    entry = caption_entry(spec.name)
    if entry.lookup is None:
        return embed_captions(captions, spec, cache_dir, key=key, quiet=quiet)
    pooled, tokens, mask = entry.lookup(captions, spec.max_len)
    checksum = sha256_reprs(spec.name, entry.source, spec.max_len, captions)
    return {"pooled": pooled, "tokens": tokens, "mask": mask, "checksum": checksum}


def embed_captions(
    captions: list[str], spec: TextEncoderSpec, cache_dir: Path, *, key: str, quiet: bool | None = None
) -> dict:
    """``tokens`` [N, L, D] f16, ``mask`` [N, L] u8, ``pooled`` [N, D] f16 (memory-mapped) and ``checksum``.

    ``L`` is ``spec.max_len``; token states past a caption's end are zeros with mask 0. An empty
    caption is a row too ([CLS] [SEP]).
    """
    bad = next((i for i, c in enumerate(captions) if not isinstance(c, str)), None)
    if bad is not None:
        raise TypeError(f"caption {bad} is {type(captions[bad]).__name__}, not str")
    files = cache_files(Path(cache_dir), spec, key)
    texts_sha = captions_checksum(captions)
    if files["meta"].exists() and all(files[p].exists() for p in PARTS):
        # Checked before loading the model (seconds on a CPU): any source the encoder may load
        # from is accepted, so a cache written from the hub copy still serves offline.
        stored = read_json(files["meta"]).get("checksum")
        accepted = {_checksum(texts_sha, s.source, spec.max_len) for s in text_encoder_sources(spec.name, spec.weights)}
        if stored in accepted:
            log.info("caption cache hit: %s", files["meta"].name)
            return _load(files, stored)
        log.info("caption cache stale (captions or encoder changed): %s", files["meta"].name)

    model, tokenizer, source = build_caption(spec.name, weights=spec.weights)
    checksum = _checksum(texts_sha, source, spec.max_len)
    run = caption_runner(model, tokenizer, spec, Path(cache_dir) / "onnx")
    # Drop the old sidecar first: if this run dies after replacing some arrays, an old sidecar
    # would otherwise vouch for a mix of old and new files.
    files["meta"].unlink(missing_ok=True)
    n, dim, length = len(captions), model.config.hidden_size, spec.max_len
    lengths = [len(ids) for ids in tokenizer(captions, truncation=True, max_length=length)["input_ids"]] if n else []
    # Captions of similar token length side by side: each batch pads only to its own longest.
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + spec.batch_size] for i in range(0, n, spec.batch_size)]
    shapes = {
        "tokens": ((n, length, dim), np.float16),
        "mask": ((n, length), np.uint8),
        "pooled": ((n, dim), np.float16),
    }
    with ExitStack() as stack:
        # Written straight into memory-mapped temporary files: 40k captions' token states are
        # ~1 GB, which need not sit in RAM. Their disk space is reserved first (a full disk is
        # an error, not a SIGBUS). Each file is renamed into place when the stack closes.
        out = {
            p: allocate_npy(stack.enter_context(atomic_path(files[p])), dtype, shape)
            for p, (shape, dtype) in shapes.items()
        }
        for rows in progress(batches, f"embed captions {spec.name}", quiet=quiet):
            tokens, mask, pooled = encode(model, tokenizer, [captions[r] for r in rows], length, run=run)
            out["tokens"][rows], out["mask"][rows], out["pooled"][rows] = tokens, mask, pooled
        for arr in out.values():
            arr.flush()
    write_json(
        files["meta"],
        {  # written last: its checksum vouches for the arrays beside it
            "encoder": spec.name,
            "weights": source,
            "max_len": length,
            "rows": n,
            "dim": dim,
            "checksum": checksum,
        },
    )
    log.info("wrote caption cache %s (%d × %d × %d)", files["meta"].stem, n, length, dim)
    return _load(files, checksum)
