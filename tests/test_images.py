"""Image checks, safe paths, and mode conversion with known pixel values."""

import io

import numpy as np
import pytest
from PIL import Image

from capfuse.data.images import UnsafePathError, check_image, load_array, resolve_image_path, to_rgb


@pytest.fixture()
def data_dir(tmp_path):
    (tmp_path / "ds" / "data").mkdir(parents=True)
    return tmp_path / "ds"


def save(img, path, fmt, **kw):
    img.save(path, fmt, **kw)
    return path


@pytest.mark.parametrize(
    "image_id", ["../x.jpg", "/etc/passwd", "a/../../x.jpg", "..\\x.jpg", "C:/x.jpg", "", " a.jpg"]
)
def test_unsafe_ids_are_refused(data_dir, image_id):
    with pytest.raises(UnsafePathError):
        resolve_image_path(data_dir, image_id)


def test_symlink_out_of_the_folder_is_refused(data_dir, tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (data_dir / "data" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(UnsafePathError, match="resolves outside"):
        resolve_image_path(data_dir, "link.jpg")
    assert resolve_image_path(data_dir, "sub/ok.jpg") == data_dir / "data" / "sub" / "ok.jpg"


def test_verdicts(data_dir):
    d = data_dir / "data"
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    jpg = buf.getvalue()
    (d / "zero.jpg").write_bytes(b"")
    (d / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "text.jpg").write_bytes(b"not an image at all")
    save(img, d / "png.jpg", "PNG")
    save(img, d / "good.jpg", "JPEG")
    assert check_image(d / "good.jpg") == (True, [])
    assert check_image(d / "missing.jpg")[1][0][1] == "missing_image"
    assert check_image(d / "zero.jpg")[1][0][1] == "zero_byte_image"
    assert check_image(d / "trunc.jpg")[1][0][1] == "truncated_image"
    assert check_image(d / "text.jpg")[1][0][1] == "not_an_image"
    ok, findings = check_image(d / "png.jpg")
    assert ok and [f[1] for f in findings] == ["format_mismatch"]


def test_mode_conversions_give_the_right_pixels():
    assert to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)  # transparent → white
    assert to_rgb(Image.new("LA", (2, 2), (0, 255))).getpixel((0, 0)) == (0, 0, 0)
    i16 = Image.fromarray(np.full((2, 2), 32768, np.uint16))
    assert to_rgb(i16).getpixel((0, 0)) == (128, 128, 128)  # scaled, not clipped to 255
    assert to_rgb(Image.new("L", (2, 2), 77)).getpixel((0, 0)) == (77, 77, 77)
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    p = Image.new("P", (2, 2), 0)
    p.putpalette([0, 0, 255] + [0] * 765)
    assert to_rgb(p).getpixel((0, 0)) == (0, 0, 255)
    p.info["transparency"] = 0
    assert to_rgb(p).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    # A tall image stored sideways (wide) with orientation 6 must come back tall: red on top.
    upright = Image.new("RGB", (40, 80), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(
        upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "r.jpg", "JPEG", exif=exif.tobytes(), quality=95
    )
    ok, findings = check_image(path)
    assert ok and [f[1] for f in findings] == ["exif_rotated"]
    arr = load_array(path, 32).astype(int)
    assert arr.shape == (32, 32, 3)
    assert arr[4, 16, 0] > 200 and arr[4, 16, 2] < 60  # top is red
    assert arr[28, 16, 2] > 200 and arr[28, 16, 0] < 60  # bottom is blue


def test_draft_decoding_matches_a_full_decode(tmp_path):
    yy, xx = np.mgrid[0:480, 0:640]
    arr = np.stack([xx * 255 // 640, yy * 255 // 480, (xx + yy) * 255 // 1120], -1).astype(np.uint8)
    path = save(Image.fromarray(arr), tmp_path / "big.jpg", "JPEG", quality=95)
    fast = load_array(path, 224).astype(int)
    full = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)).astype(int)
    assert np.abs(fast - full).mean() < 2.0
