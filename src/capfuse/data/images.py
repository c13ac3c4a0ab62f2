"""Safe image paths, image checks with clear verdicts, and fast loading at the model's size.

Loading is the CPU path's bottleneck, so JPEGs are decoded in draft mode: libjpeg scales the
DCT by 1/2, 1/4 or 1/8 while decoding, to the smallest scale still at least the target size,
which is several times faster than a full decode followed by a resize. The image is then
turned upright from its EXIF orientation, converted to RGB the way its mode needs (alpha over
white, CMYK through Pillow's inversion-aware path, 16-bit scaled rather than clipped), and
resized to a square without cropping, so that small objects near the border survive.

Hostile files are refused before they cost anything: an image whose header claims more than
``max_pixels`` is never decoded (Pillow's ``open`` reads only the header), and 16- and 32-bit
images are shrunk in their own mode before any float copy is made.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from capfuse.config.schema import DataSettings

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
_EXPECTED_FORMAT = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}

# ``data.max_pixels``'s default, from its one home (the schema says why 50 Mpx).
DEFAULT_MAX_PIXELS = DataSettings.max_pixels
# Path errors that mean "no such file": the image is missing, which check_image reports.
_MISSING = (errno.ENOENT, errno.ENOTDIR)


class UnsafePathError(ValueError):
    """An ImageID that would read a file outside the dataset's ``data/`` folder."""


def resolve_image_path(data_dir: str | Path, image_id: str) -> Path:
    """``<data_dir>/data/<image_id>``, refusing any id that escapes that folder.

    The id is checked as text first (absolute paths, drive letters, ``..`` parts, backslashes),
    then the resolved path is checked, which also catches a symlink that points outside. Any
    error the OS raises on the way (a symlink loop, a name or path too long) is an
    ``UnsafePathError`` too: a row error, never a traceback.
    """
    if not image_id or image_id != image_id.strip():
        raise UnsafePathError(f"ImageID {image_id!r} is empty or has surrounding spaces")
    if "\x00" in image_id:  # the OS would cut the name there, or refuse it
        raise UnsafePathError(f"ImageID {image_id!r} contains a NUL byte; the file is not opened")
    parts = image_id.replace("\\", "/").split("/")
    if (
        image_id.startswith(("/", "\\"))
        or os.path.isabs(image_id)
        or (len(image_id) > 1 and image_id[1] == ":")
        or ".." in parts
        or "\\" in image_id
    ):
        raise UnsafePathError(f"ImageID {image_id!r} points outside the data folder; the file is not opened")
    base = Path(data_dir) / "data"
    path = base / image_id
    shown = image_id if len(image_id) <= 80 else f"{image_id[:60]}...({len(image_id)} characters)"

    def refused(exc: Exception) -> UnsafePathError:
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
        return UnsafePathError(f"ImageID {shown!r} cannot be used as a path ({reason}); the file is not opened")

    try:
        inside = path.resolve().is_relative_to(base.resolve())
    except RuntimeError:  # pathlib's word for a symlink loop (before Python 3.13)
        raise UnsafePathError(f"ImageID {shown!r} is a symlink loop; the file is not opened") from None
    except (OSError, ValueError) as exc:
        raise refused(exc) from None
    if not inside:
        raise UnsafePathError(f"ImageID {shown!r} resolves outside {base} (symlink?); the file is not opened")
    try:
        # resolve() lets some errors pass quietly (a name over 255 bytes, a path over PATH_MAX,
        # a loop on newer Pythons); the stat finds them. A missing file is check_image's to report.
        os.stat(path)
    except (OSError, ValueError) as exc:
        if not (isinstance(exc, OSError) and exc.errno in _MISSING):
            raise refused(exc) from None
    return path


def sniff_format(head: bytes) -> str | None:
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _too_large(size: tuple[int, int], max_pixels: int) -> str | None:
    """Why an image of ``size`` is refused, or None when it is within ``max_pixels``."""
    w, h = size
    if w * h <= max_pixels:
        return None
    return (
        f"{w}×{h} = {w * h / 1e6:.3g} Mpx, over data.max_pixels ({max_pixels / 1e6:.3g} Mpx); not decoded "
        "(a decompression bomb, or raise data.max_pixels)"
    )


def check_image(
    path: str | Path, size: int = 256, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bool, list[tuple[str, str, str]]]:
    """Decode the image once and say whether it is usable.

    Returns ``(ok, findings)`` where each finding is ``(severity, code, message)``. Codes:
    missing_image, zero_byte_image, not_an_image, truncated_image, undecodable_image,
    image_too_large (errors); format_mismatch, mode_converted, exif_rotated (warnings: the image
    is used). An image over ``max_pixels`` is judged from its header and never decoded.
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
            too_large = _too_large(im.size, max_pixels)
            if too_large:
                return False, [("error", "image_too_large", too_large)]
            fmt = im.format
            expected = _EXPECTED_FORMAT.get(path.suffix.lower())
            if expected and fmt != expected:
                findings.append(
                    ("warning", "format_mismatch", f"{fmt} bytes behind a {path.suffix} name; decoded as {fmt}")
                )
            if im.mode != "RGB":
                findings.append(("warning", "mode_converted", f"mode {im.mode} converted to RGB"))
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            if orientation not in (1, None):
                findings.append(("warning", "exif_rotated", f"EXIF orientation {orientation}; turned upright"))
            if fmt == "JPEG":
                im.draft("RGB", (size, size))
            im.load()  # a full decode: truncation and corrupt scans only show here
    except Image.DecompressionBombError:
        # Pillow's own limit (twice MAX_IMAGE_PIXELS), hit inside open() before the size is ours to read.
        return False, [
            (
                "error",
                "image_too_large",
                f"over Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                "Mpx; not decoded (a decompression bomb)",
            )
        ]
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


def to_rgb(im: Image.Image, shrink_to: tuple[int, int] | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without the usual surprises.

    Transparent pixels become white (not black, which a plain ``convert`` gives for RGBA in
    some modes); 16- and 32-bit greyscale are scaled to 0..255 rather than clipped, which
    would turn almost every pixel white. With ``shrink_to``, those are first resized to that
    size in their own mode, so the float copy the scaling needs is the size of the output: a
    50 Mpx 16-bit image would otherwise take 200 MB more as float32.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        if shrink_to is not None and im.size != tuple(shrink_to):
            # Pillow resizes I and F, not the I;16 variants: those go through I (4 bytes a pixel, no float).
            im = (im if mode in ("I", "F") else im.convert("I")).resize(
                tuple(shrink_to), Image.BILINEAR, reducing_gap=None
            )
        arr = np.asarray(im, dtype=np.float32)  # float32 holds every 16-bit value exactly, at half float64's size
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(path: str | Path, size: int, max_pixels: int | None = None) -> Image.Image:
    """Open, draft-decode, turn upright, convert to RGB and resize to ``size × size``.

    With ``max_pixels`` an image over it raises ``ValueError`` before decoding; without, the
    caller has validated the file (``check_image``) and Pillow's own bomb limit still applies.
    """
    with Image.open(path) as im:
        too_large = _too_large(im.size, max_pixels) if max_pixels is not None else None
        if too_large:
            raise ValueError(f"{path}: {too_large}")
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        im = ImageOps.exif_transpose(im) if im.getexif().get(EXIF_ORIENTATION, 1) != 1 else im
        im = to_rgb(im, shrink_to=(size, size))
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
        else:
            im.load()
        return im


def load_array(path: str | Path, size: int, max_pixels: int | None = None) -> np.ndarray:
    """``load_image`` as a ``uint8`` array of shape ``(size, size, 3)``."""
    return np.asarray(load_image(path, size, max_pixels), dtype=np.uint8)
