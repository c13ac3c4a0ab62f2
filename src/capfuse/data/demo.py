"""The bundled demo dataset: synthetic captioned images in the exact COMP5329 layout.

The real competition data (COCO photographs with captions) cannot be shipped, yet every method
of the product (fusion, stacking, thresholds, pseudo-labels, zero-shot on unseen labels) needs
data on which it has something to show. This generator draws scenes with PIL and writes
captions from a small grammar so that the task keeps the properties that matter:

* long-tailed labels with one dominant class (person in about two thirds of the images) and
  rare classes at 1-3 %, co-occurring through scene types (street, harbour, home, ...);
* objects with class signatures (parts, palettes, textures, aspect ratios) and deliberately
  confusable pairs (car/truck/bus, cat/dog, bird/airplane, bicycle/motorcycle), drawn small or
  large, rotated, partly occluded, over cluttered backgrounds;
* captions that name only some of the objects, sometimes by an ambiguous word ("vehicle",
  "pet"), sometimes name an object that is absent (~6 %), and carry the file's quirk
  (unquoted commas and double quotes inside the Caption field).

Neither modality is enough alone, by construction: what a pretrained CNN sees well in these
drawings (people, cars, buses, street furniture) is seldom named in captions, and what it
confuses or barely sees (small pets and birds, trucks, two-wheelers) is usually named. A
throwaway probe on the default preset (seed 0; 5-fold CV; one-vs-rest logistic regression; a
global threshold tuned on the out-of-fold predictions, top-1 when empty; mean F1 over samples)
gives: frozen EfficientNet-Lite0 pooled features 0.706, TF-IDF of the caption 0.710, their
concatenation 0.796 (always predicting "person" alone: 0.35). Seed 1 gives 0.70 / 0.71 / 0.79.
Stronger models have headroom above that.

Every sample is drawn from its own generator seeded by ``(seed, split, index)``, so the output
is byte-identical whatever the number of worker processes. The dataset is written into a
temporary sibling folder and renamed into place, and a stamp file makes a second call with
the same parameters a no-op (``make data`` is idempotent).

Usage::

    python -m capfuse.data.demo --out data/demo --preset default
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from capfuse.utils.io import read_json, write_json, write_text

# Bump whenever a table or drawing routine changes the output, so that old stamps stop
# matching and `make data` regenerates instead of keeping a dataset from an older generator.
GENERATOR_VERSION = 1

PRESETS: dict[str, dict[str, int]] = {
    # The embedded default: the whole pipeline runs on it on a 2-core CPU in minutes.
    "default": dict(n_train=2000, n_test=800, size=256),
    # For tests: seconds to generate; every class still appears in train (see FORCED_PER_CLASS).
    "tiny": dict(n_train=80, n_test=40, size=64),
    # COMP5329-sized (30k/10k) for throughput checks; generation scales linearly.
    "large": dict(n_train=30000, n_test=10000, size=256),
}

# COCO ids and names for ids 1..19; 12 was never used by COCO and never occurs in COMP5329, so
# the ids are not contiguous, exactly like the real competition file.
CLASSES: list[tuple[int, str]] = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"),
]
CLASS_ID: dict[str, int] = {name: cid for cid, name in CLASSES}
CLASS_NAMES: list[str] = [name for _, name in CLASSES]

SPLIT_CODE = {"train": 0, "test": 1, "unlabelled": 2}
STAMP_NAME = ".demo.json"
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
        probs={"person": 0.85, "car": 0.70, "bus": 0.32, "truck": 0.32, "bicycle": 0.25,
               "motorcycle": 0.25, "traffic light": 0.55, "fire hydrant": 0.08, "stop sign": 0.09,
               "parking meter": 0.06, "bench": 0.15, "dog": 0.12, "bird": 0.08},
        # sky top, sky at the horizon, ground at the horizon, ground at the bottom
        sky=[(150, 185, 225), (205, 215, 225), (170, 180, 195)],
        ground=[(95, 95, 100), (120, 118, 115), (80, 82, 90)],
        horizon=(0.30, 0.50),
        elements=["clouds", "buildings", "road", "lanes", "poles", "signs"],
    ),
    "highway": dict(
        weight=0.10,
        probs={"person": 0.35, "car": 0.85, "truck": 0.65, "bus": 0.35, "motorcycle": 0.20,
               "traffic light": 0.25, "stop sign": 0.05, "bicycle": 0.05},
        sky=[(120, 170, 230), (190, 210, 235), (215, 205, 190)],
        ground=[(105, 105, 105), (90, 95, 100), (125, 120, 110)],
        horizon=(0.30, 0.45),
        elements=["clouds", "hills", "road", "lanes", "poles"],
    ),
    "harbour": dict(
        weight=0.09,
        probs={"person": 0.60, "boat": 0.92, "bird": 0.50, "car": 0.15, "truck": 0.12,
               "bench": 0.18, "dog": 0.10},
        sky=[(130, 180, 235), (200, 220, 240), (230, 220, 200)],
        ground=[(40, 90, 150), (30, 110, 140), (60, 100, 120)],
        horizon=(0.30, 0.50),
        elements=["clouds", "hills", "waves", "pier"],
    ),
    "airport": dict(
        weight=0.07,
        probs={"person": 0.55, "airplane": 0.92, "truck": 0.50, "car": 0.25, "bus": 0.25,
               "bird": 0.12},
        sky=[(110, 160, 225), (195, 215, 240), (225, 225, 230)],
        ground=[(110, 110, 112), (95, 100, 95), (130, 130, 125)],
        horizon=(0.35, 0.55),
        elements=["clouds", "terminal", "runway", "poles"],
    ),
    "countryside": dict(
        weight=0.10,
        probs={"person": 0.50, "horse": 0.55, "dog": 0.40, "bird": 0.35, "truck": 0.20,
               "car": 0.15, "bicycle": 0.10, "cat": 0.08, "train": 0.08},
        sky=[(120, 175, 235), (200, 220, 240), (235, 225, 200)],
        ground=[(95, 140, 60), (140, 150, 70), (120, 110, 70)],
        horizon=(0.25, 0.50),
        elements=["clouds", "hills", "field", "fence", "trees"],
    ),
    "park": dict(
        weight=0.15,
        probs={"person": 0.80, "dog": 0.50, "bench": 0.50, "bicycle": 0.30, "bird": 0.38,
               "cat": 0.08, "horse": 0.06, "fire hydrant": 0.05, "motorcycle": 0.04},
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
        probs={"person": 0.55, "train": 0.92, "car": 0.12, "traffic light": 0.25, "bench": 0.25,
               "bird": 0.10, "truck": 0.08},
        sky=[(140, 175, 215), (200, 205, 215), (200, 200, 195)],
        ground=[(125, 115, 105), (105, 100, 95), (140, 130, 115)],
        horizon=(0.30, 0.50),
        elements=["clouds", "buildings", "platform", "tracks", "poles"],
    ),
}

# --------------------------------------------------------------------------------------------
# Objects. A class is a few drawing variants made of primitives in unit coordinates of the
# object's box (x right, y down, facing right). Roles name colours: "body" takes the class
# palette and texture, "body2" the palette's second colour, the rest are fixed colours.
# Confusable classes share parts and palettes and differ in a few cues only:
#   car / truck / bus   same wheels and palette; cabin vs cargo box + cab vs window row
#   cat / dog           same body; pointed vs floppy ears, stripes vs patches, tail
#   bird / airplane     the same cross silhouette; beak and head vs cockpit and tail fins
#   bicycle / motorcycle  ring wheels and a frame vs filled wheels and a tank
#   fire hydrant / parking meter / traffic light  short posts with a head
# --------------------------------------------------------------------------------------------


def _octagon(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [(cx + rx * math.cos(math.pi / 8 + k * math.pi / 4), cy + ry * math.sin(math.pi / 8 + k * math.pi / 4))
            for k in range(8)]


_WHEELS = [("ellipse", "dark", 0.10, 0.62, 0.30, 1.00), ("ellipse", "dark", 0.70, 0.62, 0.90, 1.00)]

SHAPES: dict[str, list[list[tuple]]] = {
    "person": [[
        ("ellipse", "skin", 0.30, 0.00, 0.70, 0.20),
        ("rect", "skin", 0.02, 0.22, 0.16, 0.56), ("rect", "skin", 0.84, 0.22, 0.98, 0.56),
        ("rrect", "body", 0.14, 0.18, 0.86, 0.62, 0.25),
        ("rect", "body2", 0.20, 0.58, 0.46, 1.00), ("rect", "body2", 0.54, 0.58, 0.80, 1.00),
    ], [  # seen from further: a dress / coat silhouette
        ("ellipse", "skin", 0.32, 0.00, 0.68, 0.19),
        ("poly", "body", [(0.30, 0.18), (0.70, 0.18), (0.92, 0.85), (0.08, 0.85)]),
        ("rect", "dark", 0.30, 0.84, 0.44, 1.00), ("rect", "dark", 0.56, 0.84, 0.70, 1.00),
    ]],
    "bicycle": [[
        ("ring", "dark", 0.00, 0.42, 0.40, 1.00, 0.08), ("ring", "dark", 0.60, 0.42, 1.00, 1.00, 0.08),
        ("line", "body", [(0.20, 0.71), (0.45, 0.42), (0.80, 0.71)], 0.06),
        ("line", "body", [(0.20, 0.71), (0.55, 0.71), (0.45, 0.42)], 0.06),
        ("line", "body", [(0.45, 0.42), (0.40, 0.24)], 0.05), ("rect", "dark", 0.30, 0.18, 0.50, 0.25),
        ("line", "body", [(0.80, 0.71), (0.72, 0.20), (0.84, 0.14)], 0.05),
    ]],
    "motorcycle": [[
        ("ellipse", "dark", 0.00, 0.50, 0.36, 1.00), ("ellipse", "dark", 0.64, 0.50, 1.00, 1.00),
        ("ellipse", "grey", 0.12, 0.67, 0.24, 0.83), ("ellipse", "grey", 0.76, 0.67, 0.88, 0.83),
        ("poly", "body", [(0.18, 0.64), (0.30, 0.30), (0.72, 0.28), (0.84, 0.56), (0.55, 0.72)]),
        ("rect", "dark", 0.26, 0.20, 0.56, 0.31), ("line", "dark", [(0.72, 0.32), (0.80, 0.04)], 0.05),
    ]],
    "car": [[
        ("poly", "body", [(0.20, 0.42), (0.31, 0.06), (0.70, 0.06), (0.83, 0.42)]),
        ("poly", "light", [(0.27, 0.40), (0.35, 0.13), (0.49, 0.13), (0.49, 0.40)]),
        ("poly", "light", [(0.53, 0.40), (0.53, 0.13), (0.67, 0.13), (0.76, 0.40)]),
        ("rrect", "body", 0.00, 0.38, 1.00, 0.82, 0.35),
        ("rect", "amber", 0.93, 0.48, 1.00, 0.56),
        *_WHEELS,
    ], [  # hatchback: taller cabin reaching the back
        ("poly", "body", [(0.04, 0.42), (0.08, 0.04), (0.62, 0.04), (0.80, 0.42)]),
        ("rect", "light", 0.12, 0.12, 0.40, 0.38),
        ("poly", "light", [(0.44, 0.38), (0.44, 0.12), (0.60, 0.12), (0.72, 0.38)]),
        ("rrect", "body", 0.00, 0.38, 1.00, 0.82, 0.3),
        *_WHEELS,
    ]],
    "truck": [[
        ("rect", "body", 0.00, 0.02, 0.68, 0.80),
        ("rrect", "body2", 0.70, 0.22, 1.00, 0.80, 0.15), ("rect", "light", 0.78, 0.30, 0.96, 0.48),
        ("ellipse", "dark", 0.05, 0.64, 0.21, 1.00), ("ellipse", "dark", 0.24, 0.64, 0.40, 1.00),
        ("ellipse", "dark", 0.78, 0.64, 0.94, 1.00),
    ], [  # pickup: car-like cab with an open bed
        ("rect", "body", 0.00, 0.40, 0.55, 0.80),
        ("poly", "body", [(0.52, 0.40), (0.58, 0.04), (0.80, 0.04), (0.88, 0.40)]),
        ("rect", "light", 0.62, 0.12, 0.78, 0.38), ("rrect", "body", 0.50, 0.38, 1.00, 0.80, 0.2),
        ("rect", "dark", 0.04, 0.40, 0.50, 0.46),
        *_WHEELS,
    ]],
    "bus": [[
        ("rrect", "body", 0.00, 0.02, 1.00, 0.86, 0.12),
        *[("rect", "light", 0.04 + 0.155 * k, 0.12, 0.15 + 0.155 * k, 0.42) for k in range(6)],
        ("rect", "body2", 0.00, 0.52, 1.00, 0.58),
        ("ellipse", "dark", 0.10, 0.70, 0.22, 1.00), ("ellipse", "dark", 0.78, 0.70, 0.90, 1.00),
    ], [  # double decker
        ("rrect", "body", 0.00, 0.00, 1.00, 0.88, 0.10),
        *[("rect", "light", 0.05 + 0.19 * k, 0.08, 0.18 + 0.19 * k, 0.28) for k in range(5)],
        *[("rect", "light", 0.05 + 0.19 * k, 0.40, 0.18 + 0.19 * k, 0.60) for k in range(5)],
        ("ellipse", "dark", 0.10, 0.74, 0.22, 1.00), ("ellipse", "dark", 0.78, 0.74, 0.90, 1.00),
    ]],
    "airplane": [[
        ("poly", "body2", [(0.40, 0.50), (0.62, 0.50), (0.50, 0.00), (0.44, 0.00)]),
        ("poly", "body2", [(0.40, 0.50), (0.62, 0.50), (0.50, 1.00), (0.44, 1.00)]),
        ("poly", "body2", [(0.00, 0.50), (0.12, 0.50), (0.04, 0.26), (0.00, 0.26)]),
        ("poly", "body2", [(0.00, 0.50), (0.12, 0.50), (0.04, 0.74), (0.00, 0.74)]),
        ("ellipse", "body", 0.00, 0.42, 1.00, 0.58),
        ("ellipse", "dark", 0.88, 0.46, 0.96, 0.54),
    ]],
    "bird": [[
        ("poly", "body2", [(0.34, 0.50), (0.60, 0.50), (0.40, 0.02)]),
        ("poly", "body2", [(0.34, 0.50), (0.60, 0.50), (0.40, 0.98)]),
        ("poly", "body2", [(0.00, 0.40), (0.18, 0.50), (0.00, 0.60)]),
        ("ellipse", "body", 0.14, 0.38, 0.84, 0.62), ("ellipse", "body", 0.74, 0.34, 0.94, 0.56),
        ("poly", "amber", [(0.93, 0.42), (1.00, 0.46), (0.93, 0.50)]),
        ("ellipse", "dark", 0.84, 0.40, 0.88, 0.45),
    ]],
    "train": [[
        *[("rect", "body", 0.00 + 0.34 * k, 0.05, 0.32 + 0.34 * k, 0.80) for k in range(3)],
        *[("rect", "light", 0.03 + 0.34 * k + 0.09 * j, 0.14, 0.09 + 0.34 * k + 0.09 * j, 0.40)
          for k in range(3) for j in range(3)],
        ("rect", "body2", 0.00, 0.52, 1.00, 0.58), ("rect", "dark", 0.00, 0.80, 1.00, 0.88),
        *[("ellipse", "dark", 0.03 + 0.17 * k, 0.84, 0.09 + 0.17 * k, 1.00) for k in range(6)],
    ]],
    "boat": [[  # sailboat
        ("poly", "body", [(0.00, 0.62), (1.00, 0.62), (0.85, 1.00), (0.12, 1.00)]),
        ("line", "dark", [(0.48, 0.62), (0.48, 0.02)], 0.03),
        ("poly", "white", [(0.50, 0.05), (0.50, 0.58), (0.90, 0.58)]),
        ("poly", "white", [(0.46, 0.12), (0.46, 0.58), (0.16, 0.58)]),
    ], [  # motor boat with a cabin
        ("rect", "white", 0.30, 0.30, 0.70, 0.62), ("rect", "light", 0.36, 0.38, 0.64, 0.50),
        ("poly", "body", [(0.00, 0.55), (1.00, 0.60), (0.85, 1.00), (0.10, 1.00)]),
    ]],
    "traffic light": [[
        ("rect", "grey", 0.44, 0.55, 0.56, 1.00),
        ("rrect", "body", 0.06, 0.00, 0.94, 0.60, 0.2),
        ("ellipse", "red", 0.22, 0.03, 0.78, 0.19), ("ellipse", "amber", 0.22, 0.22, 0.78, 0.38),
        ("ellipse", "green", 0.22, 0.41, 0.78, 0.57),
    ]],
    "fire hydrant": [[
        ("ellipse", "body", 0.22, 0.04, 0.78, 0.32),
        ("rrect", "body", 0.18, 0.20, 0.82, 0.94, 0.15),
        ("rect", "body2", 0.04, 0.42, 0.96, 0.56), ("rect", "body2", 0.08, 0.90, 0.92, 1.00),
    ]],
    "stop sign": [[
        ("rect", "grey", 0.44, 0.50, 0.56, 1.00),
        ("poly", "white", _octagon(0.00, 0.00, 1.00, 0.56)),
        ("poly", "body", _octagon(0.06, 0.03, 0.94, 0.53)),
        ("rect", "white", 0.20, 0.23, 0.80, 0.32),
    ]],
    "parking meter": [[
        ("rect", "grey", 0.40, 0.40, 0.60, 1.00),
        ("rrect", "body", 0.08, 0.00, 0.92, 0.44, 0.3),
        ("rect", "light", 0.22, 0.08, 0.78, 0.22), ("rect", "dark", 0.40, 0.28, 0.60, 0.34),
    ]],
    "bench": [[
        ("rect", "dark", 0.10, 0.00, 0.14, 0.62), ("rect", "dark", 0.86, 0.00, 0.90, 0.62),
        ("rect", "body", 0.00, 0.02, 1.00, 0.15), ("rect", "body", 0.00, 0.21, 1.00, 0.34),
        ("rect", "body", 0.00, 0.50, 1.00, 0.63),
        ("rect", "dark", 0.06, 0.62, 0.12, 1.00), ("rect", "dark", 0.88, 0.62, 0.94, 1.00),
    ]],
    "cat": [[
        ("line", "body", [(0.10, 0.62), (0.01, 0.36), (0.05, 0.10)], 0.06),
        ("rect", "body", 0.16, 0.78, 0.23, 1.00), ("rect", "body", 0.56, 0.78, 0.63, 1.00),
        ("ellipse", "body", 0.05, 0.44, 0.76, 0.92),
        ("poly", "body", [(0.62, 0.30), (0.66, 0.02), (0.76, 0.24)]),
        ("poly", "body", [(0.80, 0.24), (0.90, 0.02), (0.93, 0.30)]),
        ("ellipse", "body", 0.60, 0.18, 0.95, 0.56),
        ("ellipse", "green", 0.70, 0.30, 0.76, 0.36), ("ellipse", "green", 0.82, 0.30, 0.88, 0.36),
    ], [  # curled up, seen from above
        ("ellipse", "body", 0.00, 0.20, 0.90, 1.00),
        ("ellipse", "body", 0.55, 0.10, 0.98, 0.55),
        ("poly", "body", [(0.58, 0.25), (0.62, 0.00), (0.72, 0.16)]),
        ("poly", "body", [(0.82, 0.16), (0.92, 0.00), (0.96, 0.26)]),
        ("line", "body2", [(0.10, 0.80), (0.45, 0.95), (0.80, 0.85)], 0.06),
    ]],
    "dog": [[
        ("line", "body", [(0.08, 0.50), (0.00, 0.40)], 0.06),
        ("rect", "body", 0.12, 0.72, 0.20, 1.00), ("rect", "body", 0.24, 0.72, 0.32, 1.00),
        ("rect", "body", 0.54, 0.72, 0.62, 1.00), ("rect", "body", 0.64, 0.72, 0.72, 1.00),
        ("ellipse", "body", 0.05, 0.38, 0.75, 0.82),
        ("ellipse", "body", 0.60, 0.12, 0.94, 0.50), ("ellipse", "body", 0.86, 0.30, 1.00, 0.46),
        ("ellipse", "body2", 0.60, 0.16, 0.71, 0.50),
        ("ellipse", "dark", 0.80, 0.24, 0.85, 0.30), ("ellipse", "dark", 0.96, 0.34, 1.00, 0.39),
    ]],
    "horse": [[
        ("line", "body2", [(0.12, 0.32), (0.04, 0.60)], 0.05),
        ("rect", "body", 0.16, 0.55, 0.23, 1.00), ("rect", "body", 0.28, 0.55, 0.35, 1.00),
        ("rect", "body", 0.62, 0.55, 0.69, 1.00), ("rect", "body", 0.73, 0.55, 0.80, 1.00),
        ("ellipse", "body", 0.10, 0.26, 0.84, 0.64),
        ("poly", "body", [(0.68, 0.34), (0.80, 0.05), (0.90, 0.08), (0.84, 0.40)]),
        ("ellipse", "body", 0.80, 0.02, 1.00, 0.20), ("line", "body2", [(0.70, 0.30), (0.80, 0.04)], 0.04),
    ]],
}

# Per class: box aspect (width / height), height as a fraction of the image for a near
# object, palettes (first colour "body", second "body2"; shared across confusable classes on
# purpose) and texture weights for the "body" role.
STYLES: dict[str, dict[str, Any]] = {
    "person": dict(aspect=0.42, height=0.42,
                   palettes=[[(200, 40, 40), (40, 40, 70)], [(40, 80, 160), (50, 50, 50)], [(230, 230, 230), (70, 60, 120)],
                             [(40, 130, 70), (90, 70, 50)], [(230, 180, 40), (40, 40, 90)], [(120, 120, 125), (30, 30, 30)]],
                   textures={"solid": 0.5, "stripes": 0.2, "checker": 0.15, "gradient": 0.15}),
    "bicycle": dict(aspect=1.7, height=0.27,
                    palettes=[[(200, 30, 40), (30, 30, 30)], [(30, 60, 170), (30, 30, 30)], [(40, 40, 40), (90, 90, 90)],
                              [(230, 230, 230), (60, 60, 60)], [(30, 140, 80), (30, 30, 30)]],
                    textures={"solid": 1.0}),
    "motorcycle": dict(aspect=1.6, height=0.27,
                       palettes=[[(200, 30, 40), (30, 30, 30)], [(30, 60, 170), (30, 30, 30)], [(40, 40, 40), (90, 90, 90)],
                                 [(235, 140, 30), (30, 30, 30)], [(180, 180, 190), (40, 40, 40)]],
                       textures={"solid": 0.6, "gradient": 0.4}),
    "car": dict(aspect=2.1, height=0.22,
                palettes=[[(190, 30, 35), (60, 60, 60)], [(35, 70, 160), (60, 60, 60)], [(185, 185, 190), (70, 70, 70)],
                          [(235, 235, 235), (90, 90, 90)], [(30, 30, 35), (90, 90, 90)], [(230, 190, 40), (40, 40, 40)]],
                textures={"solid": 0.55, "gradient": 0.45}),
    "truck": dict(aspect=2.2, height=0.30,
                  # mostly pale cargo boxes with a coloured cab, some liveries (stripes)
                  palettes=[[(235, 235, 235), (190, 30, 35)], [(225, 215, 190), (35, 70, 160)], [(235, 235, 235), (40, 130, 70)],
                            [(200, 200, 205), (230, 190, 40)], [(190, 30, 35), (60, 60, 60)]],
                  textures={"solid": 0.45, "gradient": 0.2, "stripes": 0.35}),
    "bus": dict(aspect=2.6, height=0.34,
                palettes=[[(190, 30, 35), (235, 235, 235)], [(230, 190, 40), (40, 40, 40)], [(35, 70, 160), (235, 235, 235)],
                          [(235, 235, 235), (30, 120, 70)], [(40, 130, 70), (230, 230, 230)]],
                textures={"solid": 0.6, "gradient": 0.4}),
    "airplane": dict(aspect=1.3, height=0.30,
                     palettes=[[(235, 235, 240), (190, 190, 200)], [(200, 205, 215), (120, 130, 150)], [(235, 235, 240), (35, 70, 160)],
                               [(150, 150, 160), (90, 90, 100)]],
                     textures={"solid": 0.6, "gradient": 0.4}),
    "bird": dict(aspect=1.3, height=0.14,
                 palettes=[[(235, 235, 240), (150, 150, 160)], [(120, 90, 60), (80, 60, 40)], [(60, 60, 65), (30, 30, 35)],
                           [(60, 100, 190), (40, 60, 120)], [(150, 150, 160), (90, 90, 100)]],
                 textures={"solid": 0.5, "gradient": 0.3, "dots": 0.2}),
    "train": dict(aspect=3.6, height=0.30,
                  palettes=[[(190, 30, 35), (235, 235, 235)], [(35, 70, 160), (230, 190, 40)], [(185, 185, 190), (190, 30, 35)],
                            [(40, 110, 60), (230, 190, 40)], [(230, 190, 40), (40, 40, 40)]],
                  textures={"solid": 0.6, "gradient": 0.3, "stripes": 0.1}),
    "boat": dict(aspect=1.2, height=0.30,
                 palettes=[[(235, 235, 235), (35, 70, 160)], [(190, 30, 35), (235, 235, 235)], [(35, 70, 160), (235, 235, 235)],
                           [(140, 90, 50), (235, 235, 235)]],
                 textures={"solid": 0.6, "stripes": 0.2, "gradient": 0.2}),
    "traffic light": dict(aspect=0.36, height=0.30,
                          palettes=[[(35, 35, 35), (30, 30, 30)], [(40, 60, 40), (30, 30, 30)], [(200, 170, 40), (30, 30, 30)]],
                          textures={"solid": 1.0}),
    "fire hydrant": dict(aspect=0.62, height=0.17,
                         palettes=[[(200, 35, 35), (230, 190, 40)], [(230, 190, 40), (190, 190, 190)], [(200, 35, 35), (200, 200, 200)]],
                         textures={"solid": 0.6, "gradient": 0.4}),
    "stop sign": dict(aspect=0.56, height=0.24,
                      palettes=[[(200, 30, 35), (200, 30, 35)], [(185, 40, 45), (185, 40, 45)]],
                      textures={"solid": 0.7, "gradient": 0.3}),
    "parking meter": dict(aspect=0.38, height=0.27,
                          palettes=[[(150, 150, 160), (60, 60, 60)], [(60, 60, 70), (150, 150, 160)], [(40, 80, 150), (60, 60, 60)],
                                    [(200, 35, 35), (60, 60, 60)]],
                          textures={"solid": 0.6, "gradient": 0.4}),
    "bench": dict(aspect=2.6, height=0.17,
                  palettes=[[(130, 85, 45), (40, 40, 40)], [(40, 100, 60), (30, 30, 30)], [(150, 150, 155), (40, 40, 40)]],
                  textures={"solid": 0.4, "stripes": 0.3, "gradient": 0.3}),
    "cat": dict(aspect=1.5, height=0.25,
                # tabby stripes are the cat's main cue; grey / black / white coats overlap the dog's
                palettes=[[(220, 140, 60), (150, 85, 30)], [(130, 130, 135), (70, 70, 75)], [(40, 40, 40), (20, 20, 20)],
                          [(235, 230, 220), (150, 140, 130)], [(225, 160, 80), (120, 70, 30)]],
                textures={"stripes": 0.6, "solid": 0.25, "gradient": 0.15}),
    "dog": dict(aspect=1.5, height=0.28,
                # brown and golden coats and patches (dots) are the dog's cues
                palettes=[[(120, 90, 60), (60, 45, 30)], [(215, 170, 90), (150, 100, 50)], [(40, 40, 40), (20, 20, 20)],
                          [(235, 230, 220), (60, 50, 40)], [(150, 105, 60), (235, 230, 220)]],
                textures={"solid": 0.3, "dots": 0.5, "gradient": 0.2}),
    "horse": dict(aspect=1.35, height=0.36,
                  palettes=[[(120, 80, 45), (40, 30, 20)], [(160, 95, 50), (60, 40, 25)], [(40, 35, 30), (20, 20, 20)],
                            [(225, 220, 210), (120, 110, 100)], [(130, 130, 135), (50, 50, 55)]],
                  textures={"solid": 0.6, "dots": 0.2, "gradient": 0.2}),
}

# Fixed role colours; a little jitter is added per instance.
ROLE_COLOURS: dict[str, list[tuple[int, int, int]]] = {
    "dark": [(35, 35, 38), (25, 25, 25), (55, 50, 45)],
    "light": [(170, 205, 225), (200, 215, 225), (140, 170, 195)],
    "grey": [(120, 120, 125), (150, 150, 150), (95, 95, 100)],
    "white": [(240, 240, 240), (225, 228, 230)],
    "skin": [(235, 195, 160), (200, 150, 110), (140, 95, 60), (95, 65, 45)],
    "red": [(220, 40, 30)], "amber": [(235, 170, 30)], "green": [(40, 190, 70)],
}

# Classes that are sometimes in the air rather than on the ground (and how often).
FLYING: dict[str, float] = {"bird": 0.5, "airplane": 0.4}
# Share of instances placed far away (small, hard to see) where it differs from
# RENDER["far_share"]: pets, birds and two-wheelers are small and often in the background, so
# the image side misses them while the caption names them; people, cars, buses and street
# furniture are mostly near, the image side's strength.
FAR_SHARE: dict[str, float] = {
    "bird": 0.6, "cat": 0.6, "dog": 0.6, "truck": 0.45, "motorcycle": 0.45, "bicycle": 0.45,
    "person": 0.2, "car": 0.2, "bus": 0.2, "traffic light": 0.2, "bench": 0.2,
}
# How many instances: P(2), P(3), P(4); the rest is 1. People come in groups, street
# furniture alone.
INSTANCES: dict[str, tuple[float, float, float]] = {
    "person": (0.25, 0.12, 0.08), "car": (0.25, 0.10, 0.0), "bird": (0.25, 0.10, 0.05),
    "boat": (0.25, 0.08, 0.0), "truck": (0.15, 0.0, 0.0), "bus": (0.1, 0.0, 0.0),
    "bicycle": (0.2, 0.05, 0.0), "motorcycle": (0.2, 0.05, 0.0), "horse": (0.2, 0.05, 0.0),
    "dog": (0.15, 0.0, 0.0), "cat": (0.12, 0.0, 0.0), "traffic light": (0.25, 0.0, 0.0),
    "airplane": (0.15, 0.0, 0.0),
}

# Rendering knobs: these set how hard the image side is (calibrated with the probe, see the
# module docstring). Objects shrink with distance from the camera, so far ones are small and
# hard; distractors are shapes of no class (some look like wheels or windows).
RENDER: dict[str, Any] = {
    "scale_far": 0.30,  # size factor of the farthest objects (x the class's near height)
    "scale_near": 1.5,
    "scale_sigma": 0.20,  # log-normal spread of size around the perspective size
    # Share of instances placed far away (depth < far_depth): small and hard to see. The rest
    # sit in the near half, clear enough for a pretrained CNN. A gap between the two keeps
    # "seen" and "hidden" distinct, the way captions' "named" and "not named" are.
    "far_share": 0.30,
    "far_depth": 0.20,
    "near_depth": 0.45,
    "rotation_deg": 8.0,  # std of the tilt of ground objects (clipped at 2 std); flying ones turn more
    "part_jitter": 0.025,  # per-vertex jitter in box units: no two instances are the same
    "colour_jitter": 18.0,
    "distractors": (1, 5),  # shapes of no class, drawn over the background
    "occluders": (0, 1),  # shapes of no class drawn in front of the objects
    "noise_sigma": (2.0, 8.0),  # per-pixel noise, like sensor noise in dim photos
    "blur": (0.0, 0.7),  # Gaussian blur radius at 256 px
    "jpeg_quality": 90,
}

# --------------------------------------------------------------------------------------------
# Caption grammar. A caption names each present class with a probability set by the class
# (MENTION_RATE) and, mildly, by the size of its largest instance; sometimes by an ambiguous
# word; and occasionally it names a class that is absent.
# --------------------------------------------------------------------------------------------
MENTION: dict[str, float] = {
    # P(named) = rate[class] * (small + (1 - small) * min(1, sqrt(area) / full_area)): size
    # matters, but only mildly, so that what a caption misses is not just what the image hides
    # (otherwise the two modalities fail on the same objects and fusion has little to add).
    "small": 0.85,
    "full_area": 0.30,
    "max_mentions": 3,
    "hallucinate": 0.06,  # a plausible absent class is named (annotators err, objects are off-frame)
    "hypernym": 0.08,  # an ambiguous word instead of the class's own nouns
    "scene": 0.25,  # the caption names the place
    "adjective": 0.25,
    "quote": 0.25,  # an adjective, when used, is written in double quotes ("vintage")
    "prefix": 0.08,  # "Outside, ..." (a comma)
    "suffix": 0.10,  # "..., on a sunny day" (a comma)
    "no_period": 0.12,
}

# How readily a caption names each class. The split is what makes the two modalities
# complementary (checked with the probe in the module docstring): what a pretrained CNN finds
# in these drawings (people, cars, buses, street furniture, big scene-bound vehicles) is named
# less often, as background is in COCO captions; what it confuses or barely sees (pets, birds,
# trucks, two-wheelers, rare street objects) is usually named.
MENTION_RATE: dict[str, float] = {
    # easy to see, seldom named: the image side's classes
    "person": 0.35, "car": 0.25, "bus": 0.35, "traffic light": 0.15, "bench": 0.3,
    "airplane": 0.4, "train": 0.45, "boat": 0.4,
    # small or look-alike in the image, usually named: the caption side's classes
    "dog": 0.95, "cat": 0.95, "bird": 0.85, "truck": 0.8, "motorcycle": 0.85, "bicycle": 0.8,
    "horse": 0.8, "fire hydrant": 0.8, "stop sign": 0.8, "parking meter": 0.8,
}

# (singular, plural) nouns per class: the text side must learn synonyms.
NOUNS: dict[str, list[tuple[str, str]]] = {
    "person": [("man", "men"), ("woman", "women"), ("person", "people"), ("child", "children"),
               ("boy", "boys"), ("girl", "girls"), ("guy", "guys"), ("lady", "ladies")],
    "bicycle": [("bicycle", "bicycles"), ("bike", "bikes"), ("push bike", "push bikes")],
    "car": [("car", "cars"), ("sedan", "sedans"), ("taxi", "taxis"), ("hatchback", "hatchbacks")],
    "motorcycle": [("motorcycle", "motorcycles"), ("motorbike", "motorbikes"), ("scooter", "scooters")],
    "airplane": [("airplane", "airplanes"), ("plane", "planes"), ("jet", "jets"), ("airliner", "airliners")],
    "bus": [("bus", "buses"), ("double decker", "double deckers"), ("coach", "coaches")],
    "train": [("train", "trains"), ("locomotive", "locomotives"), ("tram", "trams")],
    "truck": [("truck", "trucks"), ("lorry", "lorries"), ("pickup truck", "pickup trucks"), ("van", "vans")],
    "boat": [("boat", "boats"), ("ship", "ships"), ("sailboat", "sailboats"), ("yacht", "yachts")],
    "traffic light": [("traffic light", "traffic lights"), ("stoplight", "stoplights"),
                      ("traffic signal", "traffic signals")],
    "fire hydrant": [("fire hydrant", "fire hydrants"), ("hydrant", "hydrants")],
    "stop sign": [("stop sign", "stop signs")],
    "parking meter": [("parking meter", "parking meters"), ("meter", "meters")],
    "bench": [("bench", "benches"), ("park bench", "park benches")],
    "bird": [("bird", "birds"), ("seagull", "seagulls"), ("pigeon", "pigeons"), ("duck", "ducks")],
    "cat": [("cat", "cats"), ("kitty", "kitties"), ("kitten", "kittens")],
    "dog": [("dog", "dogs"), ("puppy", "puppies"), ("pup", "pups")],
    "horse": [("horse", "horses"), ("pony", "ponies"), ("mare", "mares")],
}

# Ambiguous words: the caption says "vehicle" and only the image tells car from bus.
HYPERNYMS: dict[str, list[tuple[str, str]]] = {
    "car": [("vehicle", "vehicles"), ("automobile", "automobiles")],
    "truck": [("vehicle", "vehicles")],
    "bus": [("vehicle", "vehicles")],
    "motorcycle": [("vehicle", "vehicles"), ("bike", "bikes")],
    "cat": [("pet", "pets"), ("animal", "animals")],
    "dog": [("pet", "pets"), ("animal", "animals")],
    "horse": [("animal", "animals")],
    "bird": [("animal", "animals")],
    "airplane": [("aircraft", "aircraft")],
    "traffic light": [("signal", "signals"), ("pole", "poles")],
    "parking meter": [("pole", "poles")],
    "stop sign": [("sign", "signs")],
    "fire hydrant": [("pole", "poles")],
}

# Present participles; "" means the noun stands alone.
VERBS: dict[str, list[str]] = {
    "person": ["standing", "walking", "sitting", "waiting", "posing", "talking on a phone"],
    "car": ["parked", "driving", "stopped"], "truck": ["parked", "driving"],
    "bus": ["driving", "parked", "stopped"], "motorcycle": ["parked", "leaning"],
    "bicycle": ["parked", "leaning"], "dog": ["running", "sitting", "lying", "playing"],
    "cat": ["sitting", "sleeping", "lying", "curled up"], "horse": ["grazing", "standing", "running"],
    "bird": ["perched", "flying", "sitting"], "airplane": ["flying", "taking off", "parked", "landing"],
    "boat": ["docked", "floating", "sailing"], "train": ["pulling into the station", "traveling", "stopped"],
}
# Things a person rides: "A man riding a horse".
RIDDEN = ("bicycle", "motorcycle", "horse", "boat")

ADJECTIVES: dict[str, list[str]] = {
    "_any": ["old", "small", "large", "big", "little", "lone"],
    "car": ["vintage", "shiny", "parked", "classic"], "bus": ["vintage", "city", "tour", "school"],
    "truck": ["delivery", "vintage", "dump"], "train": ["passenger", "freight", "vintage", "commuter"],
    "airplane": ["commercial", "passenger", "jumbo"], "boat": ["fishing", "small", "sail"],
    "dog": ["cute", "fluffy", "happy"], "cat": ["cute", "fluffy", "sleepy"], "person": ["young", "smiling", "tall"],
    "horse": ["brown", "beautiful"], "bird": ["tiny", "white"], "bench": ["wooden", "empty"],
}

SCENE_PHRASES: dict[str, list[str]] = {
    "street": ["on a city street", "on the street", "downtown", "at an intersection", "on a busy road",
               "near the sidewalk", "in the city"],
    "highway": ["on the highway", "on a freeway", "on a busy road", "on the motorway", "in traffic"],
    "harbour": ["in the harbor", "at the marina", "on the water", "at the dock", "near the pier", "by the lake"],
    "airport": ["at the airport", "on the runway", "on the tarmac", "near the terminal"],
    "countryside": ["in a field", "on a farm", "in the countryside", "in a pasture", "on a dirt road"],
    "park": ["in the park", "on the grass", "in a garden", "on a lawn", "near some trees"],
    "home": ["in a living room", "on a couch", "in the kitchen", "indoors", "at home", "on the floor"],
    "railway": ["at the train station", "on the tracks", "on the railway", "at a platform", "near the station"],
}

# Templates by number of named objects; {A} capitalised noun phrase, {a} lower case, {v} a
# verb, {s} the scene phrase (may be empty). Some carry commas on purpose: the file quirk.
TEMPLATES: dict[int, list[str]] = {
    0: ["A view {s}.", "A picture taken {s}.", "An image of a place {s}.", "Looking out {s}.",
        "Nothing much going on {s}.", "A quiet scene {s}."],
    1: ["{A} {v} {s}.", "{A} {s}.", "There is {a} {s}.", "A close up of {a}.", "{A}, {v} {s}.",
        "A photo of {a} {s}."],
    2: ["{A} and {b} {s}.", "{A} next to {b}.", "{A} {v} near {b} {s}.", "{A}, {b} {s}.",
        "There is {a} and {b} {s}.", "{A} with {b}, {s}."],
    3: ["{A}, {b} and {c} {s}.", "{A} and {b} near {c}.", "{A} with {b}, {c} {s}."],
    -1: ["{P} riding {x} {s}.", "{P} on {x}, {s}.", "{P} riding {x}."],  # person + ridden object
}
PREFIXES = ["Outside, ", "In this picture, ", "Here, ", "On a sunny day, ", "From a distance, "]
SUFFIXES = [", on a sunny day", ", at dusk", ", in the rain", ", during the day", ", in the morning"]
COUNT_WORDS = {2: ["two", "a pair of", "a couple of"], 3: ["three", "several", "some"],
               4: ["four", "a group of", "several", "many"]}


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def sample_labels(rng: np.random.Generator, forced: str | None = None) -> tuple[str, list[str]]:
    """A scene and its classes (1..MAX_LABELS, in CLASS_NAMES order); ``forced`` is always kept."""
    if forced is None:
        scene = _weighted(rng, {s: v["weight"] for s, v in SCENES.items()})
    else:
        scene = _weighted(rng, {s: v["weight"] * v["probs"].get(forced, 0.0) for s, v in SCENES.items()})
    probs = SCENES[scene]["probs"]
    draws = rng.random(len(CLASS_NAMES))
    chosen = [c for c, u in zip(CLASS_NAMES, draws) if u < probs.get(c, 0.0)]
    if forced is not None and forced not in chosen:
        chosen.append(forced)
    if not chosen:
        chosen = [_weighted(rng, probs)]
    if len(chosen) > MAX_LABELS:
        keep = [c for c in chosen if c == forced]
        rest = [c for c in chosen if c != forced]
        order = rng.permutation(len(rest))
        keep += [rest[k] for k in order[: MAX_LABELS - len(keep)]]
        chosen = keep
    return scene, [c for c in CLASS_NAMES if c in chosen]


def _forced_class(split: str, index: int) -> str | None:
    if split == "train" and index < FORCED_PER_CLASS * len(CLASS_NAMES):
        return CLASS_NAMES[index % len(CLASS_NAMES)]
    return None


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def _jitter_colour(rng: np.random.Generator, colour: Sequence[int], amount: float) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour, dtype=float) + rng.normal(0.0, amount, 3), 0, 255)
    return tuple(int(v) for v in c)


def _texture(rng: np.random.Generator, kind: str, w: int, h: int, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """An (h, w, 3) float fill: the class's surface look."""
    if kind == "solid":
        return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = max(3.0, float(rng.uniform(0.12, 0.3)) * max(w, h))
    if kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(theta) + yy * np.sin(theta))
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        return (c1 * (1.15 - 0.5 * t[..., None])).clip(0, 255).astype(np.float32)
    if kind == "stripes":
        theta = rng.uniform(0, np.pi)
        m = ((xx * np.cos(theta) + yy * np.sin(theta)) // (period / 2)) % 2
    elif kind == "checker":
        m = ((xx // (period / 2)) + (yy // (period / 2))) % 2
    elif kind == "dots":
        r = period * rng.uniform(0.2, 0.35)
        m = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < r * r
    else:
        raise ValueError(f"unknown texture {kind!r}")
    m = m.astype(np.float32)[..., None]
    return (c1 * (1 - m) + c2 * m).astype(np.float32)


_SENTINEL = (1, 2, 3)  # "body" pixels are drawn in this colour, then replaced by the texture


def _draw_primitive(draw: ImageDraw.ImageDraw, prim: tuple, w: int, h: int, colour: tuple, rng: np.random.Generator) -> None:
    kind = prim[0]
    j = RENDER["part_jitter"]

    def pt(x: float, y: float) -> tuple[float, float]:
        return (float(np.clip(x + rng.normal(0, j), 0, 1)) * (w - 1), float(np.clip(y + rng.normal(0, j), 0, 1)) * (h - 1))

    if kind in ("ellipse", "rect", "rrect", "ring"):
        (x0, y0), (x1, y1) = pt(prim[2], prim[3]), pt(prim[4], prim[5])
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        if kind == "ellipse":
            draw.ellipse(box, fill=colour)
        elif kind == "rect":
            draw.rectangle(box, fill=colour)
        elif kind == "rrect":
            radius = int(prim[6] * min(box[2] - box[0], box[3] - box[1]))
            draw.rounded_rectangle(box, radius=max(0, radius), fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(1, int(prim[6] * min(w, h))))
    elif kind == "poly":
        draw.polygon([pt(x, y) for x, y in prim[2]], fill=colour)
    elif kind == "line":
        draw.line([pt(x, y) for x, y in prim[2]], fill=colour, width=max(1, int(prim[3] * min(w, h))), joint="curve")
    else:
        raise ValueError(f"unknown primitive {kind!r}")


def render_object(rng: np.random.Generator, cls: str, w: int, h: int) -> Image.Image:
    """One instance of ``cls`` as an RGBA image of (w, h), facing right, not yet rotated."""
    style = STYLES[cls]
    variant = _choice(rng, SHAPES[cls])
    palette = _choice(rng, style["palettes"])
    cj = RENDER["colour_jitter"]
    body = np.asarray(_jitter_colour(rng, palette[0], cj), dtype=np.float32)
    body2 = _jitter_colour(rng, palette[1], cj)
    roles = {r: _jitter_colour(rng, _choice(rng, cs), cj / 2) for r, cs in ROLE_COLOURS.items()}
    roles["body"], roles["body2"] = _SENTINEL, body2
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for prim in variant:
        colour = roles[prim[1]]
        _draw_primitive(draw, prim, w, h, (*colour, 255), rng)
    tex_kind = _weighted(rng, style["textures"])
    tex2 = np.asarray(body2 if tex_kind != "solid" and rng.random() < 0.5 else body * 0.55, dtype=np.float32)
    arr = np.asarray(layer).copy()
    mask = (arr[..., 0] == _SENTINEL[0]) & (arr[..., 1] == _SENTINEL[1]) & (arr[..., 2] == _SENTINEL[2]) & (arr[..., 3] > 0)
    if mask.any():
        fill = _texture(rng, tex_kind, w, h, body, tex2)
        arr[..., :3][mask] = fill[mask].astype(np.uint8)
    return Image.fromarray(arr, "RGBA")


def _lerp(a: Sequence[float], b: Sequence[float], t: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a + (b - a) * t[..., None]


def _blotches(rng: np.random.Generator, size: int, amplitude: float, cells: int = 6) -> np.ndarray:
    """Smooth low-frequency colour variation: lighting and dirt, so that no area is flat."""
    # Mostly brightness with a little tint: real lighting varies in luminance far more than hue.
    z = rng.normal(0, 1, (cells, cells, 1)) + 0.35 * rng.normal(0, 1, (cells, cells, 3))
    small = (z * 40 + 128).clip(0, 255).astype(np.uint8)
    big = np.asarray(Image.fromarray(small, "RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
    return (big - 128) * (amplitude / 40)


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(20, 236, 3))


def _draw_elements(draw: ImageDraw.ImageDraw, rng: np.random.Generator, scene: str, S: int, hz: int) -> None:
    """Scene furniture that belongs to no class: the clutter a real photo has."""
    u = S / 256.0
    for el in SCENES[scene]["elements"]:
        if el == "clouds":
            for _ in range(int(rng.integers(0, 4))):
                cx, cy, r = rng.uniform(0, S), rng.uniform(0, hz * 0.7), rng.uniform(8, 30) * u
                draw.ellipse([cx - 2 * r, cy - r, cx + 2 * r, cy + r], fill=_jitter_colour(rng, (240, 242, 245), 8))
        elif el == "buildings":
            x = rng.uniform(-20, 0) * u
            while x < S:
                bw, bh = rng.uniform(25, 70) * u, rng.uniform(0.3, 0.95) * hz
                wall = _choice(rng, [(150, 140, 130), (170, 160, 150), (120, 110, 105), (185, 170, 140)])
                col = _jitter_colour(rng, wall, 15)
                draw.rectangle([x, hz - bh, x + bw, hz], fill=col)
                win = _jitter_colour(rng, (70, 80, 95), 15)
                step = max(4.0, 10 * u)
                if rng.random() < 0.7:
                    for yy in np.arange(hz - bh + step / 2, hz - step, step):
                        for xx in np.arange(x + step / 3, x + bw - step / 2, step):
                            draw.rectangle([xx, yy, xx + step / 2, yy + step / 2], fill=win)
                x += bw + rng.uniform(0, 10) * u
        elif el == "road":
            col = _jitter_colour(rng, (85, 85, 90), 10)
            left, right = rng.uniform(0.2, 0.45) * S, rng.uniform(0.55, 0.8) * S
            draw.polygon([(left, hz), (right, hz), (S * 1.3, S), (-S * 0.3, S)], fill=col)
        elif el == "lanes":
            col = _choice(rng, [(235, 235, 235), (230, 200, 60)])
            cx = rng.uniform(0.4, 0.6) * S
            for k in range(8):
                t0, t1 = k / 8, (k + 0.5) / 8
                y0, y1 = hz + (S - hz) * t0 ** 1.5, hz + (S - hz) * t1 ** 1.5
                draw.line([(cx, y0), (cx + (t1 - t0) * 5, y1)], fill=col, width=max(1, int((1 + 5 * t1) * u)))
        elif el in ("poles", "signs"):
            for _ in range(int(rng.integers(0, 3))):
                x = rng.uniform(0, S)
                top = hz - rng.uniform(0.05, 0.5) * hz
                bottom = hz + rng.uniform(0.05, 0.4) * (S - hz)
                draw.line([(x, top), (x, bottom)], fill=_jitter_colour(rng, (90, 90, 95), 15), width=max(1, int(3 * u)))
                if el == "signs":
                    sw = rng.uniform(8, 22) * u
                    col = _choice(rng, [(30, 90, 170), (30, 130, 70), (235, 235, 235), (230, 190, 40)])
                    draw.rectangle([x - sw, top, x + sw, top + sw * rng.uniform(0.5, 1.2)], fill=col)
        elif el == "hills":
            col = _jitter_colour(rng, (110, 140, 120), 20)
            for _ in range(int(rng.integers(1, 4))):
                cx, r = rng.uniform(0, S), rng.uniform(40, 120) * u
                draw.ellipse([cx - 2 * r, hz - r * 0.5, cx + 2 * r, hz + r * 0.5], fill=col)
        elif el == "waves":
            col = _jitter_colour(rng, (170, 200, 230), 15)
            for _ in range(int(rng.integers(6, 20))):
                x, y = rng.uniform(0, S), rng.uniform(hz, S)
                ln = rng.uniform(5, 20) * u * (0.5 + (y - hz) / max(1, S - hz))
                draw.line([(x, y), (x + ln, y)], fill=col, width=max(1, int(2 * u)))
        elif el == "pier":
            if rng.random() < 0.6:
                y = rng.uniform(hz, S)
                x0 = rng.uniform(-S, S / 2)
                draw.rectangle([x0, y, S, y + rng.uniform(6, 20) * u], fill=_jitter_colour(rng, (120, 90, 60), 15))
        elif el == "terminal":
            x0 = rng.uniform(-0.2, 0.5) * S
            draw.rectangle([x0, hz - rng.uniform(0.15, 0.45) * hz, x0 + rng.uniform(0.3, 0.8) * S, hz],
                           fill=_jitter_colour(rng, (190, 195, 200), 12))
            draw.rectangle([x0, hz - 0.1 * hz, x0 + 0.8 * S, hz - 0.05 * hz], fill=_jitter_colour(rng, (80, 120, 160), 15))
        elif el == "runway":
            y = hz + rng.uniform(0.2, 0.6) * (S - hz)
            draw.rectangle([0, y, S, y + rng.uniform(0.1, 0.3) * (S - hz)], fill=_jitter_colour(rng, (75, 75, 78), 8))
            for k in range(6):
                draw.rectangle([k * S / 6, y + 3 * u, k * S / 6 + 18 * u, y + 5 * u], fill=(230, 230, 230))
            draw.line([(0, y - 3 * u), (S, y - 3 * u)], fill=(220, 190, 50), width=max(1, int(2 * u)))
        elif el == "field":
            col = _jitter_colour(rng, _choice(rng, [(150, 170, 70), (120, 150, 60), (190, 170, 90)]), 15)
            for k in range(int(rng.integers(4, 12))):
                y = hz + (S - hz) * ((k + rng.uniform(0, 1)) / 12) ** 1.3
                draw.line([(0, y), (S, y + rng.uniform(-10, 10) * u)], fill=col, width=max(1, int(2 * u)))
        elif el == "fence":
            if rng.random() < 0.6:
                y = hz + rng.uniform(0.05, 0.5) * (S - hz)
                col = _jitter_colour(rng, (130, 100, 70), 15)
                hf = rng.uniform(10, 25) * u
                for yy in (y, y + hf / 2):
                    draw.line([(0, yy), (S, yy)], fill=col, width=max(1, int(2 * u)))
                for x in np.arange(rng.uniform(0, 20) * u, S, rng.uniform(15, 35) * u):
                    draw.line([(x, y - 3 * u), (x, y + hf)], fill=col, width=max(1, int(3 * u)))
        elif el in ("trees", "bushes"):
            for _ in range(int(rng.integers(1, 6))):
                x = rng.uniform(0, S)
                base = hz + rng.uniform(-0.05, 0.4) * (S - hz)
                r = rng.uniform(10, 35) * u * (0.6 if el == "bushes" else 1.0)
                if el == "trees":
                    trunk = _jitter_colour(rng, (100, 70, 40), 15)
                    draw.rectangle([x - r * 0.15, base - r * 1.5, x + r * 0.15, base], fill=trunk)
                top, bottom = (2.4, 0.6) if el == "trees" else (1.2, 0.0)
                draw.ellipse([x - r, base - r * top, x + r, base - r * bottom], fill=_jitter_colour(rng, (50, 110, 50), 20))
        elif el == "path":
            col = _jitter_colour(rng, (200, 180, 140), 15)
            a, b = rng.uniform(0.3, 0.6) * S, rng.uniform(0, 1) * S
            draw.polygon([(a - 8 * u, hz), (a + 8 * u, hz), (b + 40 * u, S), (b - 40 * u, S)], fill=col)
        elif el == "wallpaper":
            kind = _choice(rng, ["none", "none", "stripes", "dots"])
            col = _jitter_colour(rng, (190, 175, 150), 25)
            step = rng.uniform(8, 20) * u
            if kind == "stripes":
                for x in np.arange(0, S, step):
                    draw.rectangle([x, 0, x + step / 3, hz], fill=col)
            elif kind == "dots":
                for x in np.arange(step / 2, S, step):
                    for y in np.arange(step / 2, hz, step):
                        draw.ellipse([x - 1.5 * u, y - 1.5 * u, x + 1.5 * u, y + 1.5 * u], fill=col)
        elif el == "window":
            if rng.random() < 0.6:
                x, y, ww = rng.uniform(0, 0.7) * S, rng.uniform(0.05, 0.3) * hz, rng.uniform(0.15, 0.3) * S
                draw.rectangle([x, y, x + ww, y + ww * 0.9], fill=_jitter_colour(rng, (190, 215, 235), 15),
                               outline=(240, 240, 240), width=max(1, int(3 * u)))
                draw.line([(x + ww / 2, y), (x + ww / 2, y + ww * 0.9)], fill=(240, 240, 240), width=max(1, int(2 * u)))
        elif el == "furniture":
            for _ in range(int(rng.integers(1, 3))):
                x, fw = rng.uniform(-0.2, 0.8) * S, rng.uniform(0.2, 0.5) * S
                fh = rng.uniform(0.1, 0.25) * S
                col = _jitter_colour(rng, _choice(rng, [(120, 60, 50), (70, 90, 130), (150, 140, 120), (90, 70, 50)]), 20)
                top = hz - fh * rng.uniform(0.2, 0.8)
                draw.rounded_rectangle([x, top, x + fw, top + fh], radius=int(fh * 0.2), fill=col)
        elif el == "planks":
            col = _jitter_colour(rng, (100, 70, 45), 15)
            for k in range(int(rng.integers(4, 10))):
                y = hz + (S - hz) * (k / 10) ** 1.2
                draw.line([(0, y), (S, y)], fill=col, width=max(1, int(u)))
        elif el == "rug":
            if rng.random() < 0.4:
                cx, cy, rw = rng.uniform(0.2, 0.8) * S, hz + rng.uniform(0.3, 0.7) * (S - hz), rng.uniform(0.2, 0.4) * S
                draw.ellipse([cx - rw, cy - rw * 0.3, cx + rw, cy + rw * 0.3], fill=_random_colour(rng))
        elif el == "platform":
            y = hz + rng.uniform(0.0, 0.3) * (S - hz)
            x = rng.uniform(0.4, 0.8) * S
            draw.polygon([(x, y), (S, y), (S, S), (x + 0.3 * S, S)], fill=_jitter_colour(rng, (160, 160, 155), 10))
        elif el == "tracks":
            cx = rng.uniform(0.2, 0.6) * S
            for k in range(10):
                t = (k / 10) ** 1.4
                y, half = hz + (S - hz) * t, (4 + 60 * t) * u
                draw.line([(cx - half * 1.3, y), (cx + half * 1.3, y)], fill=(90, 70, 50),
                          width=max(1, int((1 + 3 * t) * u)))
            for side in (-1, 1):
                draw.line([(cx + side * 4 * u, hz), (cx + side * 64 * u, S)], fill=(150, 150, 155), width=max(1, int(2 * u)))
        else:
            raise ValueError(f"unknown scene element {el!r}")


def _distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, S: int, lo: float, hi: float) -> None:
    """A shape of no class (some look like wheels, windows or signs, on purpose)."""
    cx, cy = rng.uniform(0, S), rng.uniform(lo, hi)
    r = rng.uniform(0.02, 0.12) * S
    col = _random_colour(rng)
    kind = int(rng.integers(5))
    if kind == 0:
        draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r * rng.uniform(0.4, 1)], fill=col)
    elif kind == 1:
        draw.rectangle([cx - r, cy - r * rng.uniform(0.3, 1.5), cx + r * rng.uniform(0.3, 1.5), cy + r], fill=col)
    elif kind == 2:
        n = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a in ang], fill=col)
    elif kind == 3:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=max(1, int(r * 0.2)))
    else:
        ends = [(cx - r, cy - r * rng.uniform(-1, 1)), (cx + r, cy + r * rng.uniform(-1, 1))]
        draw.line(ends, fill=col, width=max(1, int(r * 0.15)))


def _instances(rng: np.random.Generator, cls: str) -> int:
    p2, p3, p4 = INSTANCES.get(cls, (0.08, 0.0, 0.0))
    u = rng.random()
    return 4 if u < p4 else 3 if u < p4 + p3 else 2 if u < p4 + p3 + p2 else 1


def render_scene(
    rng: np.random.Generator, scene: str, labels: list[str], size: int
) -> tuple[Image.Image, dict[str, tuple[int, float]]]:
    """The image, and per class (instance count, area fraction of its largest instance)."""
    S = size
    spec = SCENES[scene]
    hz = int(rng.uniform(*spec["horizon"]) * S)
    # Background: sky (or wall) gradient above the horizon, ground gradient below.
    t = np.linspace(0.0, 1.0, S, dtype=np.float32)
    sky_t = np.clip(t * S / max(1, hz), 0, 1)
    gnd_t = np.clip((t * S - hz) / max(1, S - hz), 0, 1)
    sky_top = _jitter_colour(rng, _choice(rng, spec["sky"]), 15)
    sky_hz = _jitter_colour(rng, _choice(rng, spec["sky"]), 15)
    g_hz = _jitter_colour(rng, _choice(rng, spec["ground"]), 15)
    g_bot = _jitter_colour(rng, _choice(rng, spec["ground"]), 15)
    col = np.where((t * S < hz)[:, None], _lerp(sky_top, sky_hz, sky_t), _lerp(g_hz, g_bot, gnd_t))
    bg = np.repeat(col[:, None, :], S, axis=1) + _blotches(rng, S, rng.uniform(8, 25))
    img = Image.fromarray(bg.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    _draw_elements(draw, rng, scene, S, hz)
    for _ in range(int(rng.integers(RENDER["distractors"][0], RENDER["distractors"][1] + 1))):
        _distractor(draw, rng, S, 0, S)

    # Objects: place every instance, then draw far to near so near objects occlude far ones.
    placed = []  # (depth key, cls, w, h, x, y, angle, flip)
    info: dict[str, tuple[int, float]] = {}
    for cls in labels:
        style = STYLES[cls]
        n = _instances(rng, cls)
        best = 0.0
        for _ in range(n):
            flying = rng.random() < FLYING.get(cls, 0.0) and scene != "home"
            u = float(rng.random())
            if rng.random() < FAR_SHARE.get(cls, RENDER["far_share"]):
                depth = u * RENDER["far_depth"]
            else:
                depth = RENDER["near_depth"] + u * (1 - RENDER["near_depth"])
            scale = (RENDER["scale_far"] + (RENDER["scale_near"] - RENDER["scale_far"]) * depth) * float(
                np.exp(rng.normal(0, RENDER["scale_sigma"])))
            h = max(3, int(style["height"] * scale * S))
            w = max(3, int(h * style["aspect"] * float(np.exp(rng.normal(0, 0.1)))))
            if w > 1.6 * S:  # a long train: crop to something that still fits mostly in frame
                w, h = int(1.6 * S), max(3, int(1.6 * S / style["aspect"]))
            if flying:
                cy = rng.uniform(0.05, 0.9) * max(hz, S * 0.3)
                angle = rng.uniform(-40, 40)
                key = -1.0 + depth * 0.1
            else:
                bottom = hz + (0.05 + 0.95 * depth) * (S - hz) if scene != "home" else hz + (0.1 + 0.9 * depth) * (S - hz)
                cy = bottom - h / 2
                # clipped: a ground object tilted further reads as fallen over, not as a view
                tilt = RENDER["rotation_deg"]
                angle = float(np.clip(rng.normal(0, tilt), -2 * tilt, 2 * tilt))
                key = bottom
            cx = rng.uniform(-0.1 * w, S + 0.1 * w)
            # The visible share of the box, roughly, for caption salience.
            vis_w = max(0.0, min(S, cx + w / 2) - max(0.0, cx - w / 2))
            vis_h = max(0.0, min(S, cy + h / 2) - max(0.0, cy - h / 2))
            best = max(best, 0.6 * vis_w * vis_h / (S * S))
            placed.append((key, cls, w, h, cx, cy, angle, bool(rng.random() < 0.5)))
        info[cls] = (n, best)
    placed.sort(key=lambda p: p[0])
    for _, cls, w, h, cx, cy, angle, flip in placed:
        obj = render_object(rng, cls, w, h)
        if flip:
            obj = obj.transpose(Image.FLIP_LEFT_RIGHT)
        if abs(angle) > 1:
            obj = obj.rotate(angle, resample=Image.BILINEAR, expand=True)
        img.paste(obj, (int(cx - obj.width / 2), int(cy - obj.height / 2)), obj)
    for _ in range(int(rng.integers(RENDER["occluders"][0], RENDER["occluders"][1] + 1))):
        _distractor(draw, rng, S, hz, S)

    # Photographic degradations: blur, sensor noise, exposure.
    radius = rng.uniform(*RENDER["blur"]) * S / 256
    if radius > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(img, dtype=np.float32)
    gain, bias = rng.uniform(0.8, 1.15), rng.uniform(-15, 15)
    noise = rng.standard_normal((S, S, 3), dtype=np.float32) * np.float32(rng.uniform(*RENDER["noise_sigma"]))
    arr = arr * np.float32(gain) + np.float32(bias) + noise
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB"), info


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def _noun_phrase(rng: np.random.Generator, cls: str, count: int) -> str:
    if cls in HYPERNYMS and rng.random() < MENTION["hypernym"]:
        sing, plur = _choice(rng, HYPERNYMS[cls])
    elif cls == "person" and count == 2 and rng.random() < 0.3:
        return _choice(rng, ["a man and a woman", "two people", "a couple", "a woman and a child"])
    else:
        sing, plur = _choice(rng, NOUNS[cls])
    adj = ""
    if rng.random() < MENTION["adjective"]:
        adj = _choice(rng, ADJECTIVES.get(cls, []) + ADJECTIVES["_any"])
        if rng.random() < MENTION["quote"]:
            adj = f'"{adj}"'
        adj += " "
    if count == 1:
        article = "an" if (adj.lstrip('"') or sing)[0] in "aeiou" else "a"
        return f"{article} {adj}{sing}"
    if cls == "person" and count >= 3 and rng.random() < 0.4:
        return _choice(rng, ["a group of people", "a crowd of people", "some people", "several people"])
    return f"{_choice(rng, COUNT_WORDS[min(count, 4)])} {adj}{plur}"


def make_caption(rng: np.random.Generator, scene: str, info: dict[str, tuple[int, float]]) -> str:
    """A caption that names some of the objects in ``info`` (class -> (count, area fraction))."""
    named: list[tuple[float, str, int]] = []  # (salience, class, count)
    for cls, (count, area) in info.items():
        size = min(1.0, math.sqrt(area) / MENTION["full_area"])
        if rng.random() < MENTION_RATE[cls] * (MENTION["small"] + (1 - MENTION["small"]) * size):
            named.append((area, cls, count))
    if rng.random() < MENTION["hallucinate"]:
        absent = {c: p for c, p in SCENES[scene]["probs"].items() if c not in info}
        if absent:
            named.append((float(rng.uniform(0, 0.1)), _weighted(rng, absent), 1))
    named.sort(key=lambda x: -x[0])
    named = named[: int(MENTION["max_mentions"])]
    classes = [c for _, c, _ in named]
    scene_phrase = _choice(rng, SCENE_PHRASES[scene]) if (rng.random() < MENTION["scene"] or not named) else ""

    rider = next((c for c in classes if c in RIDDEN), None)
    if "person" in classes and rider is not None and rng.random() < 0.6:
        counts = {c: n for _, c, n in named}
        template = _choice(rng, TEMPLATES[-1])
        person = _noun_phrase(rng, "person", counts["person"])
        text = template.format(P=person, x=_noun_phrase(rng, rider, counts[rider]), s=scene_phrase)
        rest = [c for c in classes if c not in ("person", rider)]
        if rest:
            text = text.rstrip(".") + f" with {_noun_phrase(rng, rest[0], counts[rest[0]])} nearby."
    else:
        phrases = [_noun_phrase(rng, c, n) for _, c, n in named]
        template = _choice(rng, TEMPLATES[len(phrases)])
        verb = _choice(rng, VERBS[classes[0]]) if classes and classes[0] in VERBS else ""
        slots = dict(zip("abc", phrases))
        text = template.format(s=scene_phrase, v=verb, **slots, **{k.upper(): v for k, v in slots.items()})
    if rng.random() < MENTION["suffix"]:
        text = text.rstrip(".") + _choice(rng, SUFFIXES) + "."
    # Tidy the gaps an empty slot leaves ("A dog  ." -> "A dog.", "with a cat, ." -> "with a cat.").
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,\s*\.", ".", text)
    text = re.sub(r"\s+([.,])", r"\1", text).strip()
    text = text[0].upper() + text[1:]
    if rng.random() < MENTION["prefix"]:
        text = _choice(rng, PREFIXES) + (text[0].lower() + text[1:] if not text.startswith('"') else text)
    if rng.random() < MENTION["no_period"]:
        text = text.rstrip(".")
    return text.replace("\n", " ").replace("\r", " ")


# --------------------------------------------------------------------------------------------
# One sample, the parallel loop, and the dataset on disk
# --------------------------------------------------------------------------------------------


def generate_sample(seed: int, split: str, index: int, size: int) -> tuple[Image.Image, list[int], str]:
    """Sample ``index`` of ``split``: image, label ids (ascending), caption. Pure in its arguments."""
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    scene, labels = sample_labels(rng, _forced_class(split, index))
    img, info = render_scene(rng, scene, labels, size)
    caption = make_caption(rng, scene, info)
    return img, sorted(CLASS_ID[c] for c in labels), caption


def _work(task: tuple[int, str, int, int, str]) -> tuple[list[int], str]:
    seed, split, index, size, path = task
    img, labels, caption = generate_sample(seed, split, index, size)
    img.save(path, "JPEG", quality=RENDER["jpeg_quality"])
    return labels, caption


def _params(n_train: int, n_test: int, size: int, seed: int) -> dict[str, int]:
    return dict(generator_version=GENERATOR_VERSION, n_train=n_train, n_test=n_test, size=size, seed=seed)


def _summary(params: dict, train_labels: list[list[int]], captions: list[str], seconds: float) -> dict:
    counts = {name: 0 for name in CLASS_NAMES}
    id_to_name = {cid: name for cid, name in CLASSES}
    for labels in train_labels:
        for cid in labels:
            counts[id_to_name[cid]] += 1
    n = max(1, len(train_labels))
    return dict(
        **params,
        class_counts=counts,
        class_freq={k: round(v / n, 4) for k, v in counts.items()},
        mean_labels=round(sum(len(x) for x in train_labels) / n, 3),
        captions_with_comma=sum("," in c for c in captions),
        captions_with_quote=sum('"' in c for c in captions),
        seconds=round(seconds, 2),
    )


def make_demo(
    out_dir: str | os.PathLike,
    n_train: int = 2000,
    n_test: int = 800,
    size: int = 256,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
) -> dict:
    """Write the demo dataset into ``out_dir`` (COMP5329 layout) and return a summary.

    A stamp (``.demo.json``) records the parameters; when it matches, nothing is regenerated
    (``skipped`` is True in the summary) unless ``force``. A folder that exists without a stamp
    is not ours, so it is never overwritten unless ``force``.
    """
    if n_train < 1 or n_test < 0 or size < 16 or seed < 0:
        raise ValueError(f"need n_train >= 1, n_test >= 0, size >= 16, seed >= 0 (got {n_train}, {n_test}, {size}, {seed})")
    start = time.perf_counter()
    out = Path(out_dir)
    params = _params(n_train, n_test, size, seed)
    stamp = out / STAMP_NAME
    if out.exists() and not force:
        if stamp.exists():
            saved = read_json(stamp)
            if saved.get("params") == params:
                summary = dict(saved["summary"], skipped=True, seconds=round(time.perf_counter() - start, 3))
                return summary
        elif any(out.iterdir()):
            raise FileExistsError(f"{out} exists and was not made by the demo generator; pass force=True to replace it")

    workers = max(1, int(workers or os.cpu_count() or 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        (tmp / "data").mkdir(parents=True)
        tasks = [(seed, "train", i, size, str(tmp / "data" / f"{i}.jpg")) for i in range(n_train)]
        tasks += [(seed, "test", i, size, str(tmp / "data" / f"{n_train + i}.jpg")) for i in range(n_test)]
        if workers == 1 or len(tasks) < 16:
            results = [_work(t) for t in tasks]
        else:
            # Each task seeds its own generator, so the pool's scheduling cannot change a byte.
            with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(min(workers, len(tasks))) as pool:
                results = pool.map(_work, tasks, chunksize=max(1, min(32, len(tasks) // (4 * workers))))
        train, test = results[:n_train], results[n_train:]
        ids_test = [f"{n_train + i}.jpg" for i in range(n_test)]
        write_text(tmp / "train.csv", "ImageID,Labels,Caption\n"
                   + "".join(f"{i}.jpg,{' '.join(map(str, lab))},{cap}\n" for i, (lab, cap) in enumerate(train)))
        write_text(tmp / "test.csv", "ImageID,Caption\n"
                   + "".join(f"{iid},{cap}\n" for iid, (_, cap) in zip(ids_test, test)))
        write_text(tmp / "test_labels.csv", "ImageID,Labels\n"
                   + "".join(f"{iid},{' '.join(map(str, lab))}\n" for iid, (lab, _) in zip(ids_test, test)))
        write_text(tmp / "classes.csv", "id,name\n" + "".join(f"{cid},{name}\n" for cid, name in CLASSES))
        summary = _summary(params, [lab for lab, _ in train], [c for _, c in results], time.perf_counter() - start)
        write_json(tmp / STAMP_NAME, {"params": params, "summary": summary})
        # Swap in: the old folder (if any) is moved aside first because a directory rename
        # cannot replace a non-empty directory.
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    summary = dict(summary, skipped=False, seconds=round(time.perf_counter() - start, 2), workers=workers)
    return summary


def make_unlabelled(out_dir: str | os.PathLike, n: int, size: int = 256, seed: int = 0, captions: bool = True,
                    workers: int | None = None) -> dict:
    """An extra folder of ``n`` unlabelled images for pseudo-label rounds (``data.unlabelled``).

    Layout: ``data/u<i>.jpg`` and ``unlabelled.csv`` (``ImageID`` and, with ``captions``, a
    ``Caption`` column). The labels go to ``unlabelled_labels.csv``, which only the pseudo-label
    report reads, like the demo's ``test_labels.csv``. Rows come from their own seed stream,
    so the train and test sets of the same seed do not change. Written to a temporary folder
    and renamed into place.
    """
    if n < 1:
        raise ValueError(f"need n >= 1 unlabelled images, got {n}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists; remove it first")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "data").mkdir(parents=True)
        tasks = [(seed, "unlabelled", i, size, str(tmp / "data" / f"u{i}.jpg")) for i in range(n)]
        workers = max(1, int(workers or os.cpu_count() or 1))
        with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(min(workers, n)) as pool:
            results = pool.map(_work, tasks, chunksize=max(1, min(32, n // (4 * workers))))
        ids = [f"u{i}.jpg" for i in range(n)]
        if captions:
            write_text(tmp / "unlabelled.csv", "ImageID,Caption\n" + "".join(f"{i},{c}\n" for i, (_, c) in zip(ids, results)))
        else:
            write_text(tmp / "unlabelled.csv", "ImageID\n" + "".join(f"{i}\n" for i in ids))
        write_text(tmp / "unlabelled_labels.csv", "ImageID,Labels\n"
                   + "".join(f"{i},{' '.join(map(str, lab))}\n" for i, (lab, _) in zip(ids, results)))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"n": n, "captions": captions, "folder": str(out)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m capfuse.data.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="sizes to start from (default: default)")
    parser.add_argument("--n-train", type=int, help="override the preset's number of train images")
    parser.add_argument("--n-test", type=int, help="override the preset's number of test images")
    parser.add_argument("--size", type=int, help="override the preset's image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the stamp matches")
    args = parser.parse_args(argv)
    params = dict(PRESETS[args.preset])
    for key in ("n_train", "n_test", "size"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    summary = make_demo(args.out, seed=args.seed, workers=args.workers, force=args.force, **params)
    verb = "kept (stamp matches)" if summary["skipped"] else f"written in {summary['seconds']} s"
    print(f"demo dataset {args.out}: {summary['n_train']} train + {summary['n_test']} test, {summary['size']} px, "
          f"seed {summary['seed']}: {verb}")
    print("mean labels per image: {}; train class frequencies: {}".format(
        summary["mean_labels"], ", ".join(f"{k} {v:.3f}" for k, v in summary["class_freq"].items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
