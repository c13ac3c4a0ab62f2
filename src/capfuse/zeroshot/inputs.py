"""What the projector reads: cached image features per view, and caption vectors.

``ImageFeatures`` holds them; it is filled either from a data set's feature store
(``load_features``: images already embedded for the models are not embedded again) or from
image files outside any cache (``embed_image_files``, for ``zeroshot-score`` and ``search``).
Both paths must give the projector the same numbers, so they change together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from capfuse.data.dataset import Dataset
from capfuse.data.images import DEFAULT_MAX_PIXELS, load_array
from capfuse.encoders.image import preprocess_for
from capfuse.encoders.registry import build_image
from capfuse.encoders.text import TextEncoderSpec
from capfuse.features.image import FeatureMap, ImageEncoderSpec, pool_outputs
from capfuse.features.store import FeatureStore
from capfuse.zeroshot.settings import ZeroShotSettings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass
class ImageFeatures:
    """Cached image features per view (float16, possibly memory-mapped) and caption vectors.

    ``pooled[view] [N, D]``, ``tokens[view] [N, T, D]`` (or None), ``caption [N, E]`` (or None
    where only images are embedded). Rows are whatever the caller indexes by.
    """

    pooled: dict[str, np.ndarray]
    tokens: dict[str, np.ndarray] | None = None
    caption: np.ndarray | None = None

    def batch(self, rows: np.ndarray, views: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Rows' features; ``views[i]`` names the view row i is read from (default: orig)."""
        rows = np.asarray(rows)
        if views is None:
            views = np.full(len(rows), "orig")
        pooled = np.empty((len(rows), next(iter(self.pooled.values())).shape[1]), np.float32)
        tokens = None
        if self.tokens is not None:
            t = next(iter(self.tokens.values()))
            tokens = np.empty((len(rows), *t.shape[1:]), np.float32)
        for view in np.unique(views):
            sel = np.flatnonzero(views == view)
            pooled[sel] = self.pooled[view][rows[sel]]
            if tokens is not None:
                tokens[sel] = self.tokens[view][rows[sel]]
        out = {"img_pooled": torch.from_numpy(pooled)}
        if tokens is not None:
            out["img_tokens"] = torch.from_numpy(tokens)
        return out


def load_features(
    ds: Dataset, settings: ZeroShotSettings, *, quiet: bool | None = None
) -> tuple[ImageFeatures, list[str]]:
    """Every row's (train then test) cached image features and caption vectors, and their checksums.

    Read from the feature store (``runs/<dataset>/cache``): images already embedded for the
    models are not embedded again.
    """
    store = FeatureStore(ds, quiet)
    spec = ImageEncoderSpec.from_config(settings.image_encoder)
    outputs = ("pooled", "tokens") if settings.tokens else ("pooled",)
    views = ("orig", "hflip") if settings.flip or settings.tta else ("orig",)
    img = store.image_views(spec, outputs, views)
    cap = store.caption_tokens(TextEncoderSpec(**settings.caption_encoder))
    caption = np.asarray(cap["pooled"], np.float32)
    caption /= np.linalg.norm(caption, axis=1, keepdims=True).clip(min=1e-12)
    feats = ImageFeatures(
        pooled={v: img[v]["pooled"] for v in views},
        tokens={v: img[v]["tokens"] for v in views} if settings.tokens else None,
        caption=caption,
    )
    return feats, [img[v]["checksum"] for v in views] + [cap["checksum"]]


# -- images outside the feature cache ---------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@torch.inference_mode()
def embed_image_files(
    files: Sequence[Path], spec_cfg: dict, *, views: Sequence[str] = ("orig",), batch_size: int = 16
) -> tuple[ImageFeatures, list[int], list[str]]:
    """Pooled vectors and token grids of image files, as the feature cache computes them.

    Same backbone, weights, input size, normalisation and pooling as ``capfuse.features.image`` (eager
    torch instead of ONNX Runtime: the same numbers to float16 precision). Returns the features
    of the files that decode, their positions in ``files`` and a list of problems
    (``file: reason``) for those that do not.
    """
    spec = ImageEncoderSpec.from_config(spec_cfg)
    model, _ = build_image(spec.name, weights=spec.weights)
    pre = preprocess_for(model.eval(), spec.size)
    fmap = FeatureMap(model, pre).eval()
    dim, n_tokens = model.num_features, spec.grid * spec.grid
    pooled_parts: dict[str, list] = {v: [] for v in views}
    tokens_parts: dict[str, list] = {v: [] for v in views}
    ok, problems = [], []
    for start in range(0, len(files), batch_size):  # decoded batch by batch: a big folder never sits in RAM
        arrays = []
        for i in range(start, min(start + batch_size, len(files))):
            try:
                # Files of any folder, never validated: a bomb is refused from its header here.
                arrays.append(load_array(files[i], pre.size, max_pixels=DEFAULT_MAX_PIXELS))
                ok.append(i)
            except Exception as exc:  # undecodable, truncated, not an image: reported, not fatal
                problems.append(f"{files[i]}: {type(exc).__name__}: {exc}")
        if not arrays:
            continue
        x = np.stack(arrays)
        for view in views:
            xv = np.ascontiguousarray(x[:, :, ::-1]) if view == "hflip" else x
            out = pool_outputs(fmap(torch.from_numpy(xv)).float().numpy(), ("pooled", "tokens"), spec.grid)
            # Rounded as the cache stores them, so that both paths feed the projector identical inputs.
            pooled_parts[view].append(out["pooled"].astype(np.float16))
            tokens_parts[view].append(out["tokens"].astype(np.float16))

    def join(parts: list, shape: tuple) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, *shape), np.float16)

    return (
        ImageFeatures(
            pooled={v: join(pooled_parts[v], (dim,)) for v in views},
            tokens={v: join(tokens_parts[v], (n_tokens, dim)) for v in views},
        ),
        ok,
        problems,
    )
