"""Caption encoders load offline, pool sensibly, and their cache is reused and invalidated."""

import numpy as np
import pytest

from capfuse.encoders.text import TextEncoderSpec, create_text_encoder, encode
from capfuse.encoders.weights import WeightsNotFound


@pytest.fixture(scope="module")
def minilm():
    return create_text_encoder("minilm")


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_minilm_loads_offline_and_means_something(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer, source = create_text_encoder("minilm")
    assert source.startswith("package:")
    _, _, pooled = encode(model, tokenizer, ["a dog runs in the park", "a puppy playing on the grass",
                                             "a red bus on the street"], 32)
    assert cos(pooled[0], pooled[1]) > cos(pooled[0], pooled[2]) + 0.2


def test_padding_does_not_change_pooled_vectors(minilm):
    model, tokenizer, _ = minilm
    _, mask, alone = encode(model, tokenizer, ["a cat"], 32)
    _, _, together = encode(model, tokenizer, ["a cat", "a very long caption " * 5], 32)
    assert mask[0].sum() < 32
    np.testing.assert_allclose(alone[0], together[0], atol=1e-4)


def test_unknown_encoder_offline_names_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match="offline, use one of: minilm"):
        create_text_encoder("some-org/some-bert")


def test_caption_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    import capfuse.text_features as tf

    captions = ["a man on a horse", "two buses, one \"red\"", ""]
    spec = TextEncoderSpec(max_len=16)
    first = tf.embed_captions(captions, spec, tmp_path, quiet=True)
    assert first["tokens"].shape == (3, 16, 384) and first["pooled"].shape == (3, 384)
    assert first["mask"][2].sum() == 2  # an empty caption is [CLS] [SEP], still a row

    calls = []
    real = tf.encode
    monkeypatch.setattr(tf, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = tf.embed_captions(captions, spec, tmp_path, quiet=True)
    assert calls == [] and again["checksum"] == first["checksum"]
    changed = tf.embed_captions(captions[:2] + ["a cat"], spec, tmp_path, quiet=True)
    assert calls and changed["checksum"] != first["checksum"]
    np.testing.assert_allclose(np.asarray(changed["pooled"][0]), np.asarray(first["pooled"][0]), atol=1e-3)
