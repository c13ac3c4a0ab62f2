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
    grid: int = 4  # token grid side: the final feature map is average-pooled to grid x grid tokens

    @classmethod
    def from_config(cls, cfg: dict) -> ImageEncoderSpec:
        known = {"name", "size", "weights", "batch_size", "backend", "grid"}
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


class FeatureMap(torch.nn.Module):
    """The backbone up to its final feature map ``[B, C, h, w]`` (before pooling and classifier)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def pool_outputs(fmap: np.ndarray, outputs: tuple[str, ...], grid: int) -> dict[str, np.ndarray]:
    """Pooled vector (global mean) and/or a ``grid x grid`` token grid from feature maps.

    Pooling happens here rather than in the exported graph because ONNX cannot express
    adaptive pooling when the grid does not divide the map (a 7x7 map into 4x4 tokens).
    """
    t = torch.from_numpy(fmap)
    out = {}
    if "pooled" in outputs:
        out["pooled"] = t.mean((2, 3)).numpy()
    if "tokens" in outputs:
        out["tokens"] = torch.nn.functional.adaptive_avg_pool2d(t, grid).flatten(2).transpose(1, 2).numpy()
    return out


OUTPUTS = ("pooled", "tokens")


def cache_files(cache_dir: Path, spec: ImageEncoderSpec, size: int, view: str) -> dict[str, Path]:
    stem = f"img-{spec.name}-{size}px-{view}"
    return {"pooled": cache_dir / f"{stem}-pooled.npy", "tokens": cache_dir / f"{stem}-tokens{spec.grid}.npy",
            "meta": cache_dir / f"{stem}.json"}


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
    out = embed_image_features(data_dir, image_ids, image_ok, spec, cache_dir, view=view, outputs=("pooled",), quiet=quiet)
    return out["pooled"], out["checksum"]


def embed_image_features(
    data_dir: Path,
    image_ids: list[str],
    image_ok: np.ndarray,
    spec: ImageEncoderSpec,
    cache_dir: Path,
    *,
    view: str = "orig",
    outputs: tuple[str, ...] = OUTPUTS,
    quiet: bool | None = None,
) -> dict:
    """``pooled`` [N, D] and/or ``tokens`` [N, grid*grid, D] (float16, memory-mapped) and ``checksum``.

    Rows with ``image_ok`` False are zeros. Outputs already cached for the same inputs are
    reused; asking for one that is missing recomputes all of them in one backbone pass.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if set(outputs) - set(OUTPUTS) or not outputs:
        raise ValueError(f"outputs must be a non-empty subset of {OUTPUTS}, got {outputs}")
    image_ok = np.asarray(image_ok, dtype=bool)
    model, source = create_backbone(spec.name, weights=spec.weights, num_classes=0)
    model = model.eval().to(memory_format=torch.channels_last)
    pre = preprocess_for(model, spec.size)
    files = cache_files(cache_dir, spec, pre.size, view)
    checksum = hashlib.sha256(
        f"{inputs_checksum(data_dir, image_ids, image_ok)}|{source}|{pre}".encode()
    ).hexdigest()
    have: tuple[str, ...] = ()
    if files["meta"].exists():
        meta = read_json(files["meta"])
        if meta.get("checksum") == checksum:
            have = tuple(o for o in meta.get("outputs", []) if files[o].exists())
            if set(outputs) <= set(have):
                log.info("feature cache hit: %s %s", files["meta"].stem, list(outputs))
                return {o: np.load(files[o], mmap_mode="r") for o in outputs} | {"checksum": checksum}
        else:
            log.info("feature cache stale (inputs changed): %s", files["meta"].stem)
            have = ()
    todo_outputs = tuple(o for o in OUTPUTS if o in set(outputs) | set(have))

    dim = model.num_features
    runner = _Runner(FeatureMap(model), pre.size, spec.backend, cache_dir / "onnx",
                     f"{spec.name}-{pre.size}px-fmap-{hashlib.sha256(source.encode()).hexdigest()[:10]}")
    arrays = {"pooled": np.zeros((len(image_ids), dim), dtype=np.float16)}
    if "tokens" in todo_outputs:
        arrays["tokens"] = np.zeros((len(image_ids), spec.grid * spec.grid, dim), dtype=np.float16)
    todo = np.flatnonzero(image_ok)
    batches = [todo[i : i + spec.batch_size] for i in range(0, len(todo), spec.batch_size)]

    def load_batch(rows: np.ndarray) -> np.ndarray:
        batch = np.stack([load_array(resolve_image_path(data_dir, image_ids[r]), pre.size) for r in rows])
        return batch[:, :, ::-1] if view == "hflip" else batch

    # Decode the next batch on a worker thread while the model runs on the current one:
    # PIL releases the GIL while decoding, so the two overlap.
    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
        pending = pool.submit(load_batch, batches[0]) if batches else None
        for i, rows in enumerate(progress(batches, f"embed {spec.name} {view}", quiet=quiet)):
            batch = pending.result()
            pending = pool.submit(load_batch, batches[i + 1]) if i + 1 < len(batches) else None
            pooled = pool_outputs(runner(to_tensor(batch, pre)), todo_outputs, spec.grid)
            for key, value in pooled.items():
                arrays[key][rows] = value.astype(np.float16)

    for key in todo_outputs:
        with atomic_path(files[key]) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arrays[key])
    write_json(files["meta"], {  # written last: its checksum vouches for the arrays beside it
        "encoder": spec.name, "weights": source, "size": pre.size, "view": view, "grid": spec.grid,
        "outputs": list(todo_outputs), "rows": len(image_ids), "dim": dim, "checksum": checksum,
        "mean": pre.mean, "std": pre.std,
    })
    log.info("wrote %s %s (%d rows × %d)", files["meta"].stem, list(todo_outputs), len(image_ids), dim)
    return {o: np.load(files[o], mmap_mode="r") for o in outputs} | {"checksum": checksum}
