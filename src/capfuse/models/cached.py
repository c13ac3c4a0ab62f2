"""Cached feature arrays served as torch batches: the ``net`` loop's input in cached mode.

Rows are train then test (then an unlabelled folder's); each view (original, horizontal flip) is
a dict of arrays, usually memory-mapped float16 caches. Flip augmentation draws a row's image
keys from the flipped view; captions do not flip.
"""

from __future__ import annotations

import numpy as np
import torch

FEATURE_KEYS = ("img_pooled", "img_tokens", "img_mid", "cap_pooled", "cap_tokens", "cap_mask")


class CachedViews:
    """Cached feature arrays for all rows (train then test), one dict per view."""

    def __init__(self, views: dict[str, dict[str, np.ndarray]]) -> None:
        self.views = views

    def batch(
        self, rows: np.ndarray, flip: np.ndarray | None = None, keys: frozenset[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Gather ``rows``; where ``flip`` is True take the hflip view (image keys only).

        ``keys``: the features the net reads (``CapFuseNet.input_keys``); None gathers all. An
        image-only MLP never reads the token grid, which is 16x the pooled vector's bytes.
        """
        orig = self.views["orig"]
        hflip = self.views.get("hflip")
        out = {}
        for key in FEATURE_KEYS:
            if key not in orig or (keys is not None and key not in keys):
                continue
            src = orig[key]
            if flip is not None and flip.any() and key.startswith("img_") and hflip is not None:
                # Each row read once, from the view it uses, straight into the batch.
                arr = np.empty((len(rows), *src.shape[1:]), src.dtype)
                arr[~flip] = src[rows[~flip]]
                arr[flip] = hflip[key][rows[flip]]
            else:
                arr = np.ascontiguousarray(src[rows])
            t = torch.from_numpy(arr)
            out[key] = t.bool() if key == "cap_mask" else t.float()
        return out

    def view_batch(self, view: str, rows: np.ndarray, keys: frozenset[str] | None = None) -> dict[str, torch.Tensor]:
        return self.batch(rows, np.ones(len(rows), bool) if view == "hflip" else None, keys)
