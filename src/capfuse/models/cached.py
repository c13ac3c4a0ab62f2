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

    def batch(self, rows: np.ndarray, flip: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Gather ``rows``; where ``flip`` is True take the hflip view (image keys only)."""
        orig = self.views["orig"]
        out = {}
        for key in FEATURE_KEYS:
            if key not in orig:
                continue
            arr = np.asarray(orig[key][rows])
            if flip is not None and flip.any() and key.startswith("img_") and "hflip" in self.views:
                arr = arr.copy()
                arr[flip] = np.asarray(self.views["hflip"][key][rows[flip]])
            t = torch.from_numpy(np.ascontiguousarray(arr))
            out[key] = t.bool() if key == "cap_mask" else t.float()
        return out

    def view_batch(self, view: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
        return self.batch(rows, np.ones(len(rows), bool) if view == "hflip" else None)
