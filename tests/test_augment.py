"""Augmentation of cached batches (``train.crop_p``, ``train.mix``): deterministic per seed and
epoch order, an exact resume, untouched batches when off, multi-label targets when mixing."""

import numpy as np
import pytest
import torch

from capfuse import config as cfglib
from capfuse.config.check import validate
from capfuse.models import net as net_mod
from capfuse.models.augment import MIX_KEY, Augment, crop_maps, mix_inputs, mix_styles, mix_targets
from capfuse.models.net import NetModel
from test_net import C, _mid_map_features, config, folds_of, synthetic


def _maps(n: int = 6, side: int = 7) -> torch.Tensor:
    """Maps whose value at a cell is its column: a crop's zoom shows as a narrower range."""
    cols = torch.arange(side, dtype=torch.float32).expand(side, side)
    return cols.expand(n, 3, side, side).clone()


def test_crops_are_drawn_from_the_seed_and_the_batch_order():
    batch = {"img_mid": _maps()}
    rows = np.array([5, 2, 9, 0, 7, 3])
    aug = Augment(seed=1, crop_p=1.0, crop_scale=0.5)
    a = aug({k: v.clone() for k, v in batch.items()}, rows)["img_mid"]
    b = aug({k: v.clone() for k, v in batch.items()}, rows)["img_mid"]
    assert torch.equal(a, b)  # the same epoch order draws the same crops (a resumed epoch too)
    other = aug({k: v.clone() for k, v in batch.items()}, rows[::-1].copy())["img_mid"]
    assert not torch.equal(a, other)  # another epoch's order, other crops
    assert not torch.equal(a, Augment(seed=2, crop_p=1.0, crop_scale=0.5)(dict(batch), rows)["img_mid"])
    assert a.shape == batch["img_mid"].shape
    # Each crop is a zoom inside the map: the columns it spans are a narrower range, no padding.
    spans = a[:, 0].amax((1, 2)) - a[:, 0].amin((1, 2))
    assert (spans < 6).all() and (a >= 0).all() and (a <= 6).all()


def test_a_crop_of_the_whole_map_is_the_map():
    maps = _maps()
    out = crop_maps(maps, np.random.default_rng(0), 1.0, 1.0)
    torch.testing.assert_close(out, maps, atol=1e-5, rtol=0)


def test_mixstyle_swaps_channel_statistics_and_keeps_the_content():
    """Each map takes a mix of its own and a partner's channel mean and spread; its normalised
    cells (where things are) stay its own; the targets are not touched."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(8, 5, 7, 7, generator=g) * torch.rand(8, 5, 1, 1, generator=g) * 3 + torch.randn(
        8, 5, 1, 1, generator=g
    )
    rng = np.random.default_rng(3)
    out = mix_styles(maps, rng, p=1.0, alpha=0.1)
    rng = np.random.default_rng(3)
    rng.random()
    partner = torch.from_numpy(rng.permutation(8))
    lam = torch.from_numpy(rng.beta(0.1, 0.1, 8)).float().view(-1, 1)
    mu, sig = maps.mean((2, 3)), maps.std((2, 3), unbiased=True)
    torch.testing.assert_close(out.mean((2, 3)), lam * mu + (1 - lam) * mu[partner], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.std((2, 3)), lam * sig + (1 - lam) * sig[partner], atol=1e-3, rtol=1e-3)

    def normalised(x):
        return (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)

    torch.testing.assert_close(normalised(out), normalised(maps), atol=1e-3, rtol=1e-3)
    assert not torch.allclose(out, maps)  # the styles did move
    # Off for this batch (its draw above p): the maps come back as they were.
    assert mix_styles(maps, np.random.default_rng(3), p=0.0, alpha=0.1) is maps
    batch = {"img_mid": maps.clone(), "cap_pooled": torch.ones(8, 4)}
    got = Augment(seed=1, style_p=1.0)(batch, np.arange(8))
    assert MIX_KEY not in got and torch.equal(got["cap_pooled"], torch.ones(8, 4))


def test_off_by_default_the_batch_is_untouched_and_no_generator_moves():
    settings = cfglib.resolve_model(config()).train
    aug = Augment.from_settings(settings, seed=0)
    assert not aug.active
    batch = {"img_mid": _maps()}
    state = torch.get_rng_state()
    assert aug(batch, np.arange(6)) is batch
    assert torch.equal(torch.get_rng_state(), state)


def test_a_model_trained_with_the_defaults_is_unchanged(tmp_path, monkeypatch):
    """The defaults train the same weights to the last bit as a loop that knows no augmentation."""
    feats, Y = synthetic(n=120, n_test=16)
    tr, va = folds_of(len(Y))
    torch.manual_seed(0)  # the nets' initial weights
    with_defaults = NetModel(config(epochs=2), seed=4).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "a")

    class Without:
        @classmethod
        def from_settings(cls, settings, seed):
            return lambda batch, rows: batch

    monkeypatch.setattr(net_mod, "Augment", Without)
    torch.manual_seed(0)
    without = NetModel(config(epochs=2), seed=4).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "b")
    assert np.array_equal(with_defaults.val_logits, without.val_logits)
    assert np.array_equal(with_defaults.test_logits, without.test_logits)


def test_mixed_targets_stay_multi_label():
    """Class by class: held by both stays 1, by neither stays 0, by one only is its share."""
    targets = {
        "targets": torch.tensor([[1.0, 0, 1, 0], [1, 1, 0, 0]]),
        "target_mask": torch.tensor([[1.0, 1, 1, 1], [1, 0, 1, 1]]),
        "sample_weight": torch.tensor([1.0, 0.5]),
    }
    partner, share = torch.tensor([1, 0]), torch.tensor([0.7, 1.0])
    out = mix_targets(targets, (partner, share))
    torch.testing.assert_close(out["targets"], torch.tensor([[1.0, 0.3, 0.7, 0], [1, 1, 0, 0]]))
    torch.testing.assert_close(out["target_mask"], torch.tensor([[1.0, 0, 1, 1], [1, 0, 1, 1]]))
    torch.testing.assert_close(out["sample_weight"], torch.tensor([0.85, 0.5]))
    assert mix_targets(targets, None) is targets


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_shows_the_inputs_the_targets_say(kind):
    rng = np.random.default_rng(0)
    batch = {
        "img_mid": torch.randn(8, 3, 7, 7),
        "cap_pooled": torch.randn(8, 5),
        "cap_mask": torch.from_numpy(rng.random((8, 6)) < 0.5),
    }
    out = mix_inputs(dict(batch), np.random.default_rng(3), kind, 1.0, 0.4)
    partner, share = out[MIX_KEY]
    moved = partner != torch.arange(8)
    assert (share[moved] < 1).any() and (share >= 0.5).all()  # a sample stays mostly itself
    kept = share.view(-1, 1)
    # The caption's vector mixes by the share the targets get.
    torch.testing.assert_close(
        out["cap_pooled"], kept * batch["cap_pooled"] + (1 - kept) * batch["cap_pooled"][partner]
    )
    assert torch.equal(out["cap_mask"], batch["cap_mask"] | batch["cap_mask"][partner])
    mid, own, other = out["img_mid"], batch["img_mid"], batch["img_mid"][partner]
    if kind == "mixup":
        torch.testing.assert_close(mid, kept.view(-1, 1, 1, 1) * own + (1 - kept.view(-1, 1, 1, 1)) * other)
    else:  # every cell is the sample's or its partner's; the partner's cover 1 - share of the map
        from_partner = (mid == other).all(1) & ~(mid == own).all(1)
        assert ((mid == own).all(1) | from_partner).all()
        torch.testing.assert_close(1 - from_partner.float().mean((1, 2))[moved], share[moved])


def _top_stage_config(**train) -> dict:
    return {
        "kind": "net",
        "inputs": ["image"],
        "image_head": {"kind": "mlp", "hidden": 16},
        "image_encoder": {"name": "tf_efficientnet_lite0", "weights": "package", "train_blocks": 1, "grid": 2},
        "finetune_options": {"amp": False},
        "train": {"epochs": 3, "batch_size": 24, "lr": 3e-3, "patience": 10, **train},
    }


def test_an_augmented_top_stage_resumes_exactly(tmp_path, monkeypatch):
    """Crops and mixup on: an epoch resumed from its checkpoint draws what it drew uninterrupted."""
    import capfuse.models.loop as loop_mod

    feats, Y = _mid_map_features(n=72, n_test=8)
    tr, va = np.arange(54), np.arange(54, 72)
    cfg = _top_stage_config(crop_p=0.5, mix="mixup", mix_p=1.0)
    torch.manual_seed(0)
    full = NetModel(cfg, seed=3).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "a")
    torch.manual_seed(0)
    plain = NetModel(_top_stage_config(), seed=3).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "p")
    assert not np.allclose(full.val_logits, plain.val_logits)  # the augmentation trained

    real, calls = loop_mod.val_score, {"n": 0}

    def crash_on_second(y, logits, metric="f1"):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(y, logits, metric)

    monkeypatch.setattr(loop_mod, "val_score", crash_on_second)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        NetModel(cfg, seed=3).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "b")
    monkeypatch.setattr(loop_mod, "val_score", real)
    resumed = NetModel(cfg, seed=3).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "b")
    np.testing.assert_allclose(resumed.val_logits, full.val_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(resumed.test_logits, full.test_logits, rtol=1e-5, atol=1e-5)
    assert full.val_logits.shape == (18, C)


@pytest.mark.parametrize(
    "train, says",
    [
        ({"mix": "mixupp"}, "train.mix = 'mixupp': must be 'none', 'mixup' or 'cutmix'"),
        ({"crop_scale": 0.0}, "train.crop_scale = 0.0: must be a number in (0, 1]"),
        ({"crop_p": 1.5}, "train.crop_p = 1.5: must be a number in [0, 1]"),
        ({"mix_alpha": 0.0}, "train.mix_alpha = 0.0: must be a number > 0"),
        ({"style_p": -0.1}, "train.style_p = -0.1: must be a number in [0, 1]"),
        ({"style_alpha": 0}, "train.style_alpha = 0: must be a number > 0"),
        ({"style_p": 0.5}, "train.style_p = 0.5: works on the cached map of a trained top stage"),
        ({"crop_p": 0.5}, "train.crop_p = 0.5: works on the cached map of a trained top stage"),
        ({"mix": "cutmix"}, "train.mix = 'cutmix': works on the cached map of a trained top stage"),
    ],
)
def test_bad_values_are_refused_in_one_line(train, says):
    cfg = config(**train)  # no trained top stage
    with pytest.raises(ValueError) as err:
        validate(cfg, {}, source="m.yaml")
        NetModel(cfg, seed=0)
    message = str(err.value)
    assert says in message and "\n" not in message.strip()
