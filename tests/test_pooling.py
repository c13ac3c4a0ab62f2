"""image_encoder.pooling: multilevel reads a richer vector from the same backbone pass."""

import numpy as np
import pytest
import torch

from capfuse.config import ConfigError, resolve_model
from capfuse.config.schema import ImageEncoderSpec
from capfuse.data.demo import make_demo
from capfuse.data.images import load_array
from capfuse.encoders.image import preprocess_for
from capfuse.encoders.registry import build_image
from capfuse.features.image import ML_LEVELS, FeatureMap, embed_image_views
from capfuse.features.store import image_outputs, pooled_output


def test_multilevel_vector_is_mean_max_and_the_top_stages_inputs(tmp_path, monkeypatch):
    data = tmp_path / "mini"
    make_demo(data, n_train=6, n_test=2, size=64, seed=5)
    ids = sorted(p.name for p in (data / "data").iterdir())
    ok = np.ones(len(ids), bool)
    ok[1] = False  # an unreadable image keeps a zero row in every output
    spec = ImageEncoderSpec(name="tf_efficientnet_lite0", size=64, backend="torch", grid=2)
    got = embed_image_views(
        data, ids, ok, [(spec, "orig", ("pooled", "pooled_ml", "tokens"))], tmp_path / "cache", quiet=True
    )[(spec, "orig")]
    model, _ = build_image(spec.name, weights=spec.weights)
    model = model.eval()
    pre = preprocess_for(model, spec.size)
    x = torch.from_numpy(np.stack([load_array(data / "data" / i, spec.size) for i in ids]))
    with torch.inference_mode():
        *mids, final = FeatureMap(model, pre, ML_LEVELS)(x)
    want = torch.cat([final.mean((2, 3)), final.amax((2, 3))] + [m.mean((2, 3)) for m in mids], 1).numpy()
    ml = np.asarray(got["pooled_ml"], dtype=np.float32)
    assert ml.shape == (len(ids), 2 * model.num_features + sum(m.shape[1] for m in mids))
    np.testing.assert_allclose(ml[ok], want[ok], rtol=2e-3, atol=2e-3)  # float16 cache
    assert not ml[~ok].any()
    # Its first block is the plain pooled vector, from the same pass.
    np.testing.assert_array_equal(ml[:, : model.num_features], np.asarray(got["pooled"]))
    # Asked again: served from the cache, not recomputed (a pass over the images would fail here:
    # equal arrays alone cannot tell a cache hit from a deterministic recompute).
    import capfuse.features.image as image_features

    def no_pass(*args, **kwargs):
        raise AssertionError("the images were embedded again instead of read from the cache")

    monkeypatch.setattr(image_features, "_run_jobs", no_pass)
    again = embed_image_views(data, ids, ok, [(spec, "orig", ("pooled_ml",))], tmp_path / "cache", quiet=True)
    np.testing.assert_array_equal(np.asarray(again[(spec, "orig")]["pooled_ml"]), np.asarray(got["pooled_ml"]))


def test_models_read_the_vector_their_pooling_names():
    base = {"kind": "net", "inputs": ["image"]}
    assert pooled_output(base) == "pooled"
    ml = {**base, "image_encoder": {"pooling": "multilevel"}}
    assert pooled_output(ml) == "pooled_ml"
    assert image_outputs(ml) == ("pooled_ml", "tokens")
    assert image_outputs({"kind": "linear", "inputs": ["image"], "image_encoder": {"pooling": "multilevel"}}) == (
        "pooled_ml",
    )
    with pytest.raises(ConfigError, match="image_encoder.pooling = 'gem'"):
        resolve_model({"kind": "net", "image_encoder": {"pooling": "gem"}})
