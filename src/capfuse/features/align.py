"""Test-time alignment of cached image features: each channel of the test rows' features given
the training rows' mean and spread (``image_encoder.align: test``).

A frozen encoder's features of images from another source (other colours, another drawing
style, another camera) move as a whole: every channel's mean and spread over the test images
differ from the training images', and a head trained on the training statistics reads the test
rows off its scale. Re-standardising each channel of the test rows to the training rows'
statistics is the feature-level form of AdaBN (Li et al., 2016) and the diagonal case of CORAL
(Sun, Feng and Saenko, 2016). It reads no label: the statistics are of the inputs only, over all
training rows and the test rows with a usable image. Where the test set is drawn like the
training set, the two sets' statistics agree within sampling noise and the map is close to the
identity.

A channel is axis 1 of a pooled vector [N, D] or a map [N, C, h, w], axis 2 of a token grid
[N, T, D]; its statistics pool every other axis.

A set of fewer than ``MIN_ROWS`` rows is not measured: a channel's mean over n rows is off by
about its spread over the square root of n, a tenth of it at 100 rows, and one image's own
"statistics" would map every channel of it to the training mean. A bundle predicting so few
rows aligns them as the run aligned its test set (``record``).
"""

from __future__ import annotations

import numpy as np

MIN_ROWS = 100
ALIGNMENT_FILE = "alignment.json"  # beside a trained model: the record of both sets' statistics
CHUNK_VALUES = 8_000_000  # float64 values read at once (64 MB): a 30k map cache is gigabytes
MIN_SPREAD = 1e-6  # a channel constant on either side is shifted only, never scaled by 1/0


def channel_axis(ndim: int) -> int:
    """The channel axis of a cached image array: 2 for a token grid [N, T, D], else 1."""
    return 2 if ndim == 3 else 1


def channel_moments(arr, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each channel over ``rows`` (float64, read in chunks).

    The chunks follow the sorted row list, not the row numbers, so the same rows give the same
    figures bit for bit wherever they sit in the array (a bundle's rows against the run's)."""
    axis = channel_axis(arr.ndim)
    pooled = tuple(a for a in range(arr.ndim) if a != axis)
    rows = np.sort(np.asarray(rows, np.int64))
    if not len(rows):
        raise ValueError("no rows to measure channel statistics on")
    step = max(1, CHUNK_VALUES // max(1, int(np.prod(arr.shape[1:]))))
    total = sq = 0.0
    count = 0
    for start in range(0, len(rows), step):
        block = np.asarray(arr[rows[start : start + step]], np.float64)
        total = total + block.sum(axis=pooled)
        sq = sq + np.square(block).sum(axis=pooled)
        count += block.size // block.shape[axis]
    mean = total / count
    return mean, np.sqrt(np.maximum(sq / count - np.square(mean), 0.0))


def transform(train: tuple, test: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` per channel that give rows of the ``test`` moments the ``train``
    moments: ``x * scale + shift``."""
    (mu_tr, sd_tr), (mu_te, sd_te) = (tuple(np.asarray(v, np.float64) for v in m) for m in (train, test))
    flat = (sd_tr < MIN_SPREAD) | (sd_te < MIN_SPREAD)
    scale = np.where(flat, 1.0, sd_tr / np.maximum(sd_te, MIN_SPREAD))
    return scale, mu_tr - mu_te * scale


class AlignedRows:
    """A cached image array whose chosen rows are read aligned, every other row as it is. Reads
    like the array it wraps (``shape``, ``dtype``, row indexing), in float32, so the memory maps
    still serve and only the rows a batch asks for are read."""

    def __init__(self, arr, aligned: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
        self.arr, self.aligned = arr, np.asarray(aligned, bool)  # one flag per row
        self.shape, self.ndim, self.dtype = arr.shape, arr.ndim, np.dtype(np.float32)
        shape = [1] * (arr.ndim - 1)  # the row axis is indexed away; broadcast over the rest
        shape[channel_axis(arr.ndim) - 1] = -1
        self.scale = np.asarray(scale, np.float32).reshape(shape)
        self.shift = np.asarray(shift, np.float32).reshape(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        idx = np.arange(self.shape[0])[rows]
        out = np.asarray(self.arr[idx], np.float32)
        hit = self.aligned[idx]
        if np.ndim(idx) == 0:
            return out * self.scale + self.shift if hit else out
        if hit.any():
            out[hit] = out[hit] * self.scale + self.shift
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def _moments(pair: tuple) -> dict:
    return {"mean": pair[0].tolist(), "std": pair[1].tolist()}


def _pair(record: dict) -> tuple:
    return np.asarray(record["mean"], np.float64), np.asarray(record["std"], np.float64)


def align_test_rows(arr, n_train: int, test_rows: np.ndarray) -> tuple:
    """``arr`` with ``test_rows`` (row numbers: the test rows with a usable image) given the
    statistics of its first ``n_train`` rows, and the record a bundle keeps of both sets'
    statistics (JSON numbers, exact). Fewer than ``MIN_ROWS`` test rows: ``arr`` as it is."""
    train = channel_moments(arr, np.arange(n_train))
    record = {"train": _moments(train), "test": None, "test_rows": int(len(test_rows))}
    if len(test_rows) < MIN_ROWS:
        return arr, record
    test = channel_moments(arr, test_rows)
    record["test"] = _moments(test)
    aligned = np.zeros(arr.shape[0], bool)
    aligned[test_rows] = True
    return AlignedRows(arr, aligned, *transform(train, test)), record


def align_views(views: dict, n_train: int, test_ok: np.ndarray) -> dict:
    """Every cached image array (``img_*``) of ``views`` (view -> key -> array over the training
    rows, then the test rows, then any unlabelled rows) replaced, in place, by one whose test rows
    with a usable image (``test_ok``) are aligned; returns the record of both sets' statistics
    (view -> key -> ``align_test_rows``'s), which the trainer writes beside the model and a
    bundle carries."""
    rows = n_train + np.flatnonzero(test_ok)
    record: dict = {}
    for view, arrays in views.items():
        for key in [k for k in arrays if k.startswith("img_")]:
            arrays[key], record.setdefault(view, {})[key] = align_test_rows(arrays[key], n_train, rows)
    return record


def align_new_rows(arr, usable: np.ndarray, record: dict):
    """Rows a bundle predicts (``usable``: those with an image), aligned as the run aligned its
    test set: by their own statistics where there are at least ``MIN_ROWS`` of them, else by the
    run's test statistics; as they are where neither set had enough rows to measure."""
    rows = np.flatnonzero(usable)
    if len(rows) >= MIN_ROWS:
        test = channel_moments(arr, rows)
    elif record["test"] is not None:
        test = _pair(record["test"])
    else:
        return arr
    return AlignedRows(arr, usable, *transform(_pair(record["train"]), test))
