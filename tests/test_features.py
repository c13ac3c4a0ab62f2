"""The image feature cache: reused when nothing changed, rebuilt when an image changes."""

import numpy as np
import pytest
from PIL import Image

from capfuse.features.image import VIEWS, ImageEncoderSpec, embed_image_features, embed_image_views, embed_images


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    ids = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "data" / f"{i}.jpg")
        ids.append(f"{i}.jpg")
    return tmp_path, ids


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_cache_reuse_and_invalidation(folder, backend, monkeypatch):
    data, ids = folder
    ok = np.array([True] * 5 + [False])  # the last image is "unreadable": zero row, never opened
    spec = ImageEncoderSpec(name="tf_efficientnet_lite0", size=64, weights="package", batch_size=4, backend=backend)
    feats, checksum = embed_images(data, ids, ok, spec, data / "cache", quiet=True)
    assert feats.shape == (6, 1280) and feats.dtype == np.float16
    assert np.abs(feats[:5]).sum(1).min() > 0 and not feats[5].any()

    calls = []
    import capfuse.features.image as features

    real = features.load_array
    monkeypatch.setattr(features, "load_array", lambda *a, **k: calls.append(a) or real(*a, **k))
    again, checksum2 = embed_images(data, ids, ok, spec, data / "cache", quiet=True)
    assert calls == [] and checksum2 == checksum  # cache hit: no image decoded
    np.testing.assert_array_equal(np.asarray(again), np.asarray(feats))

    Image.new("RGB", (64, 48), (255, 0, 0)).save(data / "data" / "2.jpg")  # an input changes
    changed, checksum3 = embed_images(data, ids, ok, spec, data / "cache", quiet=True)
    assert len(calls) == 5 and checksum3 != checksum
    assert not np.array_equal(np.asarray(changed[2]), np.asarray(feats[2]))
    np.testing.assert_array_equal(np.asarray(changed[0]), np.asarray(feats[0]))


def test_flip_view_is_cached_separately(folder):
    data, ids = folder
    spec = ImageEncoderSpec(name="tf_efficientnet_lite0", size=64, weights="package", backend="torch")
    ok = np.ones(len(ids), bool)
    orig, _ = embed_images(data, ids, ok, spec, data / "cache", quiet=True)
    flip, _ = embed_images(data, ids, ok, spec, data / "cache", view="hflip", quiet=True)
    assert sorted(p.name for p in (data / "cache").glob("*.npy")) == [
        "img-tf_efficientnet_lite0-64px-hflip-pooled.npy",
        "img-tf_efficientnet_lite0-64px-orig-pooled.npy",
    ]
    assert not np.array_equal(np.asarray(orig), np.asarray(flip))


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_tokens_and_pooled_agree_and_extend_the_cache(folder, backend):
    from capfuse.features.image import embed_image_features

    data, ids = folder
    spec = ImageEncoderSpec(name="tf_efficientnet_lite0", size=64, weights="package", backend=backend, grid=2)
    ok = np.ones(len(ids), bool)
    ok[1] = False
    cache = data / f"cache-{backend}"
    pooled_only = embed_image_features(data, ids, ok, spec, cache, outputs=("pooled",), quiet=True)
    both = embed_image_features(data, ids, ok, spec, cache, outputs=("pooled", "tokens"), quiet=True)
    assert both["tokens"].shape == (len(ids), 4, 1280)
    assert np.allclose(np.asarray(both["pooled"]), np.asarray(pooled_only["pooled"]), atol=1e-3)
    # a 2x2 map pooled to 2x2 tokens: their mean is the pooled vector
    tokens = np.asarray(both["tokens"], dtype=np.float32)
    assert np.allclose(tokens.mean(1), np.asarray(both["pooled"], dtype=np.float32), atol=2e-2)
    assert not tokens[1].any()  # an unreadable image is zeros, never dropped
    again = embed_image_features(data, ids, ok, spec, cache, outputs=("tokens",), quiet=True)
    assert again["checksum"] == both["checksum"]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_mid_map_feeds_the_top_stages_back_to_the_same_features(folder, backend):
    """The cached input of the top stages, run through those stages, gives the cached pooled vector."""
    import torch

    from capfuse.encoders.image import BackboneTop, create_backbone
    from capfuse.features.image import embed_image_features

    data, ids = folder
    spec = ImageEncoderSpec(name="tf_efficientnet_lite0", size=64, weights="package", backend=backend, grid=2)
    ok = np.ones(len(ids), bool)
    ok[3] = False
    cache = data / f"cache-mid-{backend}"
    pooled = embed_image_features(data, ids, ok, spec, cache, outputs=("pooled",), quiet=True)
    mid = embed_image_features(data, ids, ok, spec, cache, outputs=("mid1",), quiet=True)
    assert mid["mid1"].shape == (len(ids), 192, 2, 2) and mid["mid1"].dtype == np.float16  # 64 px / 32
    assert not np.asarray(mid["mid1"][3]).any()
    assert mid["checksum"] == pooled["checksum"]
    # Asking for mid1 kept the pooled vectors in the same pass: both are listed and reused.
    again = embed_image_features(data, ids, ok, spec, cache, outputs=("pooled", "mid1"), quiet=True)
    np.testing.assert_array_equal(np.asarray(again["pooled"]), np.asarray(pooled["pooled"]))

    model, _ = create_backbone("tf_efficientnet_lite0", weights="package", num_classes=0)
    top = BackboneTop(model, 1).eval()
    with torch.inference_mode():
        fmap = top(torch.from_numpy(np.asarray(mid["mid1"], np.float32)))
    np.testing.assert_allclose(
        fmap.mean((2, 3)).numpy()[ok], np.asarray(pooled["pooled"], np.float32)[ok], atol=0.05, rtol=0.02
    )


def test_top_stages_need_a_staged_backbone():
    import timm

    from capfuse.encoders.image import BackboneTop, create_backbone

    model, _ = create_backbone("tf_efficientnet_lite0", weights="none")
    with pytest.raises(ValueError, match="train_blocks must be in"):
        BackboneTop(model, 7)
    with pytest.raises(ValueError, match="not a timm EfficientNet-family model"):
        BackboneTop(timm.create_model("resnet10t", pretrained=False), 1)


def test_both_backends_match_the_plain_timm_model(folder):
    """The exported graph scales and normalises uint8 pixels itself; it must agree with timm."""
    import torch

    from capfuse.data.images import load_array
    from capfuse.encoders.image import create_backbone, preprocess_for, to_tensor

    data, ids = folder
    ok = np.ones(len(ids), bool)
    model, _ = create_backbone("tf_efficientnet_lite0", weights="package", num_classes=0)
    pre = preprocess_for(model.eval(), 64)
    x = to_tensor(np.stack([load_array(data / "data" / i, 64) for i in ids]), pre)
    with torch.inference_mode():
        expected = model(x).numpy()
    for backend in ("torch", "onnx"):
        spec = ImageEncoderSpec(name="tf_efficientnet_lite0", size=64, weights="package", backend=backend)
        got, _ = embed_images(data, ids, ok, spec, data / f"cache-{backend}", quiet=True)
        np.testing.assert_allclose(np.asarray(got, np.float32), expected, atol=0.02, rtol=0.01)


def test_one_pass_decodes_each_image_once_and_matches_the_per_view_path(folder, monkeypatch):
    """Two backbones x two views in one pass: each readable image decoded once, and every array
    byte for byte what one (backbone, view) at a time writes, under the same cache key."""
    import capfuse.features.image as features

    data, ids = folder
    ok = np.array([True] * 5 + [False])
    lite = ImageEncoderSpec(name="tf_efficientnet_lite0", size=64, weights="package", batch_size=4)
    mnv2 = ImageEncoderSpec(name="mobilenetv2_100", size=64, weights="package", batch_size=4)
    requests = [(spec, view, ("pooled", "tokens")) for spec in (lite, mnv2) for view in VIEWS]
    calls = []
    real = features.load_array
    monkeypatch.setattr(features, "load_array", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    apart = {
        (spec, view): embed_image_features(data, ids, ok, spec, data / "apart", view=view, outputs=outs, quiet=True)
        for spec, view, outs in requests
    }
    assert len(calls) == 4 * 5
    calls.clear()
    (data / "once").mkdir()
    (data / "once" / "onnx").symlink_to(data / "apart" / "onnx")  # the same exports, not made twice
    together = embed_image_views(data, ids, ok, requests, data / "once", quiet=True)
    assert len(calls) == 5  # once per readable image, for both backbones and both views
    for key, alone in apart.items():
        assert together[key]["checksum"] == alone["checksum"]
        for part in ("pooled", "tokens"):
            np.testing.assert_array_equal(np.asarray(together[key][part]), np.asarray(alone[part]))
    assert sorted(p.name for p in (data / "once").glob("*.*")) == sorted(p.name for p in (data / "apart").glob("*.*"))
    calls.clear()
    again = embed_image_views(data, ids, ok, requests, data / "once", quiet=True)
    assert calls == [] and {k: v["checksum"] for k, v in again.items()} == {k: v["checksum"] for k, v in apart.items()}


def test_unlabelled_rows_join_without_reading_the_cached_arrays(tmp_path):
    """RowConcat serves rows of two memory-mapped arrays end to end, as np.concatenate would."""
    from capfuse.features.store import RowConcat

    first = np.lib.format.open_memmap(tmp_path / "a.npy", "w+", np.float16, (5, 3, 2))
    first[:] = np.arange(30).reshape(5, 3, 2)
    second = np.arange(100, 112, dtype=np.float16).reshape(2, 3, 2)
    joined = RowConcat(np.load(tmp_path / "a.npy", mmap_mode="r"), second)
    expected = np.concatenate([np.asarray(first), second])
    assert joined.shape == expected.shape and len(joined) == 7 and joined.dtype == np.float16
    rows = np.array([6, 0, 4, 5, 5])
    np.testing.assert_array_equal(joined[rows], expected[rows])
    np.testing.assert_array_equal(joined[3:6], expected[3:6])
    np.testing.assert_array_equal(np.asarray(joined), expected)
    with pytest.raises(ValueError, match="cannot join"):
        RowConcat(second, np.zeros((2, 4, 2), np.float16))
