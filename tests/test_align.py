"""Test-time alignment of cached image features (``image_encoder.align: test``): the test rows
take the training rows' channel statistics, nothing else moves, and a bundle aligns the rows it
predicts exactly as the run aligned its test set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capfuse.config import load_config
from capfuse.config.errors import ConfigError
from capfuse.features import align
from capfuse.features.align import align_new_rows, align_test_rows, channel_axis, channel_moments


def _shifted(shape: tuple[int, ...], n_train: int, seed: int = 0) -> np.ndarray:
    """Training rows, then test rows whose channels have another mean and spread (float16, as
    the feature cache holds them)."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(size=shape).astype(np.float16)
    axis = channel_axis(len(shape))
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    scale = rng.uniform(0.5, 3.0, shape[axis]).reshape(bshape)
    shift = rng.uniform(-2.0, 2.0, shape[axis]).reshape(bshape)
    arr[n_train:] = (arr[n_train:].astype(np.float32) * scale + shift).astype(np.float16)
    return arr


@pytest.mark.parametrize("shape", [(300, 8), (300, 5, 8), (300, 8, 3, 3)], ids=["pooled", "tokens", "map"])
def test_the_test_rows_take_the_training_rows_statistics_and_the_training_rows_stay_as_they_are(shape):
    n_train = 150
    arr = _shifted(shape, n_train)
    test_rows = np.arange(n_train, 300)
    aligned, record = align_test_rows(arr, n_train, test_rows)
    out = aligned[np.arange(300)]
    assert out.dtype == np.float32 and out.shape == arr.shape and record["test_rows"] == 150
    mu_tr, sd_tr = channel_moments(arr, np.arange(n_train))
    mu_raw, _ = channel_moments(arr, test_rows)
    mu_te, sd_te = channel_moments(out, test_rows)
    assert np.abs(mu_raw - mu_tr).max() > 0.5  # the test rows were off before
    np.testing.assert_allclose(mu_te, mu_tr, atol=1e-3)
    np.testing.assert_allclose(sd_te, sd_tr, rtol=1e-3)
    np.testing.assert_array_equal(out[:n_train], arr[:n_train].astype(np.float32))
    # A batch in any order, a slice and one row read as the whole array does.
    rows = np.array([250, 3, 299, 0, 200])
    np.testing.assert_array_equal(aligned[rows], out[rows])
    np.testing.assert_array_equal(aligned[140:160], out[140:160])
    np.testing.assert_array_equal(aligned[250], out[250])
    np.testing.assert_array_equal(np.asarray(aligned), out)


def test_rows_left_out_are_read_as_they_are_and_do_not_move_the_statistics():
    n_train = 150
    arr = _shifted((330, 6), n_train, seed=1)
    arr[300:] = 0  # test rows without a usable image: zeros in the cache
    test_rows = np.arange(n_train, 300)
    aligned, _ = align_test_rows(arr, n_train, test_rows)
    out = aligned[np.arange(330)]
    np.testing.assert_array_equal(out[300:], 0)
    want = channel_moments(arr, np.arange(n_train))[0]
    np.testing.assert_allclose(channel_moments(out, test_rows)[0], want, atol=1e-3)


def test_sets_drawn_alike_are_left_nearly_as_they_are():
    arr = np.random.default_rng(2).normal(size=(4000, 4)).astype(np.float32)
    aligned, _ = align_test_rows(arr, 3000, np.arange(3000, 4000))
    np.testing.assert_allclose(aligned.scale.ravel(), 1.0, atol=0.1)
    np.testing.assert_allclose(aligned.shift.ravel(), 0.0, atol=0.1)


def test_a_constant_channel_is_shifted_never_divided_by_zero():
    arr = np.zeros((240, 3), np.float32)
    arr[:120, 0], arr[120:, 0] = 1.0, 2.0  # constant on each side
    arr[:, 1:] = np.random.default_rng(3).normal(size=(240, 2))
    aligned, _ = align_test_rows(arr, 120, np.arange(120, 240))
    out = aligned[np.arange(240)]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[120:, 0], 1.0)


def test_too_few_test_rows_are_not_measured_and_stay_as_they_are():
    arr = _shifted((150, 4), 100)
    rows = np.arange(100, 150)  # fewer than MIN_ROWS
    same, record = align_test_rows(arr, 100, rows)
    assert same is arr and record["test"] is None and record["test_rows"] == 50
    # A bundle asked for as few rows then has nothing to align them by either.
    new = arr[100:]
    assert align_new_rows(new, np.ones(50, bool), record) is new


def test_the_statistics_do_not_depend_on_how_the_rows_are_chunked(monkeypatch):
    arr = _shifted((400, 6, 2, 2), 250, seed=4)
    whole = channel_moments(arr, np.arange(400))
    monkeypatch.setattr(align, "CHUNK_VALUES", 50)  # two rows a chunk
    chunked = channel_moments(arr, np.arange(400))
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_a_bundle_aligns_the_runs_test_rows_exactly_as_the_run_did_wherever_they_sit():
    """The run aligns its test rows inside the train+test array; a bundle predicting the same rows
    holds them alone, with its training statistics read back from JSON. Bit for bit the same
    features, so the bundle's probabilities equal the submission's."""
    n_train, n_test = 200, 160
    arr = _shifted((n_train + n_test, 5, 3), n_train, seed=5)
    usable = np.ones(n_test, bool)
    usable[[7, 90]] = False  # two test images that could not be read
    aligned, record = align_test_rows(arr, n_train, n_train + np.flatnonzero(usable))
    record = json.loads(json.dumps(record))  # as the bundle keeps it
    want = aligned[np.arange(n_train, n_train + n_test)]

    new = np.array(arr[n_train:])  # the test rows alone, as a bundle embeds them
    got = align_new_rows(new, usable, record)[np.arange(n_test)]
    np.testing.assert_array_equal(got, want)

    # A handful of rows cannot be measured: they take the run's test statistics, so each row
    # reads as it did in the run.
    few = [3, 50, 91]
    got = align_new_rows(new[few], np.ones(3, bool), record)[np.arange(3)]
    np.testing.assert_array_equal(got, want[few])


def test_align_is_refused_where_no_cached_feature_is_read(tmp_path):
    bad = tmp_path / "finetune.yaml"
    bad.write_text("kind: net\nfinetune: true\nimage_encoder: {align: test}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"finetune.yaml: finetune = True: image_encoder.align = 'test'"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("kind: net\nimage_encoder: {align: tset}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"typo.yaml: image_encoder.align = 'tset': must be 'none' or 'test'"):
        load_config(typo)


@pytest.mark.parametrize("kind", ["linear", "net"])
def test_the_store_aligns_the_test_rows_of_a_model_that_asks_and_nothing_else(tiny_run, monkeypatch, kind):
    from capfuse.data.dataset import load_dataset
    from capfuse.features.store import FeatureStore
    from capfuse.paths import Paths

    monkeypatch.setattr(align, "MIN_ROWS", 10)  # the tiny set's 40 test rows
    ds = load_dataset(Paths(tiny_run.data, tiny_run.root), load_config(tiny_run.config), quiet=True)
    plain = {"kind": kind, "inputs": ["image", "caption"] if kind == "net" else ["image"]}
    asked = {**plain, "image_encoder": {"align": "test"}}
    store = FeatureStore(ds, True, {"plain": plain, "asked": asked})
    a, b = store.for_model(plain), store.for_model(asked)
    n = len(ds.train_ids)
    ok = n + np.flatnonzero(ds.val.test["image_ok"].to_numpy(bool))
    if kind == "linear":
        arrays = {
            "img_pooled": (
                np.concatenate([a["image_train"], a["image_test"]]),
                np.concatenate([b["image_train"], b["image_test"]]),
            )
        }
    else:
        arrays = {
            k: (np.asarray(a["views"]["orig"][k]), np.asarray(b["views"]["orig"][k]))
            for k in ("img_pooled", "img_tokens")
        }
        np.testing.assert_array_equal(
            np.asarray(b["views"]["orig"]["cap_pooled"]), np.asarray(a["views"]["orig"]["cap_pooled"])
        )
    assert "alignment" in b and "alignment" not in a
    for key, (before, after) in arrays.items():
        assert set(b["alignment"]["orig"][key]) == {"train", "test", "test_rows"}
        np.testing.assert_array_equal(after[:n], before[:n].astype(np.float32))  # training rows as cached
        np.testing.assert_allclose(channel_moments(after, ok)[0], channel_moments(before, np.arange(n))[0], atol=1e-3)
