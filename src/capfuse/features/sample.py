"""What a model would read before its features exist: a few rows of each cache entry, repeated.

A time budget rehearses its net models before it pays for their encoders (``capfuse.budget``):
the probe's own encoder pass leaves a sample of every view and output, and a sample of each
caption encoder's states, and ``SampleStore`` serves them in the shapes ``FeatureStore`` gives.
"""

from __future__ import annotations

import numpy as np

from capfuse.features.store import FeatureStore


class RowTile:
    """A sample's rows repeated to ``n`` rows, without copying them: row ``i`` is the sample's row
    ``i % len(sample)``. A time budget's rehearsal reads these before the features exist."""

    def __init__(self, sample, n: int) -> None:
        self.sample = np.asarray(sample)
        self.shape = (n, *self.sample.shape[1:])
        self.dtype = self.sample.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        return self.sample[np.arange(self.shape[0])[rows] % len(self.sample)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class SampleStore(FeatureStore):
    """What a model would read, built from a few rows of each cache entry (``image``: per
    (encoder, view), the outputs of a sample of images; ``captions``: per caption encoder, a
    sample's token states, mask and pooled vectors), their rows repeated to every row of the
    dataset. A net's step costs the same on any values, so a time budget rehearses its models on
    these before paying for their encoders. An entry without a sample is refused: this store
    never embeds."""

    # A step costs the same on aligned values; measuring the statistics of every row of a
    # repeated sample (tens of thousands at competition size) would only spend the probe's time.
    aligns = False

    def __init__(self, store: FeatureStore, image: dict, captions: dict) -> None:
        self.ds, self.quiet, self.calibration = store.ds, True, store.calibration
        self.wanted, self.wanted_views = {}, {}
        n = len(store.ds.train_ids) + len(store.ds.test_ids)
        self._image = {}
        for (spec, view), arrays in image.items():
            outputs = tuple(sorted(arrays))
            tiled = {o: RowTile(a, n) for o, a in arrays.items()}
            self._image[(spec, outputs, view)] = tiled | {"checksum": "sample"}
        self._caption = {
            ("tokens", spec): {k: RowTile(a, n) for k, a in parts.items()} | {"checksum": "sample"}
            for spec, parts in captions.items()
        }

    def image_views(self, spec, outputs: tuple[str, ...], views: tuple[str, ...]) -> dict:
        out = {}
        for view in views:
            found = [
                v for (s, outs, w), v in self._image.items() if s == spec and w == view and set(outputs) <= set(outs)
            ]
            if not found:
                raise LookupError(f"no sample of {spec.name} {view} {outputs}")
            out[view] = found[0]
        return out

    def caption_tokens(self, spec) -> dict:
        if ("tokens", spec) not in self._caption:
            raise LookupError(f"no sample of the caption encoder {spec.name}")
        return self._caption[("tokens", spec)]

    def caption_tfidf(self, params: dict) -> tuple:
        raise LookupError("a linear model's features are not sampled")
