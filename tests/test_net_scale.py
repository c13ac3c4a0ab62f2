"""Training the ``net`` models at competition size: what changes with the number of rows, and
what must not change at all.

* the batch grows (and lr by its square root) only from twice ``train.batch_grow_rows`` rows, so
  the demo (1,600 training rows per fold) trains exactly as before;
* a batch gathers only the features the net reads, and gives the same logits as one holding them
  all; flipped rows come from the flipped view; a memory map and an in-memory array give the
  same tensors;
* the benchmark's synthetic data has COMP5329's ~2.7 labels per row, and one tiny fold runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from capfuse.bench.training import N_CLASSES, fit_one, load_features, synthetic_labels, write_features
from capfuse.config.schema import TrainSettings, resolve_model
from capfuse.models.cached import FEATURE_KEYS, CachedViews
from capfuse.models.settings import for_rows
from capfuse.nn.fusion import build_net

REPO = Path(__file__).resolve().parents[1]


# -- batch size by rows ------------------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [100, 1360, 1600, 4000, 7999])
def test_small_folds_keep_the_configured_batch_and_lr(n_rows):
    s = TrainSettings()
    assert for_rows(s, n_rows) is s  # the demo's folds: the same object, the same training


@pytest.mark.parametrize(("n_rows", "batch"), [(8000, 256), (15999, 256), (16000, 512), (24000, 512), (10**6, 512)])
def test_large_folds_grow_the_batch_and_lr_by_its_square_root(n_rows, batch):
    s = TrainSettings()
    out = for_rows(s, n_rows)
    assert out.batch_size == batch
    assert out.lr == pytest.approx(s.lr * (batch / s.batch_size) ** 0.5)
    assert dataclasses.replace(out, batch_size=s.batch_size, lr=s.lr) == s  # nothing else moves


def test_batch_growth_can_be_turned_off():
    s = TrainSettings(batch_grow_rows=0)
    assert for_rows(s, 24000) is s
    with pytest.raises(ValueError, match="batch_grow_rows"):
        TrainSettings.from_config({"batch_grow_rows": -1})


# -- what a batch holds ------------------------------------------------------------------------


def _views(n: int = 12, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def f16(*shape):
        return rng.standard_normal(shape).astype(np.float16)

    cap = {"cap_pooled": f16(n, 8), "cap_tokens": f16(n, 5, 8), "cap_mask": np.ones((n, 5), np.uint8)}
    cap["cap_mask"][:, 3:] = 0
    # Each view its own image arrays; captions do not flip, so both views share them.
    return {view: {"img_pooled": f16(n, 16), "img_tokens": f16(n, 4, 16), **cap} for view in ("orig", "hflip")}


NETS = {
    "img_mlp": {"inputs": ["image"]},
    "img_attn": {"inputs": ["image"], "image_head": {"kind": "attn", "hidden": 16, "queries": 2}},
    "cap_mlp": {"inputs": ["caption"]},
    "cap_attn": {"inputs": ["caption"], "caption_head": {"kind": "attn", "hidden": 16, "queries": 2}},
    "fusion": {"inputs": ["image", "caption"]},
    "early": {"inputs": ["image", "caption"], "fusion": {"logit_fusion": False, "cross_attention": False}},
    "lq": {"inputs": ["image", "caption"], "fusion": {"label_query": {"caption_tokens": True, "d_model": 16}}},
}
KEYS = {
    "img_mlp": {"img_pooled"},
    "img_attn": {"img_tokens"},
    "cap_mlp": {"cap_pooled"},
    "cap_attn": {"cap_tokens", "cap_mask"},
    "fusion": {"img_pooled", "img_tokens", "cap_pooled", "cap_tokens", "cap_mask"},
    "early": {"img_pooled", "cap_pooled"},
    "lq": {"img_pooled", "img_tokens", "cap_pooled", "cap_tokens", "cap_mask"},
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_a_batch_of_the_read_keys_gives_the_logits_of_a_full_batch(name):
    cfg = {"kind": "net", "fusion": {"d_model": 16, "heads": 2}, **NETS[name]}
    if "fusion" in NETS[name]:
        cfg["fusion"] = {"d_model": 16, "heads": 2, **NETS[name]["fusion"]}
    torch.manual_seed(0)
    dims = {"img_pooled": 16, "img_tokens": 16, "cap_pooled": 8, "cap_tokens": 8}
    class_text = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    net = build_net(resolve_model(cfg), dims, 3, class_text=class_text).eval()
    keys = net.input_keys()
    assert keys == KEYS[name]
    views = CachedViews(_views())
    rows, flip = np.array([5, 0, 7, 3]), np.array([True, False, True, False])
    full, lean = views.batch(rows, flip), views.batch(rows, flip, keys)
    assert set(lean) == keys and set(full) == set(FEATURE_KEYS) - {"img_mid"}
    with torch.inference_mode():
        assert torch.equal(net(full)["logits"], net(lean)["logits"])


def test_flipped_rows_come_from_the_flipped_view_and_captions_never_flip():
    raw = _views()
    rows, flip = np.array([4, 1, 9, 2, 2]), np.array([True, False, False, True, False])
    batch = CachedViews(raw).batch(rows, flip)
    for key in ("img_pooled", "img_tokens"):
        want = np.where(
            flip.reshape(-1, *[1] * (raw["orig"][key].ndim - 1)), raw["hflip"][key][rows], raw["orig"][key][rows]
        )
        assert torch.equal(batch[key], torch.from_numpy(want.astype(np.float32)))
    assert torch.equal(batch["cap_tokens"], torch.from_numpy(raw["orig"]["cap_tokens"][rows].astype(np.float32)))
    assert batch["cap_mask"].dtype == torch.bool
    every = CachedViews(raw).view_batch("hflip", rows)
    assert torch.equal(every["img_pooled"], torch.from_numpy(raw["hflip"]["img_pooled"][rows].astype(np.float32)))


def test_memory_maps_and_arrays_in_memory_give_the_same_batches(tmp_path):
    raw = _views()
    mapped = {}
    for view, arrays in raw.items():
        mapped[view] = {}
        for key, arr in arrays.items():
            np.save(tmp_path / f"{view}_{key}.npy", arr)
            mapped[view][key] = np.load(tmp_path / f"{view}_{key}.npy", mmap_mode="r")
    rows, flip = np.array([3, 3, 0, 11]), np.array([False, True, True, False])
    a, b = CachedViews(raw).batch(rows, flip), CachedViews(mapped).batch(rows, flip)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the benchmark -------------------------------------------------------------------------------


def test_synthetic_labels_look_like_comp5329():
    Y = synthetic_labels(20000, np.random.default_rng(0))
    assert Y.shape == (20000, N_CLASSES) and Y.sum(1).min() >= 1
    assert Y.sum(1).mean() == pytest.approx(2.7, abs=0.15)
    assert Y[:, 0].mean() > 0.6 and Y.mean(0)[-1] < 0.05  # one common class and a long tail


def test_one_tiny_fold_of_the_benchmark_runs(tmp_path):
    Y = synthetic_labels(90, np.random.default_rng(0))
    paths = write_features(tmp_path, Y, encoders=("minilm",))
    feats = load_features(paths, ["image", "caption"], "minilm", n_test=30)
    assert feats["views"]["orig"]["img_tokens"].shape == (90, 16, 1280)
    assert feats["views"]["orig"]["cap_tokens"].shape == (90, 24, 384)
    np.save(tmp_path / "labels.npy", Y[:60])
    cfg = {"kind": "net", "inputs": ["image"], "train": {"epochs": 2, "early_stop": "none"}}
    job = {"name": "img", "config": cfg, "labels": tmp_path / "labels.npy", "paths": paths}
    r = fit_one(job | {"n_train": 60, "n_fit": 48, "fold_dir": tmp_path / "run"})
    assert r["epochs_run"] == 2 and r["batch_size"] == 128 and r["fold_s"] > 0 and r["peak_rss_mb"] > 0
