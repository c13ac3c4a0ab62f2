"""What the demo dataset holds: its sizes, classes and scene types, and how a sample's labels
are drawn.

The scenes are the source of label co-occurrence: each has a prior weight, an independent
probability per class and a background look (sky, ground, horizon, scene elements, drawn by
``background``). ``sample_labels`` picks a scene and its classes; the first train images each
force one class (``FORCED_PER_CLASS``). The small random draws here (``choice``, ``weighted``,
``jitter_colour``, ``random_colour``) are shared by the drawing and caption modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Bump whenever a table or drawing routine changes the output, so that old stamps stop
# matching and `make data` regenerates instead of keeping a dataset from an older generator.
GENERATOR_VERSION = 1

PRESETS: dict[str, dict] = {
    # The embedded default: the whole pipeline runs on it on a 2-core CPU in minutes.
    "default": dict(n_train=2000, n_test=800, size=256),
    # For tests: seconds to generate; every class still appears in train (see FORCED_PER_CLASS).
    "tiny": dict(n_train=80, n_test=40, size=64),
    # COMP5329-sized (30k/10k, stored as 640x480 JPEGs like its photos) for throughput checks at
    # competition size; generation scales linearly.
    "large": dict(n_train=30000, n_test=10000, size=256, photo=(640, 480)),
    # The default's size with test objects drawn in shapes, colours and a style that training
    # never shows (capfuse.data.demo.shifted): the development set for train/test shift.
    "shifted": dict(n_train=2000, n_test=800, size=256, shift="disjoint"),
    # The shifted set whose training images recur: a third of them are near-copies of the others
    # (capfuse.data.demo.writer.near_copy), so random folds share instances between training and
    # held-out rows, and grouped folds (folds.groups: auto) have groups to find.
    "recurring": dict(n_train=2000, n_test=800, size=256, shift="disjoint", recur=1 / 3),
}

# COCO ids and names for ids 1..19; 12 was never used by COCO and never occurs in COMP5329, so
# the ids are not contiguous, exactly like the real competition file.
CLASSES: list[tuple[int, str]] = [
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
]
CLASS_ID: dict[str, int] = {name: cid for cid, name in CLASSES}
CLASS_NAMES: list[str] = [name for _, name in CLASSES]

SPLIT_CODE = {"train": 0, "test": 1, "unlabelled": 2}
MAX_LABELS = 5  # COCO images restricted to these classes rarely carry more; keeps captions short
# The first FORCED_PER_CLASS * 18 train images each carry one class by turn, so that even the
# 80-image tiny preset holds every class at least twice (tests and stratified folds need it).
# It depends on the index only, so it is the same in every preset and changes ~2 % of the
# default preset's images.
FORCED_PER_CLASS = 2

# --------------------------------------------------------------------------------------------
# Scenes: the source of co-occurrence. Each scene has a prior weight, a probability per class
# (independent Bernoulli draws given the scene) and a background look. The numbers give
# person in ~65 % of images, cars ~30 %, rare street furniture at 1.5-3 %, and a mean of about
# 2.7 labels per image (1 to MAX_LABELS; see the summary that make_demo returns).
# --------------------------------------------------------------------------------------------
SCENES: dict[str, dict[str, Any]] = {
    "street": dict(
        weight=0.24,
        probs={
            "person": 0.85,
            "car": 0.70,
            "bus": 0.32,
            "truck": 0.32,
            "bicycle": 0.25,
            "motorcycle": 0.25,
            "traffic light": 0.55,
            "fire hydrant": 0.08,
            "stop sign": 0.09,
            "parking meter": 0.06,
            "bench": 0.15,
            "dog": 0.12,
            "bird": 0.08,
        },
        # sky top, sky at the horizon, ground at the horizon, ground at the bottom
        sky=[(150, 185, 225), (205, 215, 225), (170, 180, 195)],
        ground=[(95, 95, 100), (120, 118, 115), (80, 82, 90)],
        horizon=(0.30, 0.50),
        elements=["clouds", "buildings", "road", "lanes", "poles", "signs"],
    ),
    "highway": dict(
        weight=0.10,
        probs={
            "person": 0.35,
            "car": 0.85,
            "truck": 0.65,
            "bus": 0.35,
            "motorcycle": 0.20,
            "traffic light": 0.25,
            "stop sign": 0.05,
            "bicycle": 0.05,
        },
        sky=[(120, 170, 230), (190, 210, 235), (215, 205, 190)],
        ground=[(105, 105, 105), (90, 95, 100), (125, 120, 110)],
        horizon=(0.30, 0.45),
        elements=["clouds", "hills", "road", "lanes", "poles"],
    ),
    "harbour": dict(
        weight=0.09,
        probs={"person": 0.60, "boat": 0.92, "bird": 0.50, "car": 0.15, "truck": 0.12, "bench": 0.18, "dog": 0.10},
        sky=[(130, 180, 235), (200, 220, 240), (230, 220, 200)],
        ground=[(40, 90, 150), (30, 110, 140), (60, 100, 120)],
        horizon=(0.30, 0.50),
        elements=["clouds", "hills", "waves", "pier"],
    ),
    "airport": dict(
        weight=0.07,
        probs={"person": 0.55, "airplane": 0.92, "truck": 0.50, "car": 0.25, "bus": 0.25, "bird": 0.12},
        sky=[(110, 160, 225), (195, 215, 240), (225, 225, 230)],
        ground=[(110, 110, 112), (95, 100, 95), (130, 130, 125)],
        horizon=(0.35, 0.55),
        elements=["clouds", "terminal", "runway", "poles"],
    ),
    "countryside": dict(
        weight=0.10,
        probs={
            "person": 0.50,
            "horse": 0.55,
            "dog": 0.40,
            "bird": 0.35,
            "truck": 0.20,
            "car": 0.15,
            "bicycle": 0.10,
            "cat": 0.08,
            "train": 0.08,
        },
        sky=[(120, 175, 235), (200, 220, 240), (235, 225, 200)],
        ground=[(95, 140, 60), (140, 150, 70), (120, 110, 70)],
        horizon=(0.25, 0.50),
        elements=["clouds", "hills", "field", "fence", "trees"],
    ),
    "park": dict(
        weight=0.15,
        probs={
            "person": 0.80,
            "dog": 0.50,
            "bench": 0.50,
            "bicycle": 0.30,
            "bird": 0.38,
            "cat": 0.08,
            "horse": 0.06,
            "fire hydrant": 0.05,
            "motorcycle": 0.04,
        },
        sky=[(125, 175, 230), (195, 215, 235), (210, 220, 200)],
        ground=[(80, 150, 70), (60, 130, 60), (110, 140, 80)],
        horizon=(0.20, 0.45),
        elements=["clouds", "trees", "path", "bushes"],
    ),
    "home": dict(
        weight=0.15,
        probs={"person": 0.65, "cat": 0.60, "dog": 0.50, "bird": 0.06},
        # indoors: "sky" is the wall, "ground" the floor
        sky=[(225, 215, 190), (200, 190, 170), (180, 200, 205)],
        ground=[(150, 110, 70), (170, 140, 100), (120, 90, 60)],
        horizon=(0.50, 0.70),
        elements=["wallpaper", "window", "furniture", "planks", "rug"],
    ),
    "railway": dict(
        weight=0.10,
        probs={
            "person": 0.55,
            "train": 0.92,
            "car": 0.12,
            "traffic light": 0.25,
            "bench": 0.25,
            "bird": 0.10,
            "truck": 0.08,
        },
        sky=[(140, 175, 215), (200, 205, 215), (200, 200, 195)],
        ground=[(125, 115, 105), (105, 100, 95), (140, 130, 115)],
        horizon=(0.30, 0.50),
        elements=["clouds", "buildings", "platform", "tracks", "poles"],
    ),
}


# --------------------------------------------------------------------------------------------
# Random draws shared by the drawing and caption modules
# --------------------------------------------------------------------------------------------


def choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    """One of ``items``, uniformly."""
    return items[int(rng.integers(len(items)))]


def weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """A key of ``weights``, with probability proportional to its value."""
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def jitter_colour(rng: np.random.Generator, colour: Sequence[int], amount: float) -> tuple[int, int, int]:
    """``colour`` plus Gaussian noise of std ``amount`` per channel, clipped to 0..255."""
    c = np.clip(np.asarray(colour, dtype=float) + rng.normal(0.0, amount, 3), 0, 255)
    return tuple(int(v) for v in c)


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Any mid-range colour: distractors, rugs."""
    return tuple(int(v) for v in rng.integers(20, 236, 3))


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def sample_labels(rng: np.random.Generator, forced: str | None = None) -> tuple[str, list[str]]:
    """A scene and its classes (1..MAX_LABELS, in CLASS_NAMES order); ``forced`` is always kept."""
    if forced is None:
        scene = weighted(rng, {s: v["weight"] for s, v in SCENES.items()})
    else:
        scene = weighted(rng, {s: v["weight"] * v["probs"].get(forced, 0.0) for s, v in SCENES.items()})
    probs = SCENES[scene]["probs"]
    draws = rng.random(len(CLASS_NAMES))
    chosen = [c for c, u in zip(CLASS_NAMES, draws) if u < probs.get(c, 0.0)]
    if forced is not None and forced not in chosen:
        chosen.append(forced)
    if not chosen:
        chosen = [weighted(rng, probs)]
    if len(chosen) > MAX_LABELS:
        keep = [c for c in chosen if c == forced]
        rest = [c for c in chosen if c != forced]
        order = rng.permutation(len(rest))
        keep += [rest[k] for k in order[: MAX_LABELS - len(keep)]]
        chosen = keep
    return scene, [c for c in CLASS_NAMES if c in chosen]


def forced_class(split: str, index: int) -> str | None:
    """The class that sample ``index`` of ``split`` must carry, if any (see FORCED_PER_CLASS)."""
    if split == "train" and index < FORCED_PER_CLASS * len(CLASS_NAMES):
        return CLASS_NAMES[index % len(CLASS_NAMES)]
    return None
