"""Drawing the objects and the whole image of a sample.

``render_object`` draws one instance of a class from its ``objects.SHAPES`` variant, palette
and texture; ``render_scene`` places every instance of every label in depth over the backdrop
from ``background``, draws them far to near, adds occluders, then blur, exposure and sensor
noise, and returns the image with what the caption needs (instance counts and sizes).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from capfuse.data.demo.background import distractor, render_background
from capfuse.data.demo.objects import (
    FAR_SHARE,
    FLYING,
    INSTANCES,
    RENDER,
    ROLE_COLOURS,
    SHAPES,
    STYLES,
)
from capfuse.data.demo.scenes import choice, jitter_colour, weighted
from capfuse.data.demo.shifted import INK, Look


def _texture(rng: np.random.Generator, kind: str, w: int, h: int, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """An (h, w, 3) float fill: the class's surface look."""
    if kind == "solid":
        return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = max(3.0, float(rng.uniform(0.12, 0.3)) * max(w, h))
    if kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(theta) + yy * np.sin(theta)
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


def _draw_primitive(
    draw: ImageDraw.ImageDraw, prim: tuple, w: int, h: int, colour: tuple, rng: np.random.Generator
) -> None:
    kind = prim[0]
    j = RENDER["part_jitter"]

    def pt(x: float, y: float) -> tuple[float, float]:
        return (
            float(np.clip(x + rng.normal(0, j), 0, 1)) * (w - 1),
            float(np.clip(y + rng.normal(0, j), 0, 1)) * (h - 1),
        )

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


def render_object(rng: np.random.Generator, cls: str, w: int, h: int, look: Look | None = None) -> Image.Image:
    """One instance of ``cls`` as an RGBA image of (w, h), facing right, not yet rotated.

    ``look`` (the shifted set, ``capfuse.data.demo.shifted``) narrows the variants and palettes
    drawn from and may ink a contour; without it the draws are the demo's, byte for byte.
    """
    style = STYLES[cls]
    variant = choice(rng, SHAPES[cls] if look is None else look.shapes(SHAPES[cls]))
    palette = choice(rng, style["palettes"] if look is None else look.palettes(style["palettes"]))
    cj = RENDER["colour_jitter"]
    body = np.asarray(jitter_colour(rng, palette[0], cj), dtype=np.float32)
    body2 = jitter_colour(rng, palette[1], cj)
    roles = {r: jitter_colour(rng, choice(rng, cs), cj / 2) for r, cs in ROLE_COLOURS.items()}
    roles["body"], roles["body2"] = _SENTINEL, body2
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for prim in variant:
        colour = roles[prim[1]]
        _draw_primitive(draw, prim, w, h, (*colour, 255), rng)
    tex_kind = weighted(rng, style["textures"])
    tex2 = np.asarray(body2 if tex_kind != "solid" and rng.random() < 0.5 else body * 0.55, dtype=np.float32)
    arr = np.asarray(layer).copy()
    mask = (
        (arr[..., 0] == _SENTINEL[0])
        & (arr[..., 1] == _SENTINEL[1])
        & (arr[..., 2] == _SENTINEL[2])
        & (arr[..., 3] > 0)
    )
    if mask.any():
        fill = _texture(rng, tex_kind, w, h, body, tex2)
        arr[..., :3][mask] = fill[mask].astype(np.uint8)
    if look is not None and look.outline:
        # A dark ring just outside the silhouette: an inked drawing style train never shows.
        alpha = Image.fromarray(arr[..., 3])
        grown = np.asarray(alpha.filter(ImageFilter.MaxFilter(3 if min(w, h) < 48 else 5)))
        arr[(grown > 0) & (arr[..., 3] == 0)] = (*INK, 255)
    return Image.fromarray(arr, "RGBA")


def _instances(rng: np.random.Generator, cls: str) -> int:
    p2, p3, p4 = INSTANCES.get(cls, (0.08, 0.0, 0.0))
    u = rng.random()
    return 4 if u < p4 else 3 if u < p4 + p3 else 2 if u < p4 + p3 + p2 else 1


def render_scene(
    rng: np.random.Generator, scene: str, labels: list[str], size: int, look: Look | None = None
) -> tuple[Image.Image, dict[str, tuple[int, float]]]:
    """The image, and per class (instance count, area fraction of its largest instance);
    ``look``: how the objects are drawn (``render_object``)."""
    S = size
    img, draw, hz = render_background(rng, scene, S)

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
                np.exp(rng.normal(0, RENDER["scale_sigma"]))
            )
            h = max(3, int(style["height"] * scale * S))
            w = max(3, int(h * style["aspect"] * float(np.exp(rng.normal(0, 0.1)))))
            if w > 1.6 * S:  # a long train: crop to something that still fits mostly in frame
                w, h = int(1.6 * S), max(3, int(1.6 * S / style["aspect"]))
            if flying:
                cy = rng.uniform(0.05, 0.9) * max(hz, S * 0.3)
                angle = rng.uniform(-40, 40)
                key = -1.0 + depth * 0.1
            else:
                bottom = (
                    hz + (0.05 + 0.95 * depth) * (S - hz) if scene != "home" else hz + (0.1 + 0.9 * depth) * (S - hz)
                )
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
        obj = render_object(rng, cls, w, h, look)
        if flip:
            obj = obj.transpose(Image.FLIP_LEFT_RIGHT)
        if abs(angle) > 1:
            obj = obj.rotate(angle, resample=Image.BILINEAR, expand=True)
        img.paste(obj, (int(cx - obj.width / 2), int(cy - obj.height / 2)), obj)
    for _ in range(int(rng.integers(RENDER["occluders"][0], RENDER["occluders"][1] + 1))):
        distractor(draw, rng, S, hz, S)

    # Photographic degradations: blur, sensor noise, exposure.
    radius = rng.uniform(*RENDER["blur"]) * S / 256
    if radius > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(img, dtype=np.float32)
    gain, bias = rng.uniform(0.8, 1.15), rng.uniform(-15, 15)
    noise = rng.standard_normal((S, S, 3), dtype=np.float32) * np.float32(rng.uniform(*RENDER["noise_sigma"]))
    arr = arr * np.float32(gain) + np.float32(bias) + noise
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB"), info
