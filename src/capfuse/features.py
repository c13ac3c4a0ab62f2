"""The feature cache behind the CPU path: frozen-backbone image vectors, stored once.

Each cache entry is a float16 ``.npy`` (memory-mapped on read) plus a JSON sidecar. The file
name carries the encoder, the input size and the test-time view; the sidecar carries a
checksum of the inputs (image ids, file sizes and mtimes, weights source), so a second run
reuses the array and a changed image invalidates it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from capfuse.data.images import load_array, resolve_image_path
from capfuse.encoders.image import create_backbone, preprocess_for, to_tensor
from capfuse.utils.io import atomic_path, read_json, write_json
from capfuse.utils.log import log, progress

VIEWS = ("orig", "hflip")


@dataclass(frozen=True)
class ImageEncoderSpec:
    name: str  # timm model name
    size: int | None = None  # input size; None = the backbone's native size
    weights: str = "auto"
    batch_size: int = 64
    # onnx: ONNX Runtime runs these frozen CNNs about twice as fast as eager torch on a CPU;
    # torch: no export step (and the only choice on a GPU).
    backend: str = "onnx"

    @classmethod
    def from_config(cls, cfg: dict) -> ImageEncoderSpec:
        known = {"name", "size", "weights", "batch_size", "backend"}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown image encoder keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**cfg)


def inputs_checksum(data_dir: Path, image_ids: list[str], image_ok: np.ndarray) -> str:
    """Hash what the features depend on, without reading every image's bytes."""
    h = hashlib.sha256()
    for image_id, ok in zip(image_ids, image_ok):
        h.update(image_id.encode("utf-8", "surrogateescape"))
        if ok:
            st = os.stat(resolve_image_path(data_dir, image_id))
            h.update(f":{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(b"\n")
    return h.hexdigest()


class _Runner:
    """Runs the frozen backbone on normalised batches with the chosen backend."""

    def __init__(self, model: torch.nn.Module, size: int, backend: str, export_dir: Path, tag: str) -> None:
        self.model = model
        self.session = None
        if backend == "onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                log.warning("onnxruntime is not installed; embedding with torch instead")
                return
            onnx_path = export_dir / f"{tag}.onnx"
            if not onnx_path.exists():
                with atomic_path(onnx_path) as tmp:
                    torch.onnx.export(
                        model, (torch.zeros(2, 3, size, size),), str(tmp), input_names=["x"],
                        output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                        opset_version=17, dynamo=False,
                    )
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        elif backend != "torch":
            raise ValueError(f"backend must be onnx or torch, got {backend!r}")

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        if self.session is not None:
            return self.session.run(None, {"x": x.contiguous().numpy()})[0]
        return self.model(x).float().numpy()


def cache_file(cache_dir: Path, spec: ImageEncoderSpec, size: int, view: str) -> Path:
    return cache_dir / f"img-{spec.name}-{size}px-{view}.npy"


def embed_images(
    data_dir: Path,
    image_ids: list[str],
    image_ok: np.ndarray,
    spec: ImageEncoderSpec,
    cache_dir: Path,
    *,
    view: str = "orig",
    quiet: bool | None = None,
) -> tuple[np.ndarray, str]:
    """Pooled features [N, D] (float16, memory-mapped; zeros where not ok) and their checksum."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    image_ok = np.asarray(image_ok, dtype=bool)
    model, source = create_backbone(spec.name, weights=spec.weights, num_classes=0)
    model = model.eval().to(memory_format=torch.channels_last)
    pre = preprocess_for(model, spec.size)
    path = cache_file(cache_dir, spec, pre.size, view)
    meta_path = path.with_suffix(".json")
    checksum = hashlib.sha256(
        f"{inputs_checksum(data_dir, image_ids, image_ok)}|{source}|{pre}".encode()
    ).hexdigest()
    if path.exists() and meta_path.exists():
        meta = read_json(meta_path)
        if meta.get("checksum") == checksum:
            log.info("feature cache hit: %s", path.name)
            return np.load(path, mmap_mode="r"), checksum
        log.info("feature cache stale (inputs changed): %s", path.name)

    dim = model.num_features
    runner = _Runner(model, pre.size, spec.backend, cache_dir / "onnx",
                     f"{spec.name}-{pre.size}px-{hashlib.sha256(source.encode()).hexdigest()[:10]}")
    out = np.zeros((len(image_ids), dim), dtype=np.float16)
    todo = np.flatnonzero(image_ok)
    batches = [todo[i : i + spec.batch_size] for i in range(0, len(todo), spec.batch_size)]

    def load_batch(rows: np.ndarray) -> np.ndarray:
        arrays = [load_array(resolve_image_path(data_dir, image_ids[r]), pre.size) for r in rows]
        batch = np.stack(arrays)
        return batch[:, :, ::-1] if view == "hflip" else batch

    # Decode the next batch on a worker thread while the model runs on the current one:
    # PIL releases the GIL while decoding, so the two overlap.
    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
        pending = pool.submit(load_batch, batches[0]) if batches else None
        for i, rows in enumerate(progress(batches, f"embed {spec.name} {view}", quiet=quiet)):
            batch = pending.result()
            pending = pool.submit(load_batch, batches[i + 1]) if i + 1 < len(batches) else None
            out[rows] = runner(to_tensor(batch, pre)).astype(np.float16)

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, out)
    write_json(meta_path, {
        "encoder": spec.name, "weights": source, "size": pre.size, "view": view,
        "rows": len(image_ids), "dim": dim, "checksum": checksum,
        "mean": pre.mean, "std": pre.std,
    })
    log.info("wrote %s (%d × %d)", path, len(image_ids), dim)
    return np.load(path, mmap_mode="r"), checksum
