"""Everything behind the objects: the sky (or wall) and ground gradients, the lighting
blotches, the scene's elements and the distractor shapes of no class.

``render_background`` draws a scene's empty backdrop, whose element names come from
``scenes.SCENES``; ``distractor`` is also used by ``drawing`` for the occluders drawn in front
of the objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from capfuse.data.demo.objects import RENDER
from capfuse.data.demo.scenes import SCENES, choice, jitter_colour, random_colour


def render_background(rng: np.random.Generator, scene: str, S: int) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """The backdrop of ``scene`` at side ``S``: the image, a drawing context on it, and the
    horizon's row."""
    spec = SCENES[scene]
    hz = int(rng.uniform(*spec["horizon"]) * S)
    # Sky (or wall) gradient above the horizon, ground gradient below.
    t = np.linspace(0.0, 1.0, S, dtype=np.float32)
    sky_t = np.clip(t * S / max(1, hz), 0, 1)
    gnd_t = np.clip((t * S - hz) / max(1, S - hz), 0, 1)
    sky_top = jitter_colour(rng, choice(rng, spec["sky"]), 15)
    sky_hz = jitter_colour(rng, choice(rng, spec["sky"]), 15)
    g_hz = jitter_colour(rng, choice(rng, spec["ground"]), 15)
    g_bot = jitter_colour(rng, choice(rng, spec["ground"]), 15)
    col = np.where((t * S < hz)[:, None], _lerp(sky_top, sky_hz, sky_t), _lerp(g_hz, g_bot, gnd_t))
    bg = np.repeat(col[:, None, :], S, axis=1) + _blotches(rng, S, rng.uniform(8, 25))
    img = Image.fromarray(bg.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    _draw_elements(draw, rng, scene, S, hz)
    for _ in range(int(rng.integers(RENDER["distractors"][0], RENDER["distractors"][1] + 1))):
        distractor(draw, rng, S, 0, S)
    return img, draw, hz


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


def _draw_elements(draw: ImageDraw.ImageDraw, rng: np.random.Generator, scene: str, S: int, hz: int) -> None:
    """Scene furniture that belongs to no class: the clutter a real photo has."""
    u = S / 256.0
    for el in SCENES[scene]["elements"]:
        if el == "clouds":
            for _ in range(int(rng.integers(0, 4))):
                cx, cy, r = rng.uniform(0, S), rng.uniform(0, hz * 0.7), rng.uniform(8, 30) * u
                draw.ellipse([cx - 2 * r, cy - r, cx + 2 * r, cy + r], fill=jitter_colour(rng, (240, 242, 245), 8))
        elif el == "buildings":
            x = rng.uniform(-20, 0) * u
            while x < S:
                bw, bh = rng.uniform(25, 70) * u, rng.uniform(0.3, 0.95) * hz
                wall = choice(rng, [(150, 140, 130), (170, 160, 150), (120, 110, 105), (185, 170, 140)])
                col = jitter_colour(rng, wall, 15)
                draw.rectangle([x, hz - bh, x + bw, hz], fill=col)
                win = jitter_colour(rng, (70, 80, 95), 15)
                step = max(4.0, 10 * u)
                if rng.random() < 0.7:
                    for yy in np.arange(hz - bh + step / 2, hz - step, step):
                        for xx in np.arange(x + step / 3, x + bw - step / 2, step):
                            draw.rectangle([xx, yy, xx + step / 2, yy + step / 2], fill=win)
                x += bw + rng.uniform(0, 10) * u
        elif el == "road":
            col = jitter_colour(rng, (85, 85, 90), 10)
            left, right = rng.uniform(0.2, 0.45) * S, rng.uniform(0.55, 0.8) * S
            draw.polygon([(left, hz), (right, hz), (S * 1.3, S), (-S * 0.3, S)], fill=col)
        elif el == "lanes":
            col = choice(rng, [(235, 235, 235), (230, 200, 60)])
            cx = rng.uniform(0.4, 0.6) * S
            for k in range(8):
                t0, t1 = k / 8, (k + 0.5) / 8
                y0, y1 = hz + (S - hz) * t0**1.5, hz + (S - hz) * t1**1.5
                draw.line([(cx, y0), (cx + (t1 - t0) * 5, y1)], fill=col, width=max(1, int((1 + 5 * t1) * u)))
        elif el in ("poles", "signs"):
            for _ in range(int(rng.integers(0, 3))):
                x = rng.uniform(0, S)
                top = hz - rng.uniform(0.05, 0.5) * hz
                bottom = hz + rng.uniform(0.05, 0.4) * (S - hz)
                draw.line([(x, top), (x, bottom)], fill=jitter_colour(rng, (90, 90, 95), 15), width=max(1, int(3 * u)))
                if el == "signs":
                    sw = rng.uniform(8, 22) * u
                    col = choice(rng, [(30, 90, 170), (30, 130, 70), (235, 235, 235), (230, 190, 40)])
                    draw.rectangle([x - sw, top, x + sw, top + sw * rng.uniform(0.5, 1.2)], fill=col)
        elif el == "hills":
            col = jitter_colour(rng, (110, 140, 120), 20)
            for _ in range(int(rng.integers(1, 4))):
                cx, r = rng.uniform(0, S), rng.uniform(40, 120) * u
                draw.ellipse([cx - 2 * r, hz - r * 0.5, cx + 2 * r, hz + r * 0.5], fill=col)
        elif el == "waves":
            col = jitter_colour(rng, (170, 200, 230), 15)
            for _ in range(int(rng.integers(6, 20))):
                x, y = rng.uniform(0, S), rng.uniform(hz, S)
                ln = rng.uniform(5, 20) * u * (0.5 + (y - hz) / max(1, S - hz))
                draw.line([(x, y), (x + ln, y)], fill=col, width=max(1, int(2 * u)))
        elif el == "pier":
            if rng.random() < 0.6:
                y = rng.uniform(hz, S)
                x0 = rng.uniform(-S, S / 2)
                draw.rectangle([x0, y, S, y + rng.uniform(6, 20) * u], fill=jitter_colour(rng, (120, 90, 60), 15))
        elif el == "terminal":
            x0 = rng.uniform(-0.2, 0.5) * S
            draw.rectangle(
                [x0, hz - rng.uniform(0.15, 0.45) * hz, x0 + rng.uniform(0.3, 0.8) * S, hz],
                fill=jitter_colour(rng, (190, 195, 200), 12),
            )
            draw.rectangle(
                [x0, hz - 0.1 * hz, x0 + 0.8 * S, hz - 0.05 * hz], fill=jitter_colour(rng, (80, 120, 160), 15)
            )
        elif el == "runway":
            y = hz + rng.uniform(0.2, 0.6) * (S - hz)
            draw.rectangle([0, y, S, y + rng.uniform(0.1, 0.3) * (S - hz)], fill=jitter_colour(rng, (75, 75, 78), 8))
            for k in range(6):
                draw.rectangle([k * S / 6, y + 3 * u, k * S / 6 + 18 * u, y + 5 * u], fill=(230, 230, 230))
            draw.line([(0, y - 3 * u), (S, y - 3 * u)], fill=(220, 190, 50), width=max(1, int(2 * u)))
        elif el == "field":
            col = jitter_colour(rng, choice(rng, [(150, 170, 70), (120, 150, 60), (190, 170, 90)]), 15)
            for k in range(int(rng.integers(4, 12))):
                y = hz + (S - hz) * ((k + rng.uniform(0, 1)) / 12) ** 1.3
                draw.line([(0, y), (S, y + rng.uniform(-10, 10) * u)], fill=col, width=max(1, int(2 * u)))
        elif el == "fence":
            if rng.random() < 0.6:
                y = hz + rng.uniform(0.05, 0.5) * (S - hz)
                col = jitter_colour(rng, (130, 100, 70), 15)
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
                    trunk = jitter_colour(rng, (100, 70, 40), 15)
                    draw.rectangle([x - r * 0.15, base - r * 1.5, x + r * 0.15, base], fill=trunk)
                top, bottom = (2.4, 0.6) if el == "trees" else (1.2, 0.0)
                draw.ellipse(
                    [x - r, base - r * top, x + r, base - r * bottom], fill=jitter_colour(rng, (50, 110, 50), 20)
                )
        elif el == "path":
            col = jitter_colour(rng, (200, 180, 140), 15)
            a, b = rng.uniform(0.3, 0.6) * S, rng.uniform(0, 1) * S
            draw.polygon([(a - 8 * u, hz), (a + 8 * u, hz), (b + 40 * u, S), (b - 40 * u, S)], fill=col)
        elif el == "wallpaper":
            kind = choice(rng, ["none", "none", "stripes", "dots"])
            col = jitter_colour(rng, (190, 175, 150), 25)
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
                draw.rectangle(
                    [x, y, x + ww, y + ww * 0.9],
                    fill=jitter_colour(rng, (190, 215, 235), 15),
                    outline=(240, 240, 240),
                    width=max(1, int(3 * u)),
                )
                draw.line([(x + ww / 2, y), (x + ww / 2, y + ww * 0.9)], fill=(240, 240, 240), width=max(1, int(2 * u)))
        elif el == "furniture":
            for _ in range(int(rng.integers(1, 3))):
                x, fw = rng.uniform(-0.2, 0.8) * S, rng.uniform(0.2, 0.5) * S
                fh = rng.uniform(0.1, 0.25) * S
                col = jitter_colour(rng, choice(rng, [(120, 60, 50), (70, 90, 130), (150, 140, 120), (90, 70, 50)]), 20)
                top = hz - fh * rng.uniform(0.2, 0.8)
                draw.rounded_rectangle([x, top, x + fw, top + fh], radius=int(fh * 0.2), fill=col)
        elif el == "planks":
            col = jitter_colour(rng, (100, 70, 45), 15)
            for k in range(int(rng.integers(4, 10))):
                y = hz + (S - hz) * (k / 10) ** 1.2
                draw.line([(0, y), (S, y)], fill=col, width=max(1, int(u)))
        elif el == "rug":
            if rng.random() < 0.4:
                cx, cy, rw = rng.uniform(0.2, 0.8) * S, hz + rng.uniform(0.3, 0.7) * (S - hz), rng.uniform(0.2, 0.4) * S
                draw.ellipse([cx - rw, cy - rw * 0.3, cx + rw, cy + rw * 0.3], fill=random_colour(rng))
        elif el == "platform":
            y = hz + rng.uniform(0.0, 0.3) * (S - hz)
            x = rng.uniform(0.4, 0.8) * S
            draw.polygon([(x, y), (S, y), (S, S), (x + 0.3 * S, S)], fill=jitter_colour(rng, (160, 160, 155), 10))
        elif el == "tracks":
            cx = rng.uniform(0.2, 0.6) * S
            for k in range(10):
                t = (k / 10) ** 1.4
                y, half = hz + (S - hz) * t, (4 + 60 * t) * u
                draw.line(
                    [(cx - half * 1.3, y), (cx + half * 1.3, y)], fill=(90, 70, 50), width=max(1, int((1 + 3 * t) * u))
                )
            for side in (-1, 1):
                draw.line(
                    [(cx + side * 4 * u, hz), (cx + side * 64 * u, S)], fill=(150, 150, 155), width=max(1, int(2 * u))
                )
        else:
            raise ValueError(f"unknown scene element {el!r}")


def distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, S: int, lo: float, hi: float) -> None:
    """A shape of no class (some look like wheels, windows or signs, on purpose)."""
    cx, cy = rng.uniform(0, S), rng.uniform(lo, hi)
    r = rng.uniform(0.02, 0.12) * S
    col = random_colour(rng)
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
