"""Groups of near-duplicate training images, and K folds that keep every group in one fold.

When the same object instance recurs across training rows (the same drawing, a near-duplicate
photo), random folds put its copies on both sides of a fold: the held-out copy is scored by a
model that learnt its twin, and CV overstates the score on a test set of new instances.

``find_groups`` links two training images when their vectors are much closer than images
usually are to their near neighbours, and takes the connected components of those links. Given
the vectors of the mirrored images as well, a pair is as close as the nearer of an image and the
other's mirror image, so a copy that was flipped is found like one that was not.
``group_folds`` then folds whole groups, keeping each class's share of positives close to 1/k
in every fold. Both are pure functions of arrays; the folds stage reads the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.decomposition import PCA

# The distances are measured on the vectors' top principal directions, centred: on raw pooled
# CNN features every pair looks alike, and 256 directions keep what tells images apart while a
# 30,000-row pass stays a matter of seconds.
DIMS = 256
FIT_ROWS = 5000  # rows the projection is fitted on: enough for 256 stable directions
CHUNK = 2048  # query rows per similarity block: bounds the memory at CHUNK x rows floats
# The yardstick is a row's distance to its 10th nearest other row, not its nearest: where most
# rows have a copy, the nearest row is the copy, and a yardstick taken from it would call the
# copies far apart. Groups of ten or more copies of one image are what could still bend it.
KTH = 10
# The yardstick's median is taken over this many rows at most: a stable median, and a second
# pass over all 30,000 x 30,000 pairs would double the stage's work for nothing.
REFERENCE_ROWS = 4000


@dataclass(frozen=True)
class Groups:
    """A group id per row (0..g-1, numbered in order of first appearance) and how it was found."""

    labels: np.ndarray
    ratio: float  # the share of ``median_kth`` under which two rows were linked
    median_kth: float  # the median distance of a row to its KTH nearest other row

    @property
    def max_distance(self) -> float:
        return self.ratio * self.median_kth

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels) if len(self.labels) else np.zeros(0, np.int64)

    def summary(self) -> str:
        """The one log line: how many groups, the largest, how many rows share a group."""
        sizes = self.sizes
        shared = int(sizes[sizes > 1].sum())
        return (
            f"{len(sizes)} groups over {len(self.labels)} rows; the largest holds {int(sizes.max(initial=0))} rows; "
            f"{shared} rows are in {int((sizes > 1).sum())} groups of more than one (linked below cosine distance "
            f"{self.max_distance:.4f}, {self.ratio:g} x the median distance to a row's {KTH}th nearest, {self.median_kth:.4f})"
        )


def _unit_projection(vectors: np.ndarray, seed: int, *others: np.ndarray) -> list[np.ndarray]:
    """Rows centred, on their top principal directions, scaled to unit length (float32); each of
    ``others`` (the mirrored view) through the same centre and directions, so distances across
    the two compare with distances within one."""
    x = np.asarray(vectors, np.float32)
    centre = x.mean(0)
    out = [x - centre] + [np.asarray(o, np.float32) - centre for o in others]
    dims = min(DIMS, x.shape[1], len(x))
    if dims < x.shape[1]:
        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(len(x), min(FIT_ROWS, len(x)), replace=False))
        pca = PCA(dims, svd_solver="randomized", iterated_power=3, random_state=seed).fit(out[0][fit_rows])
        out = [pca.transform(o).astype(np.float32) for o in out]
    return [o / np.maximum(np.linalg.norm(o, axis=1, keepdims=True), 1e-12) for o in out]


def _kth_distance(z: np.ndarray, queries: np.ndarray, kth: int) -> np.ndarray:
    """The cosine distance of each row ``queries`` names to its ``kth`` nearest other row."""
    out = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), CHUNK):
        block = queries[start : start + CHUNK]
        sim = z[block] @ z.T
        sim[np.arange(len(block)), block] = -np.inf
        out[start : start + CHUNK] = 1.0 - -np.partition(-sim, kth - 1, axis=1)[:, kth - 1]
    return out


def _links(z: np.ndarray, max_distance: float, mirrored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of rows closer than ``max_distance``; with ``mirrored`` (each row's mirror
    image), the nearer of i to j, i to j's mirror and i's mirror to j."""
    left, right = [], []
    for start in range(0, len(z), CHUNK):
        block = slice(start, start + CHUNK)
        sim = z[block] @ z.T
        if mirrored is not None:
            np.maximum(sim, z[block] @ mirrored.T, out=sim)
            np.maximum(sim, mirrored[block] @ z.T, out=sim)
        i, j = np.nonzero(sim > 1.0 - max_distance)
        i = i + start
        keep = i < j
        left.append(i[keep])
        right.append(j[keep])
    return np.concatenate(left), np.concatenate(right)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Group ids 0..g-1 in order of each group's first row, so equal partitions get equal ids."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def find_groups(
    vectors: np.ndarray,
    usable: np.ndarray | None = None,
    *,
    ratio: float,
    seed: int = 0,
    mirrored: np.ndarray | None = None,
) -> Groups:
    """Connected components of the near-duplicate links between rows of ``vectors``.

    Two rows are linked when their cosine distance is below ``ratio`` times the median distance
    of a row to its ``KTH`` nearest other row (``folds.group_ratio``): a yardstick read from the
    data itself, so the rule holds for any encoder's vectors. ``usable``: rows with a real
    vector (False: no usable image, a zero row that would match every other); those stay groups
    of one. ``mirrored``: the same rows' vectors of the mirrored images (the yardstick stays the
    unmirrored one's), so a flipped copy links to its source.
    """
    n = len(vectors)
    usable = np.ones(n, bool) if usable is None else np.asarray(usable, bool)
    if usable.shape != (n,):
        raise ValueError(f"usable must hold one flag per row ({n}), got shape {usable.shape}")
    if mirrored is not None and np.shape(mirrored) != np.shape(vectors):
        raise ValueError(f"mirrored must match vectors' shape {np.shape(vectors)}, got {np.shape(mirrored)}")
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    rows = np.flatnonzero(usable)
    if len(rows) <= KTH:  # too few rows to measure the yardstick: no groups
        return Groups(np.arange(n, dtype=np.int64), ratio, 0.0)
    views = [np.asarray(mirrored)[rows]] if mirrored is not None else []
    z, *flipped = _unit_projection(np.asarray(vectors)[rows], seed, *views)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(len(z), min(REFERENCE_ROWS, len(z)), replace=False))
    median = float(np.median(_kth_distance(z, queries, KTH)))
    i, j = _links(z, ratio * median, flipped[0] if flipped else None)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(len(rows), len(rows)))
    _, component = connected_components(graph, directed=False)
    labels = np.arange(n, dtype=np.int64) + len(rows)  # unusable rows: ids no component takes
    labels[rows] = component
    return Groups(_renumber(labels), ratio, median)


def split_large(labels: np.ndarray, max_size: int) -> tuple[np.ndarray, list[int]]:
    """Groups of more than ``max_size`` rows dissolved into single rows, and their old sizes.

    So large a group is a chain of similar images (A like B like C ...) rather than copies of
    one, and it could not sit in one fold without emptying the others of its classes.
    """
    labels = np.asarray(labels, np.int64)
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    too_large = np.flatnonzero(sizes > max_size)
    if not len(too_large):
        return labels, []
    out = labels.copy()
    rows = np.flatnonzero(np.isin(labels, too_large))
    out[rows] = labels.max() + 1 + np.arange(len(rows))
    return _renumber(out), sorted((int(s) for s in sizes[too_large]), reverse=True)


def group_folds(Y: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold (0..k-1) per row; every group in one fold, class shares kept near 1/k.

    Greedy, largest group first (the hardest to place; ties in a seeded random order): each
    group goes to the fold where adding it leaves the folds' shares of every class's positives,
    and of the rows, closest to 1/k (least squares over classes and rows alike). Groups of one
    come last and even out what the large ones left.
    """
    Y = np.asarray(Y, np.float64)
    labels = np.asarray(labels, np.int64)
    n_groups = int(labels.max()) + 1 if len(labels) else 0
    # Per group: its positives of each class and, as a last column, its rows.
    counts = np.zeros((n_groups, Y.shape[1] + 1))
    np.add.at(counts, labels, np.hstack([Y, np.ones((len(Y), 1))]))
    totals = np.maximum(counts.sum(0), 1.0)
    shares = counts / totals  # each group's share of every class's positives and of the rows
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(-counts[order, -1], kind="stable")]
    filled = np.zeros((k, counts.shape[1]))
    fold_of_group = np.empty(n_groups, np.int64)
    target = 1.0 / k
    for g in order:
        # The change of the squared gaps to 1/k if g went to each fold; a class g lacks adds 0.
        after = filled + shares[g]
        cost = ((after - target) ** 2 - (filled - target) ** 2).sum(1)
        best = np.flatnonzero(cost <= cost.min() + 1e-12)
        f = best[np.argmin(filled[best, -1])]  # a tie: the fold with the fewest rows, then the lowest
        fold_of_group[g] = f
        filled[f] += shares[g]
    return fold_of_group[labels]
