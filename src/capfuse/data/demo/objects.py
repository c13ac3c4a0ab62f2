"""What each class looks like, and the knobs that set how hard the images are.

``SHAPES`` draws every class from a few variants made of primitives, ``STYLES`` gives its
box, palettes and textures, ``ROLE_COLOURS`` the fixed part colours; ``FLYING``, ``FAR_SHARE``
and ``INSTANCES`` say where and how many instances go, and ``RENDER`` holds the rendering
knobs (sizes, depth, jitter, clutter, noise, JPEG quality). The routines that use these tables
are in ``drawing`` and ``background``; any change here changes the output, so it bumps
``scenes.GENERATOR_VERSION``.

Why this module is long: it is tables, one drawing recipe per class (shapes, styles,
colours, placement), which read best side by side; there is no logic in it to split off.
"""

from __future__ import annotations

import math
from typing import Any

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
    return [
        (cx + rx * math.cos(math.pi / 8 + k * math.pi / 4), cy + ry * math.sin(math.pi / 8 + k * math.pi / 4))
        for k in range(8)
    ]


_WHEELS = [("ellipse", "dark", 0.10, 0.62, 0.30, 1.00), ("ellipse", "dark", 0.70, 0.62, 0.90, 1.00)]

SHAPES: dict[str, list[list[tuple]]] = {
    "person": [
        [
            ("ellipse", "skin", 0.30, 0.00, 0.70, 0.20),
            ("rect", "skin", 0.02, 0.22, 0.16, 0.56),
            ("rect", "skin", 0.84, 0.22, 0.98, 0.56),
            ("rrect", "body", 0.14, 0.18, 0.86, 0.62, 0.25),
            ("rect", "body2", 0.20, 0.58, 0.46, 1.00),
            ("rect", "body2", 0.54, 0.58, 0.80, 1.00),
        ],
        [  # seen from further: a dress / coat silhouette
            ("ellipse", "skin", 0.32, 0.00, 0.68, 0.19),
            ("poly", "body", [(0.30, 0.18), (0.70, 0.18), (0.92, 0.85), (0.08, 0.85)]),
            ("rect", "dark", 0.30, 0.84, 0.44, 1.00),
            ("rect", "dark", 0.56, 0.84, 0.70, 1.00),
        ],
    ],
    "bicycle": [
        [
            ("ring", "dark", 0.00, 0.42, 0.40, 1.00, 0.08),
            ("ring", "dark", 0.60, 0.42, 1.00, 1.00, 0.08),
            ("line", "body", [(0.20, 0.71), (0.45, 0.42), (0.80, 0.71)], 0.06),
            ("line", "body", [(0.20, 0.71), (0.55, 0.71), (0.45, 0.42)], 0.06),
            ("line", "body", [(0.45, 0.42), (0.40, 0.24)], 0.05),
            ("rect", "dark", 0.30, 0.18, 0.50, 0.25),
            ("line", "body", [(0.80, 0.71), (0.72, 0.20), (0.84, 0.14)], 0.05),
        ]
    ],
    "motorcycle": [
        [
            ("ellipse", "dark", 0.00, 0.50, 0.36, 1.00),
            ("ellipse", "dark", 0.64, 0.50, 1.00, 1.00),
            ("ellipse", "grey", 0.12, 0.67, 0.24, 0.83),
            ("ellipse", "grey", 0.76, 0.67, 0.88, 0.83),
            ("poly", "body", [(0.18, 0.64), (0.30, 0.30), (0.72, 0.28), (0.84, 0.56), (0.55, 0.72)]),
            ("rect", "dark", 0.26, 0.20, 0.56, 0.31),
            ("line", "dark", [(0.72, 0.32), (0.80, 0.04)], 0.05),
        ]
    ],
    "car": [
        [
            ("poly", "body", [(0.20, 0.42), (0.31, 0.06), (0.70, 0.06), (0.83, 0.42)]),
            ("poly", "light", [(0.27, 0.40), (0.35, 0.13), (0.49, 0.13), (0.49, 0.40)]),
            ("poly", "light", [(0.53, 0.40), (0.53, 0.13), (0.67, 0.13), (0.76, 0.40)]),
            ("rrect", "body", 0.00, 0.38, 1.00, 0.82, 0.35),
            ("rect", "amber", 0.93, 0.48, 1.00, 0.56),
            *_WHEELS,
        ],
        [  # hatchback: taller cabin reaching the back
            ("poly", "body", [(0.04, 0.42), (0.08, 0.04), (0.62, 0.04), (0.80, 0.42)]),
            ("rect", "light", 0.12, 0.12, 0.40, 0.38),
            ("poly", "light", [(0.44, 0.38), (0.44, 0.12), (0.60, 0.12), (0.72, 0.38)]),
            ("rrect", "body", 0.00, 0.38, 1.00, 0.82, 0.3),
            *_WHEELS,
        ],
    ],
    "truck": [
        [
            ("rect", "body", 0.00, 0.02, 0.68, 0.80),
            ("rrect", "body2", 0.70, 0.22, 1.00, 0.80, 0.15),
            ("rect", "light", 0.78, 0.30, 0.96, 0.48),
            ("ellipse", "dark", 0.05, 0.64, 0.21, 1.00),
            ("ellipse", "dark", 0.24, 0.64, 0.40, 1.00),
            ("ellipse", "dark", 0.78, 0.64, 0.94, 1.00),
        ],
        [  # pickup: car-like cab with an open bed
            ("rect", "body", 0.00, 0.40, 0.55, 0.80),
            ("poly", "body", [(0.52, 0.40), (0.58, 0.04), (0.80, 0.04), (0.88, 0.40)]),
            ("rect", "light", 0.62, 0.12, 0.78, 0.38),
            ("rrect", "body", 0.50, 0.38, 1.00, 0.80, 0.2),
            ("rect", "dark", 0.04, 0.40, 0.50, 0.46),
            *_WHEELS,
        ],
    ],
    "bus": [
        [
            ("rrect", "body", 0.00, 0.02, 1.00, 0.86, 0.12),
            *[("rect", "light", 0.04 + 0.155 * k, 0.12, 0.15 + 0.155 * k, 0.42) for k in range(6)],
            ("rect", "body2", 0.00, 0.52, 1.00, 0.58),
            ("ellipse", "dark", 0.10, 0.70, 0.22, 1.00),
            ("ellipse", "dark", 0.78, 0.70, 0.90, 1.00),
        ],
        [  # double decker
            ("rrect", "body", 0.00, 0.00, 1.00, 0.88, 0.10),
            *[("rect", "light", 0.05 + 0.19 * k, 0.08, 0.18 + 0.19 * k, 0.28) for k in range(5)],
            *[("rect", "light", 0.05 + 0.19 * k, 0.40, 0.18 + 0.19 * k, 0.60) for k in range(5)],
            ("ellipse", "dark", 0.10, 0.74, 0.22, 1.00),
            ("ellipse", "dark", 0.78, 0.74, 0.90, 1.00),
        ],
    ],
    "airplane": [
        [
            ("poly", "body2", [(0.40, 0.50), (0.62, 0.50), (0.50, 0.00), (0.44, 0.00)]),
            ("poly", "body2", [(0.40, 0.50), (0.62, 0.50), (0.50, 1.00), (0.44, 1.00)]),
            ("poly", "body2", [(0.00, 0.50), (0.12, 0.50), (0.04, 0.26), (0.00, 0.26)]),
            ("poly", "body2", [(0.00, 0.50), (0.12, 0.50), (0.04, 0.74), (0.00, 0.74)]),
            ("ellipse", "body", 0.00, 0.42, 1.00, 0.58),
            ("ellipse", "dark", 0.88, 0.46, 0.96, 0.54),
        ]
    ],
    "bird": [
        [
            ("poly", "body2", [(0.34, 0.50), (0.60, 0.50), (0.40, 0.02)]),
            ("poly", "body2", [(0.34, 0.50), (0.60, 0.50), (0.40, 0.98)]),
            ("poly", "body2", [(0.00, 0.40), (0.18, 0.50), (0.00, 0.60)]),
            ("ellipse", "body", 0.14, 0.38, 0.84, 0.62),
            ("ellipse", "body", 0.74, 0.34, 0.94, 0.56),
            ("poly", "amber", [(0.93, 0.42), (1.00, 0.46), (0.93, 0.50)]),
            ("ellipse", "dark", 0.84, 0.40, 0.88, 0.45),
        ]
    ],
    "train": [
        [
            *[("rect", "body", 0.00 + 0.34 * k, 0.05, 0.32 + 0.34 * k, 0.80) for k in range(3)],
            *[
                ("rect", "light", 0.03 + 0.34 * k + 0.09 * j, 0.14, 0.09 + 0.34 * k + 0.09 * j, 0.40)
                for k in range(3)
                for j in range(3)
            ],
            ("rect", "body2", 0.00, 0.52, 1.00, 0.58),
            ("rect", "dark", 0.00, 0.80, 1.00, 0.88),
            *[("ellipse", "dark", 0.03 + 0.17 * k, 0.84, 0.09 + 0.17 * k, 1.00) for k in range(6)],
        ]
    ],
    "boat": [
        [  # sailboat
            ("poly", "body", [(0.00, 0.62), (1.00, 0.62), (0.85, 1.00), (0.12, 1.00)]),
            ("line", "dark", [(0.48, 0.62), (0.48, 0.02)], 0.03),
            ("poly", "white", [(0.50, 0.05), (0.50, 0.58), (0.90, 0.58)]),
            ("poly", "white", [(0.46, 0.12), (0.46, 0.58), (0.16, 0.58)]),
        ],
        [  # motor boat with a cabin
            ("rect", "white", 0.30, 0.30, 0.70, 0.62),
            ("rect", "light", 0.36, 0.38, 0.64, 0.50),
            ("poly", "body", [(0.00, 0.55), (1.00, 0.60), (0.85, 1.00), (0.10, 1.00)]),
        ],
    ],
    "traffic light": [
        [
            ("rect", "grey", 0.44, 0.55, 0.56, 1.00),
            ("rrect", "body", 0.06, 0.00, 0.94, 0.60, 0.2),
            ("ellipse", "red", 0.22, 0.03, 0.78, 0.19),
            ("ellipse", "amber", 0.22, 0.22, 0.78, 0.38),
            ("ellipse", "green", 0.22, 0.41, 0.78, 0.57),
        ]
    ],
    "fire hydrant": [
        [
            ("ellipse", "body", 0.22, 0.04, 0.78, 0.32),
            ("rrect", "body", 0.18, 0.20, 0.82, 0.94, 0.15),
            ("rect", "body2", 0.04, 0.42, 0.96, 0.56),
            ("rect", "body2", 0.08, 0.90, 0.92, 1.00),
        ]
    ],
    "stop sign": [
        [
            ("rect", "grey", 0.44, 0.50, 0.56, 1.00),
            ("poly", "white", _octagon(0.00, 0.00, 1.00, 0.56)),
            ("poly", "body", _octagon(0.06, 0.03, 0.94, 0.53)),
            ("rect", "white", 0.20, 0.23, 0.80, 0.32),
        ]
    ],
    "parking meter": [
        [
            ("rect", "grey", 0.40, 0.40, 0.60, 1.00),
            ("rrect", "body", 0.08, 0.00, 0.92, 0.44, 0.3),
            ("rect", "light", 0.22, 0.08, 0.78, 0.22),
            ("rect", "dark", 0.40, 0.28, 0.60, 0.34),
        ]
    ],
    "bench": [
        [
            ("rect", "dark", 0.10, 0.00, 0.14, 0.62),
            ("rect", "dark", 0.86, 0.00, 0.90, 0.62),
            ("rect", "body", 0.00, 0.02, 1.00, 0.15),
            ("rect", "body", 0.00, 0.21, 1.00, 0.34),
            ("rect", "body", 0.00, 0.50, 1.00, 0.63),
            ("rect", "dark", 0.06, 0.62, 0.12, 1.00),
            ("rect", "dark", 0.88, 0.62, 0.94, 1.00),
        ]
    ],
    "cat": [
        [
            ("line", "body", [(0.10, 0.62), (0.01, 0.36), (0.05, 0.10)], 0.06),
            ("rect", "body", 0.16, 0.78, 0.23, 1.00),
            ("rect", "body", 0.56, 0.78, 0.63, 1.00),
            ("ellipse", "body", 0.05, 0.44, 0.76, 0.92),
            ("poly", "body", [(0.62, 0.30), (0.66, 0.02), (0.76, 0.24)]),
            ("poly", "body", [(0.80, 0.24), (0.90, 0.02), (0.93, 0.30)]),
            ("ellipse", "body", 0.60, 0.18, 0.95, 0.56),
            ("ellipse", "green", 0.70, 0.30, 0.76, 0.36),
            ("ellipse", "green", 0.82, 0.30, 0.88, 0.36),
        ],
        [  # curled up, seen from above
            ("ellipse", "body", 0.00, 0.20, 0.90, 1.00),
            ("ellipse", "body", 0.55, 0.10, 0.98, 0.55),
            ("poly", "body", [(0.58, 0.25), (0.62, 0.00), (0.72, 0.16)]),
            ("poly", "body", [(0.82, 0.16), (0.92, 0.00), (0.96, 0.26)]),
            ("line", "body2", [(0.10, 0.80), (0.45, 0.95), (0.80, 0.85)], 0.06),
        ],
    ],
    "dog": [
        [
            ("line", "body", [(0.08, 0.50), (0.00, 0.40)], 0.06),
            ("rect", "body", 0.12, 0.72, 0.20, 1.00),
            ("rect", "body", 0.24, 0.72, 0.32, 1.00),
            ("rect", "body", 0.54, 0.72, 0.62, 1.00),
            ("rect", "body", 0.64, 0.72, 0.72, 1.00),
            ("ellipse", "body", 0.05, 0.38, 0.75, 0.82),
            ("ellipse", "body", 0.60, 0.12, 0.94, 0.50),
            ("ellipse", "body", 0.86, 0.30, 1.00, 0.46),
            ("ellipse", "body2", 0.60, 0.16, 0.71, 0.50),
            ("ellipse", "dark", 0.80, 0.24, 0.85, 0.30),
            ("ellipse", "dark", 0.96, 0.34, 1.00, 0.39),
        ]
    ],
    "horse": [
        [
            ("line", "body2", [(0.12, 0.32), (0.04, 0.60)], 0.05),
            ("rect", "body", 0.16, 0.55, 0.23, 1.00),
            ("rect", "body", 0.28, 0.55, 0.35, 1.00),
            ("rect", "body", 0.62, 0.55, 0.69, 1.00),
            ("rect", "body", 0.73, 0.55, 0.80, 1.00),
            ("ellipse", "body", 0.10, 0.26, 0.84, 0.64),
            ("poly", "body", [(0.68, 0.34), (0.80, 0.05), (0.90, 0.08), (0.84, 0.40)]),
            ("ellipse", "body", 0.80, 0.02, 1.00, 0.20),
            ("line", "body2", [(0.70, 0.30), (0.80, 0.04)], 0.04),
        ]
    ],
}

# Per class: box aspect (width / height), height as a fraction of the image for a near
# object, palettes (first colour "body", second "body2"; shared across confusable classes on
# purpose) and texture weights for the "body" role.
STYLES: dict[str, dict[str, Any]] = {
    "person": dict(
        aspect=0.42,
        height=0.42,
        palettes=[
            [(200, 40, 40), (40, 40, 70)],
            [(40, 80, 160), (50, 50, 50)],
            [(230, 230, 230), (70, 60, 120)],
            [(40, 130, 70), (90, 70, 50)],
            [(230, 180, 40), (40, 40, 90)],
            [(120, 120, 125), (30, 30, 30)],
        ],
        textures={"solid": 0.5, "stripes": 0.2, "checker": 0.15, "gradient": 0.15},
    ),
    "bicycle": dict(
        aspect=1.7,
        height=0.27,
        palettes=[
            [(200, 30, 40), (30, 30, 30)],
            [(30, 60, 170), (30, 30, 30)],
            [(40, 40, 40), (90, 90, 90)],
            [(230, 230, 230), (60, 60, 60)],
            [(30, 140, 80), (30, 30, 30)],
        ],
        textures={"solid": 1.0},
    ),
    "motorcycle": dict(
        aspect=1.6,
        height=0.27,
        palettes=[
            [(200, 30, 40), (30, 30, 30)],
            [(30, 60, 170), (30, 30, 30)],
            [(40, 40, 40), (90, 90, 90)],
            [(235, 140, 30), (30, 30, 30)],
            [(180, 180, 190), (40, 40, 40)],
        ],
        textures={"solid": 0.6, "gradient": 0.4},
    ),
    "car": dict(
        aspect=2.1,
        height=0.22,
        palettes=[
            [(190, 30, 35), (60, 60, 60)],
            [(35, 70, 160), (60, 60, 60)],
            [(185, 185, 190), (70, 70, 70)],
            [(235, 235, 235), (90, 90, 90)],
            [(30, 30, 35), (90, 90, 90)],
            [(230, 190, 40), (40, 40, 40)],
        ],
        textures={"solid": 0.55, "gradient": 0.45},
    ),
    "truck": dict(
        aspect=2.2,
        height=0.30,
        # mostly pale cargo boxes with a coloured cab, some liveries (stripes)
        palettes=[
            [(235, 235, 235), (190, 30, 35)],
            [(225, 215, 190), (35, 70, 160)],
            [(235, 235, 235), (40, 130, 70)],
            [(200, 200, 205), (230, 190, 40)],
            [(190, 30, 35), (60, 60, 60)],
        ],
        textures={"solid": 0.45, "gradient": 0.2, "stripes": 0.35},
    ),
    "bus": dict(
        aspect=2.6,
        height=0.34,
        palettes=[
            [(190, 30, 35), (235, 235, 235)],
            [(230, 190, 40), (40, 40, 40)],
            [(35, 70, 160), (235, 235, 235)],
            [(235, 235, 235), (30, 120, 70)],
            [(40, 130, 70), (230, 230, 230)],
        ],
        textures={"solid": 0.6, "gradient": 0.4},
    ),
    "airplane": dict(
        aspect=1.3,
        height=0.30,
        palettes=[
            [(235, 235, 240), (190, 190, 200)],
            [(200, 205, 215), (120, 130, 150)],
            [(235, 235, 240), (35, 70, 160)],
            [(150, 150, 160), (90, 90, 100)],
        ],
        textures={"solid": 0.6, "gradient": 0.4},
    ),
    "bird": dict(
        aspect=1.3,
        height=0.14,
        palettes=[
            [(235, 235, 240), (150, 150, 160)],
            [(120, 90, 60), (80, 60, 40)],
            [(60, 60, 65), (30, 30, 35)],
            [(60, 100, 190), (40, 60, 120)],
            [(150, 150, 160), (90, 90, 100)],
        ],
        textures={"solid": 0.5, "gradient": 0.3, "dots": 0.2},
    ),
    "train": dict(
        aspect=3.6,
        height=0.30,
        palettes=[
            [(190, 30, 35), (235, 235, 235)],
            [(35, 70, 160), (230, 190, 40)],
            [(185, 185, 190), (190, 30, 35)],
            [(40, 110, 60), (230, 190, 40)],
            [(230, 190, 40), (40, 40, 40)],
        ],
        textures={"solid": 0.6, "gradient": 0.3, "stripes": 0.1},
    ),
    "boat": dict(
        aspect=1.2,
        height=0.30,
        palettes=[
            [(235, 235, 235), (35, 70, 160)],
            [(190, 30, 35), (235, 235, 235)],
            [(35, 70, 160), (235, 235, 235)],
            [(140, 90, 50), (235, 235, 235)],
        ],
        textures={"solid": 0.6, "stripes": 0.2, "gradient": 0.2},
    ),
    "traffic light": dict(
        aspect=0.36,
        height=0.30,
        palettes=[[(35, 35, 35), (30, 30, 30)], [(40, 60, 40), (30, 30, 30)], [(200, 170, 40), (30, 30, 30)]],
        textures={"solid": 1.0},
    ),
    "fire hydrant": dict(
        aspect=0.62,
        height=0.17,
        palettes=[[(200, 35, 35), (230, 190, 40)], [(230, 190, 40), (190, 190, 190)], [(200, 35, 35), (200, 200, 200)]],
        textures={"solid": 0.6, "gradient": 0.4},
    ),
    "stop sign": dict(
        aspect=0.56,
        height=0.24,
        palettes=[[(200, 30, 35), (200, 30, 35)], [(185, 40, 45), (185, 40, 45)]],
        textures={"solid": 0.7, "gradient": 0.3},
    ),
    "parking meter": dict(
        aspect=0.38,
        height=0.27,
        palettes=[
            [(150, 150, 160), (60, 60, 60)],
            [(60, 60, 70), (150, 150, 160)],
            [(40, 80, 150), (60, 60, 60)],
            [(200, 35, 35), (60, 60, 60)],
        ],
        textures={"solid": 0.6, "gradient": 0.4},
    ),
    "bench": dict(
        aspect=2.6,
        height=0.17,
        palettes=[[(130, 85, 45), (40, 40, 40)], [(40, 100, 60), (30, 30, 30)], [(150, 150, 155), (40, 40, 40)]],
        textures={"solid": 0.4, "stripes": 0.3, "gradient": 0.3},
    ),
    "cat": dict(
        aspect=1.5,
        height=0.25,
        # tabby stripes are the cat's main cue; grey / black / white coats overlap the dog's
        palettes=[
            [(220, 140, 60), (150, 85, 30)],
            [(130, 130, 135), (70, 70, 75)],
            [(40, 40, 40), (20, 20, 20)],
            [(235, 230, 220), (150, 140, 130)],
            [(225, 160, 80), (120, 70, 30)],
        ],
        textures={"stripes": 0.6, "solid": 0.25, "gradient": 0.15},
    ),
    "dog": dict(
        aspect=1.5,
        height=0.28,
        # brown and golden coats and patches (dots) are the dog's cues
        palettes=[
            [(120, 90, 60), (60, 45, 30)],
            [(215, 170, 90), (150, 100, 50)],
            [(40, 40, 40), (20, 20, 20)],
            [(235, 230, 220), (60, 50, 40)],
            [(150, 105, 60), (235, 230, 220)],
        ],
        textures={"solid": 0.3, "dots": 0.5, "gradient": 0.2},
    ),
    "horse": dict(
        aspect=1.35,
        height=0.36,
        palettes=[
            [(120, 80, 45), (40, 30, 20)],
            [(160, 95, 50), (60, 40, 25)],
            [(40, 35, 30), (20, 20, 20)],
            [(225, 220, 210), (120, 110, 100)],
            [(130, 130, 135), (50, 50, 55)],
        ],
        textures={"solid": 0.6, "dots": 0.2, "gradient": 0.2},
    ),
}

# Fixed role colours; a little jitter is added per instance.
ROLE_COLOURS: dict[str, list[tuple[int, int, int]]] = {
    "dark": [(35, 35, 38), (25, 25, 25), (55, 50, 45)],
    "light": [(170, 205, 225), (200, 215, 225), (140, 170, 195)],
    "grey": [(120, 120, 125), (150, 150, 150), (95, 95, 100)],
    "white": [(240, 240, 240), (225, 228, 230)],
    "skin": [(235, 195, 160), (200, 150, 110), (140, 95, 60), (95, 65, 45)],
    "red": [(220, 40, 30)],
    "amber": [(235, 170, 30)],
    "green": [(40, 190, 70)],
}

# Classes that are sometimes in the air rather than on the ground (and how often).
FLYING: dict[str, float] = {"bird": 0.5, "airplane": 0.4}
# Share of instances placed far away (small, hard to see) where it differs from
# RENDER["far_share"]: pets, birds and two-wheelers are small and often in the background, so
# the image side misses them while the caption names them; people, cars, buses and street
# furniture are mostly near, the image side's strength.
FAR_SHARE: dict[str, float] = {
    "bird": 0.6,
    "cat": 0.6,
    "dog": 0.6,
    "truck": 0.45,
    "motorcycle": 0.45,
    "bicycle": 0.45,
    "person": 0.2,
    "car": 0.2,
    "bus": 0.2,
    "traffic light": 0.2,
    "bench": 0.2,
}
# How many instances: P(2), P(3), P(4); the rest is 1. People come in groups, street
# furniture alone.
INSTANCES: dict[str, tuple[float, float, float]] = {
    "person": (0.25, 0.12, 0.08),
    "car": (0.25, 0.10, 0.0),
    "bird": (0.25, 0.10, 0.05),
    "boat": (0.25, 0.08, 0.0),
    "truck": (0.15, 0.0, 0.0),
    "bus": (0.1, 0.0, 0.0),
    "bicycle": (0.2, 0.05, 0.0),
    "motorcycle": (0.2, 0.05, 0.0),
    "horse": (0.2, 0.05, 0.0),
    "dog": (0.15, 0.0, 0.0),
    "cat": (0.12, 0.0, 0.0),
    "traffic light": (0.25, 0.0, 0.0),
    "airplane": (0.15, 0.0, 0.0),
}

# Rendering knobs: these set how hard the image side is (calibrated with the probe, see the
# package docstring). Objects shrink with distance from the camera, so far ones are small and
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
