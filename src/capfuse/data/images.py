"""Safe image paths, image checks with clear verdicts, and fast loading at the model's size.

Loading is the CPU path's bottleneck, so JPEGs are decoded in draft mode: libjpeg scales the
DCT by 1/2, 1/4 or 1/8 while decoding, to the smallest scale still at least the target size,
which is several times faster than a full decode followed by a resize. The image is then
turned upright from its EXIF orientation, converted to RGB the way its mode needs (alpha over
white, CMYK through Pillow's inversion-aware path, 16-bit scaled rather than clipped), and
resized to a square without cropping, so that small objects near the border survive.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# The EXIF tag that says how the camera was held; values other than 1 need a transpose.
EXIF_ORIENTATION = 0x0112
_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_EXPECTED_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP",
                    ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}


class UnsafePathError(ValueError):
    """An ImageID that would read a file outside the dataset's ``data/`` folder."""


def resolve_image_path(data_dir: str | Path, image_id: str) -> Path:
    """``<data_dir>/data/<image_id>``, refusing any id that escapes that folder.

    The id is checked as text first (absolute paths, drive letters, ``..`` parts, backslashes),
    then the resolved path is checked, which also catches a symlink that points outside.
    """
    if not image_id or image_id != image_id.strip():
        raise UnsafePathError(f"ImageID {image_id!r} is empty or has surrounding spaces")
    parts = image_id.replace("\\", "/").split("/")
    if (image_id.startswith(("/", "\\")) or os.path.isabs(image_id) or (len(image_id) > 1 and image_id[1] == ":")
            or ".." in parts or "\\" in image_id or "\x00" in image_id):
        raise UnsafePathError(f"ImageID {image_id!r} points outside the data folder; the file is not opened")
    base = Path(data_dir) / "data"
    path = base / image_id
    try:
        inside = path.resolve().is_relative_to(base.resolve())
    except OSError:
        inside = False
    if not inside:
        raise UnsafePathError(f"ImageID {image_id!r} resolves outside {base} (symlink?); the file is not opened")
    return path


def sniff_format(head: bytes) -> str | None:
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_image(path: str | Path, size: int = 256) -> tuple[bool, list[tuple[str, str, str]]]:
    """Decode the image once and say whether it is usable.

    Returns ``(ok, findings)`` where each finding is ``(severity, code, message)``. Codes:
    missing_image, zero_byte_image, not_an_image, truncated_image, undecodable_image (errors);
    format_mismatch, mode_converted, exif_rotated (warnings: the image is used).
    """
    path = Path(path)
    if not path.is_file():
        return False, [("error", "missing_image", f"image file not found: {path}")]
    n_bytes = path.stat().st_size
    if n_bytes == 0:
        return False, [("error", "zero_byte_image", f"image file is empty (0 bytes): {path}")]
    with open(path, "rb") as fh:
        head = fh.read(16)
    sniffed = sniff_format(head)
    findings: list[tuple[str, str, str]] = []
    try:
        with Image.open(path) as im:
            fmt = im.format
            expected = _EXPECTED_FORMAT.get(path.suffix.lower())
            if expected and fmt != expected:
                findings.append(("warning", "format_mismatch",
                                 f"{fmt} bytes behind a {path.suffix} name; decoded as {fmt}"))
            if im.mode != "RGB":
                findings.append(("warning", "mode_converted", f"mode {im.mode} converted to RGB"))
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            if orientation not in (1, None):
                findings.append(("warning", "exif_rotated", f"EXIF orientation {orientation}; turned upright"))
            if fmt == "JPEG":
                im.draft("RGB", (size, size))
            im.load()  # a full decode: truncation and corrupt scans only show here
    except Image.DecompressionBombError as exc:
        return False, [("error", "undecodable_image", f"refused: {exc}")]
    except OSError as exc:
        text = str(exc)
        if sniffed is None and ("cannot identify" in text or "UnidentifiedImageError" in type(exc).__name__):
            return False, [("error", "not_an_image", f"not an image (first bytes {head[:8]!r}): {path}")]
        if "truncated" in text.lower():
            return False, [("error", "truncated_image", f"image data is truncated ({n_bytes} bytes): {path}")]
        return False, [("error", "undecodable_image", f"cannot decode image: {text}")]
    except (ValueError, SyntaxError, Image.DecompressionBombWarning, EOFError) as exc:
        return False, [("error", "undecodable_image", f"cannot decode image: {exc}")]
    return True, findings


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without the usual surprises.

    Transparent pixels become white (not black, which a plain ``convert`` gives for RGBA in
    some modes); 16- and 32-bit greyscale are scaled to 0..255 rather than clipped, which
    would turn almost every pixel white.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(path: str | Path, size: int) -> Image.Image:
    """Open, draft-decode, turn upright, convert to RGB and resize to ``size × size``."""
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        im = ImageOps.exif_transpose(im) if im.getexif().get(EXIF_ORIENTATION, 1) != 1 else im
        im = to_rgb(im)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
        else:
            im.load()
        return im


def load_array(path: str | Path, size: int) -> np.ndarray:
    """``load_image`` as a ``uint8`` array of shape ``(size, size, 3)``."""
    return np.asarray(load_image(path, size), dtype=np.uint8)
