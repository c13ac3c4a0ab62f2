"""The feature cache behind the CPU path: frozen-backbone image vectors, stored once.

Each cache entry is a float16 ``.npy`` (memory-mapped on read) plus a JSON sidecar. The file
name carries the encoder, the input size and the test-time view; the sidecar carries a
checksum of the inputs (image ids, each file's stat key, the weights and where they came
from), so a second run reuses the array and a changed image invalidates it. int8 entries
(``precision: int8``) have names and checksums of their own; fp32 entries keep the ones they
always had.

Why this module is long: the cache's key, its files and the one pass that fills them (decode
each image once, feed every backbone and view that needs it, write memory-mapped arrays) change
together; split, every change would touch both halves.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from capfuse.config.schema import IMAGE_MODEL_KEYS, ImageEncoderSpec  # noqa: F401 (re-exported)
from capfuse.data.images import load_array, resolve_image_path
from capfuse.encoders.image import Preprocess, feature_maps, preprocess_for
from capfuse.encoders.registry import build_image
from capfuse.encoders.runtime import Calibration, ImageRunner, check_choice
from capfuse.encoders.weights import state_dict_sha256
from capfuse.utils.io import allocate_npy, atomic_path, read_json, stat_key, write_json
from capfuse.utils.log import log, progress

VIEWS = ("orig", "hflip")
# Enough images for stable min/max activation ranges; a calibration pass costs ~2 s per 100.
CALIBRATION_IMAGES = 256


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


def pool_outputs(
    fmap: np.ndarray, outputs: tuple[str, ...], grid: int, mids: dict[int, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Pooled vector (global mean), multi-level vector and/or a ``grid x grid`` token grid from
    feature maps; ``mids`` holds the maps entering the top stages (``ML_LEVELS`` for ``pooled_ml``).

    Pooling happens here rather than in the exported graph because ONNX cannot express
    adaptive pooling when the grid does not divide the map (a 7x7 map into 4x4 tokens).
    """
    t = torch.from_numpy(fmap)
    out = {}
    if "pooled" in outputs:
        out["pooled"] = t.mean((2, 3)).numpy()
    if "pooled_ml" in outputs:
        parts = [t.mean((2, 3)), t.amax((2, 3))] + [torch.from_numpy(mids[n]).mean((2, 3)) for n in ML_LEVELS]
        out["pooled_ml"] = torch.cat(parts, 1).numpy()
    if "tokens" in outputs:
        out["tokens"] = torch.nn.functional.adaptive_avg_pool2d(t, grid).flatten(2).transpose(1, 2).numpy()
    return out


# pooled_ml: [mean, max] of the final map, then the means of the maps entering the top
# ML_LEVELS stages (image_encoder.pooling: multilevel). For Lite0 at 224 px, 1280 + 1280 +
# 192 + 112 = 2864 values from the pass that makes the mean anyway.
OUTPUTS = ("pooled", "pooled_ml", "tokens")  # plus "mid<n>": the map entering the top n stages, [N, C, h, w]
ML_LEVELS = (1, 2)
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
    # fp32 keeps the names it always had, so caches written before precision existed still serve.
    precision = effective_precision(spec)
    stem = f"img-{spec.name}-{size}px-{view}" if precision == "fp32" else f"img-{spec.name}-{size}px-{precision}-{view}"
    files = {
        "pooled": cache_dir / f"{stem}-pooled.npy",
        "pooled_ml": cache_dir / f"{stem}-pooled-ml.npy",
        "tokens": cache_dir / f"{stem}-tokens{spec.grid}.npy",
        "meta": cache_dir / f"{stem}.json",
    }
    return files | {mid_output(n): cache_dir / f"{stem}-mid{n}.npy" for n in _mid_levels(outputs)}


def effective_precision(spec: ImageEncoderSpec) -> str:
    """int8 is a CPU runtime's choice: eager torch (the GPU path) always computes in fp32."""
    return "fp32" if spec.backend == "torch" else spec.precision


@dataclass(frozen=True)
class CalibrationImages:
    """The images int8 graphs are calibrated on: a fixed, evenly spaced subset of one folder's
    images (the training images, when the feature store picks them), the same for every split
    and folder embedded with that graph."""

    data_dir: Path
    image_ids: tuple[str, ...]

    @classmethod
    def spread(cls, data_dir: Path, image_ids: list[str], n: int = CALIBRATION_IMAGES) -> CalibrationImages:
        """``n`` ids evenly spaced over ``image_ids`` (all of them when there are fewer)."""
        picks = np.unique(np.linspace(0, len(image_ids) - 1, min(n, len(image_ids))).round().astype(int))
        return cls(Path(data_dir), tuple(image_ids[i] for i in picks) if image_ids else ())

    def for_size(self, size: int, batch_size: int) -> Calibration:
        ok = np.ones(len(self.image_ids), bool)
        key = hashlib.sha256(f"{inputs_checksum(self.data_dir, list(self.image_ids), ok)}|{size}".encode()).hexdigest()

        def batches():
            ids = self.image_ids
            for i in range(0, len(ids), batch_size):
                yield np.stack(
                    [load_array(resolve_image_path(self.data_dir, j), size) for j in ids[i : i + batch_size]]
                )

        return Calibration(key, batches)


@dataclass
class _Job:
    """One (encoder, view) whose arrays this pass writes."""

    spec: ImageEncoderSpec
    view: str
    outputs: tuple[str, ...]
    files: dict[str, Path]
    meta: dict
    arrays: dict = field(default_factory=dict)


def _check_request(view: str, outputs: tuple[str, ...]) -> None:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    bad = [o for o in outputs if o not in OUTPUTS and not _MID.match(o)]
    if bad or not outputs:
        raise ValueError(f"outputs must be a non-empty subset of {OUTPUTS} and mid<n>, got {outputs}")


def embed_images(
    data_dir: Path,
    image_ids: list[str],
    image_ok: np.ndarray,
    spec: ImageEncoderSpec,
    cache_dir: Path,
    *,
    view: str = "orig",
    quiet: bool | None = None,
    calibration: CalibrationImages | None = None,
) -> tuple[np.ndarray, str]:
    """Pooled features [N, D] (float16, memory-mapped; zeros where not ok) and their checksum."""
    out = embed_image_features(
        data_dir,
        image_ids,
        image_ok,
        spec,
        cache_dir,
        view=view,
        outputs=("pooled",),
        quiet=quiet,
        calibration=calibration,
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
    calibration: CalibrationImages | None = None,
) -> dict:
    """``pooled`` [N, D], ``tokens`` [N, grid*grid, D] and/or ``mid<n>`` [N, C, h, w] (float16,
    memory-mapped) and ``checksum``: one encoder and view of ``embed_image_views``."""
    got = embed_image_views(
        data_dir, image_ids, image_ok, [(spec, view, outputs)], cache_dir, quiet=quiet, calibration=calibration
    )
    return got[(spec, view)]


def embed_image_views(
    data_dir: Path,
    image_ids: list[str],
    image_ok: np.ndarray,
    requests: list[tuple[ImageEncoderSpec, str, tuple[str, ...]]],
    cache_dir: Path,
    *,
    quiet: bool | None = None,
    calibration: CalibrationImages | None = None,
) -> dict[tuple[ImageEncoderSpec, str], dict]:
    """Every requested (encoder, view, outputs) of the same images, each image decoded once.

    Returns, per (encoder, view), ``pooled`` [N, D], ``tokens`` [N, grid*grid, D] and/or
    ``mid<n>`` [N, C, h, w] (float16, memory-mapped) and ``checksum``. ``mid<n>`` is the feature
    map entering the backbone's top ``n`` stages: models that train those stages on a CPU start
    from it. Rows with ``image_ok`` False are zeros. Outputs already cached for the same inputs
    are reused; asking for one that is missing recomputes it together with the cached ones.

    What is not cached is computed in one pass over the images: each batch is decoded once per
    input size, flipped once if any view needs it, and fed to every encoder that needs it
    (decoding a 640x480 JPEG costs about as much as a quarter of a Lite0 forward pass).
    ``calibration``: the images int8 graphs are calibrated on (default: these images).
    """
    image_ok = np.asarray(image_ok, dtype=bool)
    merged: dict[tuple[ImageEncoderSpec, str], tuple[str, ...]] = {}
    for spec, view, outputs in requests:
        _check_request(view, outputs)
        merged[(spec, view)] = tuple(dict.fromkeys((*merged.get((spec, view), ()), *outputs)))
    requests = [(spec, view, outputs) for (spec, view), outputs in merged.items()]  # one job per file set
    inputs_sum = inputs_checksum(data_dir, image_ids, image_ok)
    if calibration is None:
        calibration = CalibrationImages.spread(data_dir, [i for i, ok in zip(image_ids, image_ok) if ok])
    built: dict[ImageEncoderSpec, tuple] = {}
    results: dict[tuple[ImageEncoderSpec, str], dict] = {}
    jobs: list[_Job] = []
    for spec, view, outputs in requests:
        if spec not in built:
            check_choice(spec.backend, spec.precision, torch_runs_fp32=True)
            model, source = build_image(spec.name, weights=spec.weights)
            model = model.eval().to(memory_format=torch.channels_last)
            pre = preprocess_for(model, spec.size)
            # The weights' own checksum, not only their file's name: a new file under the old name
            # must not be served the old features. Random weights ("none") differ on every call and
            # are only ever a test's, so they keep one key.
            weights_key = source if source == "none" else f"{source}@{state_dict_sha256(model)}"
            key = f"{inputs_sum}|{weights_key}|{pre}"
            precision = effective_precision(spec)
            if precision != "fp32":  # fp32 keeps its old key: caches from before stay valid
                key += f"|{precision}:{spec.backend}:{calibration.for_size(pre.size, spec.batch_size).key}"
            built[spec] = (model, source, pre, hashlib.sha256(key.encode()).hexdigest())
        model, source, pre, checksum = built[spec]
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
                    results[(spec, view)] = {o: np.load(files[o], mmap_mode="r") for o in outputs} | {
                        "checksum": checksum
                    }
                    continue
            else:
                log.info("feature cache stale (inputs changed): %s", meta_file.stem)
                have = ()
        todo_outputs = _ordered(set(outputs) | set(have))
        mids = _mid_levels(todo_outputs)
        n_blocks = len(getattr(model, "blocks", ()))
        if mids and max(mids) >= n_blocks:
            raise ValueError(f"{spec.name} has {n_blocks} stages; cannot cache the input of its top {max(mids)}")
        meta = {
            "encoder": spec.name,
            "weights": source,
            "size": pre.size,
            "view": view,
            "grid": spec.grid,
            "outputs": list(todo_outputs),
            "rows": len(image_ids),
            "dim": model.num_features,
            "checksum": checksum,
            "mean": pre.mean,
            "std": pre.std,
        }
        if effective_precision(spec) != "fp32":
            meta |= {"precision": effective_precision(spec), "backend": spec.backend}
        jobs.append(_Job(spec, view, todo_outputs, cache_files(cache_dir, spec, pre.size, view, todo_outputs), meta))
    if jobs:
        _run_jobs(data_dir, image_ids, image_ok, jobs, built, cache_dir, calibration, quiet)
    for job in jobs:
        files = cache_files(cache_dir, job.spec, job.meta["size"], job.view, job.outputs)
        asked = merged[(job.spec, job.view)]
        results[(job.spec, job.view)] = {o: np.load(files[o], mmap_mode="r") for o in asked} | {
            "checksum": job.meta["checksum"]
        }
    return results


def _run_jobs(data_dir, image_ids, image_ok, jobs: list[_Job], built: dict, cache_dir: Path, calibration, quiet):
    """One pass over the images that fills every job's arrays, each batch decoded once per size."""
    n = len(image_ids)
    runners: dict[ImageEncoderSpec, tuple] = {}
    for job in jobs:
        spec = job.spec
        if spec in runners:
            # Another view of the same encoder: one runner, whose outputs cover both views' needs.
            continue
        model, _, pre, _ = built[spec]
        outputs = _ordered({o for j in jobs if j.spec == spec for o in j.outputs})
        # The graph returns every map a job stores or pools; only mid<n> outputs are stored.
        mids = tuple(sorted(set(_mid_levels(outputs)) | (set(ML_LEVELS) if "pooled_ml" in outputs else set())))
        tag = "u8-fmap" + "".join(f"-mid{m}" for m in mids)
        fmap = FeatureMap(model, pre, mids)
        calib = calibration.for_size(pre.size, spec.batch_size) if effective_precision(spec) != "fp32" else None
        # Keyed by the exported module's tensors (weights and normalisation), so an export is
        # reused only for exactly the weights it came from.
        runner = ImageRunner(
            fmap,
            pre.size,
            backend=spec.backend,
            precision=effective_precision(spec),
            export_dir=cache_dir / "onnx",
            tag=f"{spec.name}-{pre.size}px-{tag}-{state_dict_sha256(fmap)[:16]}",
            n_outputs=len(mids) + 1,
            calibration=calib,
        )
        shapes = {"pooled": (n, model.num_features), "tokens": (n, spec.grid * spec.grid, model.num_features)}
        if mids:
            with torch.inference_mode():  # one image through the net gives each mid map's shape
                probe = fmap(torch.zeros(1, pre.size, pre.size, 3, dtype=torch.uint8))
            shapes |= {mid_output(m): (n, *probe[i].shape[1:]) for i, m in enumerate(mids)}
            if set(ML_LEVELS) <= set(mids):
                width = 2 * model.num_features + sum(probe[mids.index(m)].shape[1] for m in ML_LEVELS)
                shapes["pooled_ml"] = (n, width)
        runners[spec] = (runner, mids, shapes, pre.size)
    sizes = sorted({r[3] for r in runners.values()})
    flips = {runners[j.spec][3] for j in jobs if j.view == "hflip"}
    chunk = max(j.spec.batch_size for j in jobs)
    todo = np.flatnonzero(image_ok)
    batches = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]

    def load_batch(rows: np.ndarray) -> dict:
        out = {}
        for size in sizes:
            batch = np.stack([load_array(resolve_image_path(data_dir, image_ids[r]), size) for r in rows])
            out[(size, "orig")] = batch
            if size in flips:
                out[(size, "hflip")] = np.ascontiguousarray(batch[:, :, ::-1])  # copied here, off the main thread
        return out

    for job in jobs:
        # Drop the old sidecar first: if this run dies after replacing some arrays, an old
        # sidecar would otherwise vouch for a mix of old and new files.
        job.files["meta"].unlink(missing_ok=True)
    what = ", ".join(f"{j.spec.name} {j.view}" for j in jobs)
    with ExitStack() as stack:
        # Written straight into memory-mapped temporary files (rows of unreadable images stay
        # zero): 40k images' intermediate maps are gigabytes that need not sit in RAM. Their
        # disk space is reserved before any image is decoded, so a full disk is an error now,
        # not a SIGBUS an hour in. Each file is renamed into place when the stack closes
        # without an error.
        for job in jobs:
            shapes = runners[job.spec][2]
            job.arrays = {
                o: allocate_npy(stack.enter_context(atomic_path(job.files[o])), np.float16, shapes[o])
                for o in job.outputs
            }
        # Decode the next batch on a worker thread while the models run on the current one:
        # PIL releases the GIL while decoding, so the two overlap.
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            pending = pool.submit(load_batch, batches[0]) if batches else None
            for i, rows in enumerate(progress(batches, f"embed {what}", quiet=quiet)):
                decoded = pending.result()
                pending = pool.submit(load_batch, batches[i + 1]) if i + 1 < len(batches) else None
                for job in jobs:
                    runner, mids, _, size = runners[job.spec]
                    x = decoded[(size, job.view)]
                    step = job.spec.batch_size
                    for lo in range(0, len(rows), step):  # each encoder at its own batch size
                        maps = runner(x[lo : lo + step])
                        mid_maps = {m: maps[j] for j, m in enumerate(mids)}
                        got = pool_outputs(maps[-1], job.outputs, job.spec.grid, mid_maps)
                        got |= {mid_output(m): mid_maps[m] for m in _mid_levels(job.outputs)}
                        for key in job.outputs:
                            job.arrays[key][rows[lo : lo + step]] = got[key].astype(np.float16)
        for job in jobs:
            for arr in job.arrays.values():
                arr.flush()
            job.arrays = {}
    for job in jobs:
        write_json(job.files["meta"], job.meta)  # written last: its checksum vouches for the arrays beside it
        log.info("wrote %s %s (%d rows × %d)", job.files["meta"].stem, list(job.outputs), n, job.meta["dim"])
