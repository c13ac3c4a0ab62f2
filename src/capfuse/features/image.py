"""The feature cache behind the CPU path: frozen-backbone image vectors, stored once.

Each cache entry is a float16 ``.npy`` (memory-mapped on read) plus a JSON sidecar. The file
name carries the encoder, the input size and the test-time view; the sidecar carries a
checksum of the inputs (image ids, each file's stat key, the weights and where they came
from), so a second run reuses the array and a changed image invalidates it.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from capfuse.config.schema import IMAGE_MODEL_KEYS, ImageEncoderSpec  # noqa: F401 (re-exported)
from capfuse.data.images import load_array, resolve_image_path
from capfuse.encoders.image import Preprocess, feature_maps, preprocess_for
from capfuse.encoders.registry import build_image
from capfuse.encoders.weights import state_dict_sha256
from capfuse.utils.io import allocate_npy, atomic_path, read_json, stat_key, write_json
from capfuse.utils.log import log, progress

VIEWS = ("orig", "hflip")


# The cache's key is the ``image_encoder:`` block's cache part: one home for its defaults.
MODEL_KEYS = set(IMAGE_MODEL_KEYS)


def inputs_checksum(data_dir: Path, image_ids: list[str], image_ok: np.ndarray) -> str:
    """Hash what the features depend on, without reading every image's bytes."""
    h = hashlib.sha256()
    for image_id, ok in zip(image_ids, image_ok):
        h.update(image_id.encode("utf-8", "surrogateescape"))
        if ok:
            h.update(f":{stat_key(os.stat(resolve_image_path(data_dir, image_id)))}".encode())
        h.update(b"\n")
    return h.hexdigest()


class _Runner:
    """Runs the frozen backbone on uint8 NHWC batches with the chosen backend."""

    def __init__(
        self, model: torch.nn.Module, size: int, backend: str, export_dir: Path, tag: str, n_outputs: int = 1
    ) -> None:
        self.model = model
        self.n_outputs = n_outputs
        self.session = None
        if backend == "onnx":
            try:
                import onnxruntime as ort  # noqa: PLC0415 (the ONNX backend is optional: a missing runtime falls back to torch)
            except ImportError:
                log.warning("onnxruntime is not installed; embedding with torch instead")
                return
            onnx_path = export_dir / f"{tag}.onnx"
            names = [f"y{i}" for i in range(self.n_outputs)]
            if not onnx_path.exists():
                with atomic_path(onnx_path) as tmp:
                    torch.onnx.export(
                        model,
                        (torch.zeros(2, size, size, 3, dtype=torch.uint8),),
                        str(tmp),
                        input_names=["x"],
                        output_names=names,
                        dynamic_axes={"x": {0: "n"}} | {y: {0: "n"} for y in names},
                        opset_version=17,
                        dynamo=False,
                    )
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Idle ORT workers would otherwise spin between batches and take the core that the
            # decoding thread needs (measured: +~10 % images/s end to end on 2 cores).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        elif backend != "torch":
            raise ValueError(f"backend must be onnx or torch, got {backend!r}")

    def __call__(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The output array, or a list of them when the model has several outputs."""
        if self.session is not None:
            out = self.session.run(None, {"x": np.ascontiguousarray(x)})
        else:
            y = self.model(torch.from_numpy(np.ascontiguousarray(x)))
            out = [t.float().numpy() for t in (y if isinstance(y, tuple) else (y,))]
        return out if self.n_outputs > 1 else out[0]


class FeatureMap(torch.nn.Module):
    """uint8 images ``[B, H, W, 3]`` to the backbone's final feature map ``[B, C, h, w]``, plus the
    maps entering its top stages.

    Scaling and normalisation are part of the module, hence of the exported ONNX graph: the
    runtime does them with its own threads instead of a serial numpy pass per batch.
    ``mids`` lists stage counts ``n``: the map entering ``blocks[-n]`` is returned too, so that
    the top ``n`` stages can be trained on a CPU from cached inputs.
    """

    def __init__(self, model: torch.nn.Module, pre: Preprocess, mids: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.model = model
        self.mids = tuple(mids)
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(pre.std).view(1, 3, 1, 1)))
        self.register_buffer("shift", (torch.tensor(pre.mean) / torch.tensor(pre.std)).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor):
        # NHWC -> NCHW is a view with channels_last strides, the layout the convs prefer.
        x = x.permute(0, 3, 1, 2).float() * self.scale - self.shift
        if not self.mids:
            return self.model.forward_features(x)
        return tuple(feature_maps(self.model, x, self.mids))


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


OUTPUTS = ("pooled", "tokens")  # plus "mid<n>": the map entering the top n stages, [N, C, h, w]
_MID = re.compile(r"^mid([1-9][0-9]*)$")


def mid_output(n: int) -> str:
    return f"mid{int(n)}"


def _mid_levels(outputs) -> tuple[int, ...]:
    return tuple(sorted(int(m.group(1)) for o in outputs if (m := _MID.match(o))))


def _ordered(outputs) -> tuple[str, ...]:
    """pooled, tokens, then mid maps from the highest stage down: one canonical order."""
    outputs = set(outputs)
    return tuple(o for o in OUTPUTS if o in outputs) + tuple(mid_output(n) for n in _mid_levels(outputs))


def cache_files(
    cache_dir: Path, spec: ImageEncoderSpec, size: int, view: str, outputs: tuple[str, ...] = OUTPUTS
) -> dict[str, Path]:
    stem = f"img-{spec.name}-{size}px-{view}"
    files = {
        "pooled": cache_dir / f"{stem}-pooled.npy",
        "tokens": cache_dir / f"{stem}-tokens{spec.grid}.npy",
        "meta": cache_dir / f"{stem}.json",
    }
    return files | {mid_output(n): cache_dir / f"{stem}-mid{n}.npy" for n in _mid_levels(outputs)}


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
    out = embed_image_features(
        data_dir, image_ids, image_ok, spec, cache_dir, view=view, outputs=("pooled",), quiet=quiet
    )
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
    """``pooled`` [N, D], ``tokens`` [N, grid*grid, D] and/or ``mid<n>`` [N, C, h, w] (float16,
    memory-mapped) and ``checksum``.

    ``mid<n>`` is the feature map entering the backbone's top ``n`` stages: models that train
    those stages on a CPU start from it. Rows with ``image_ok`` False are zeros. Outputs
    already cached for the same inputs are reused; asking for one that is missing recomputes
    it together with the cached ones in one backbone pass.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    bad = [o for o in outputs if o not in OUTPUTS and not _MID.match(o)]
    if bad or not outputs:
        raise ValueError(f"outputs must be a non-empty subset of {OUTPUTS} and mid<n>, got {outputs}")
    image_ok = np.asarray(image_ok, dtype=bool)
    model, source = build_image(spec.name, weights=spec.weights)
    model = model.eval().to(memory_format=torch.channels_last)
    pre = preprocess_for(model, spec.size)
    # The weights' own checksum, not only their file's name: a new file under the old name
    # must not be served the old features. Random weights ("none") differ on every call and
    # are only ever a test's, so they keep one key.
    weights_key = source if source == "none" else f"{source}@{state_dict_sha256(model)}"
    checksum = hashlib.sha256(
        f"{inputs_checksum(data_dir, image_ids, image_ok)}|{weights_key}|{pre}".encode()
    ).hexdigest()
    meta_file = cache_files(cache_dir, spec, pre.size, view)["meta"]
    have: tuple[str, ...] = ()
    if meta_file.exists():
        meta = read_json(meta_file)
        if meta.get("checksum") == checksum:
            listed = tuple(meta.get("outputs", []))
            have = tuple(o for o in listed if cache_files(cache_dir, spec, pre.size, view, listed)[o].exists())
            if set(outputs) <= set(have):
                files = cache_files(cache_dir, spec, pre.size, view, outputs)
                log.info("feature cache hit: %s %s", meta_file.stem, list(outputs))
                return {o: np.load(files[o], mmap_mode="r") for o in outputs} | {"checksum": checksum}
        else:
            log.info("feature cache stale (inputs changed): %s", meta_file.stem)
            have = ()
    todo_outputs = _ordered(set(outputs) | set(have))
    files = cache_files(cache_dir, spec, pre.size, view, todo_outputs)
    mids = _mid_levels(todo_outputs)
    n_blocks = len(getattr(model, "blocks", ()))
    if mids and max(mids) >= n_blocks:
        raise ValueError(f"{spec.name} has {n_blocks} stages; cannot cache the input of its top {max(mids)}")

    dim = model.num_features
    tag = "u8-fmap" + "".join(f"-mid{n}" for n in mids)
    fmap = FeatureMap(model, pre, mids)
    # Keyed by the exported module's tensors (weights and normalisation), so an export is
    # reused only for exactly the weights it came from.
    runner = _Runner(
        fmap,
        pre.size,
        spec.backend,
        cache_dir / "onnx",
        f"{spec.name}-{pre.size}px-{tag}-{state_dict_sha256(fmap)[:16]}",
        n_outputs=len(mids) + 1,
    )
    shapes = {"pooled": (len(image_ids), dim), "tokens": (len(image_ids), spec.grid * spec.grid, dim)}
    if mids:
        with torch.inference_mode():  # one image through the net gives each mid map's shape
            probe = fmap(torch.zeros(1, pre.size, pre.size, 3, dtype=torch.uint8))
        shapes |= {mid_output(n): (len(image_ids), *probe[i].shape[1:]) for i, n in enumerate(mids)}
    todo = np.flatnonzero(image_ok)
    batches = [todo[i : i + spec.batch_size] for i in range(0, len(todo), spec.batch_size)]

    def load_batch(rows: np.ndarray) -> np.ndarray:
        batch = np.stack([load_array(resolve_image_path(data_dir, image_ids[r]), pre.size) for r in rows])
        return np.ascontiguousarray(batch[:, :, ::-1]) if view == "hflip" else batch  # copied here, off the main thread

    # Drop the old sidecar first: if this run dies after replacing some arrays, an old sidecar
    # would otherwise vouch for a mix of old and new files.
    meta_file.unlink(missing_ok=True)
    with ExitStack() as stack:
        # Written straight into memory-mapped temporary files (rows of unreadable images stay
        # zero): 40k images' intermediate maps are gigabytes that need not sit in RAM. Their
        # disk space is reserved before any image is decoded, so a full disk is an error now,
        # not a SIGBUS an hour in. Each file is renamed into place when the stack closes
        # without an error.
        arrays = {
            o: allocate_npy(stack.enter_context(atomic_path(files[o])), np.float16, shapes[o]) for o in todo_outputs
        }
        # Decode the next batch on a worker thread while the model runs on the current one:
        # PIL releases the GIL while decoding, so the two overlap.
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            pending = pool.submit(load_batch, batches[0]) if batches else None
            for i, rows in enumerate(progress(batches, f"embed {spec.name} {view}", quiet=quiet)):
                batch = pending.result()
                pending = pool.submit(load_batch, batches[i + 1]) if i + 1 < len(batches) else None
                result = runner(batch)
                maps = result if mids else [result]
                pooled = pool_outputs(maps[-1], todo_outputs, spec.grid)
                pooled |= {mid_output(n): maps[j] for j, n in enumerate(mids)}
                for key, value in pooled.items():
                    arrays[key][rows] = value.astype(np.float16)
        for arr in arrays.values():
            arr.flush()
        del arrays
    write_json(
        meta_file,
        {  # written last: its checksum vouches for the arrays beside it
            "encoder": spec.name,
            "weights": source,
            "size": pre.size,
            "view": view,
            "grid": spec.grid,
            "outputs": list(todo_outputs),
            "rows": len(image_ids),
            "dim": dim,
            "checksum": checksum,
            "mean": pre.mean,
            "std": pre.std,
        },
    )
    log.info("wrote %s %s (%d rows × %d)", meta_file.stem, list(todo_outputs), len(image_ids), dim)
    return {o: np.load(files[o], mmap_mode="r") for o in outputs} | {"checksum": checksum}
