"""Platt scaling of a net's logits (``train.calibrate``): it recovers a known scale and shift,
changes a trained model's logits by exactly that affine map, travels with the saved weights, and
lets the log-loss weighted blend read a model trained with the asymmetric loss."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capfuse.ensemble.blend import fit_weighted_blend
from capfuse.models.cached import CachedViews
from capfuse.models.net import NetModel
from capfuse.nn.calibration import fit_platt
from capfuse.utils.numeric import sigmoid
from test_honest_oof import C, K, dataset, net_cfg, train


@pytest.fixture(autouse=True)
def no_encoder_costs(monkeypatch):
    import capfuse.training.cv as trainer_mod

    monkeypatch.setattr(trainer_mod, "light_report", lambda cfg, params, ms=0.0: {})


def test_fit_platt_recovers_a_known_scale_and_shift():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=(20000, 3))
    y = (rng.random(z.shape) < sigmoid(0.5 * z - 1.0)).astype(np.uint8)
    scale, shift = fit_platt(z, y)
    assert scale == pytest.approx(0.5, abs=0.03) and shift == pytest.approx(-1.0, abs=0.05)
    with pytest.raises(ValueError, match="alike"):
        fit_platt(z, y[:10])


def test_calibration_is_an_affine_map_of_the_same_model_and_is_saved_with_it(tmp_path):
    feats, Y, folds = dataset()
    cfg = net_cfg(train={"loss": {"name": "asl"}})
    raw = train(tmp_path, "raw", cfg, Y, folds, feats)
    cal_cfg = net_cfg(train={"loss": {"name": "asl"}, "calibrate": True})
    cal = train(tmp_path, "cal", cal_cfg, Y, folds, feats)
    for f in range(K):
        done = json.loads((tmp_path / "cal" / f"fold{f}" / "done.json").read_text())
        scale, shift = done["logit_scale"], done["logit_shift"]
        assert scale != 1.0 or shift != 0.0
        np.testing.assert_allclose(cal[f], raw[f] * scale + shift, rtol=1e-4, atol=1e-4)
        assert "logit_scale" not in json.loads((tmp_path / "raw" / f"fold{f}" / "done.json").read_text())
    # The rebuilt fold model (what a bundle predicts with) applies the saved scale and shift.
    model = NetModel(cal_cfg, seed=3)
    net = model.load_saved(tmp_path / "cal" / "fold0", feats["dims"], C)
    rows = np.flatnonzero(folds == 0)
    again = model.predict_rows(net, CachedViews(feats["views"]), rows, C)
    np.testing.assert_allclose(again, cal[0], rtol=1e-5, atol=1e-5)


def test_calibration_needs_the_inner_stopping_rows():
    with pytest.raises(ValueError, match="early_stop: inner"):
        NetModel(net_cfg(train={"calibrate": True, "early_stop": "refit"}), seed=3)


def test_the_blend_weighs_a_calibrated_model_by_what_it_knows():
    """A sharp but miscalibrated model (every probability pushed up, as the asymmetric loss
    does) loses its blend weight to a weaker calibrated one; Platt scaling gives it back."""
    rng = np.random.default_rng(1)
    y = (rng.random((3000, 4)) < 0.2).astype(np.uint8)
    signal = np.where(y == 1, 1.0, -1.0)
    strong = 2.5 * signal + rng.normal(size=y.shape)  # a good ranking
    weak = 1.0 * signal + rng.normal(size=y.shape) - 1.0
    shifted = strong + 4.0  # the same ranking, read as "likely" everywhere
    w_shifted = fit_weighted_blend(y, [sigmoid(shifted), sigmoid(weak)])
    scale, shift = fit_platt(shifted, y)
    w_cal = fit_weighted_blend(y, [sigmoid(scale * shifted + shift), sigmoid(weak)])
    assert w_shifted[0] < 0.5 < w_cal[0]


def test_a_resumed_fold_calibrates_the_raw_logits_again():
    """Weights saved after an earlier calibration (a run killed before its fold finished) come
    back with a fitted scale and shift; the fit starts from the identity, not on top of them."""
    import torch

    from capfuse.nn.calibration import calibrate_net
    from capfuse.nn.fusion import build_net

    dims = {"img_pooled": 8, "img_tokens": 8, "cap_pooled": 6, "cap_tokens": 6}
    net = build_net(net_cfg(train={"calibrate": True}), dims, C)
    net.logit_affine.copy_(torch.tensor([3.0, -2.0]))  # as loaded from a calibrated checkpoint
    seen = []
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(200, C)), (rng.random((200, C)) < 0.3).astype(np.uint8)

    def raw():
        seen.append(net.logit_affine.tolist())
        return z

    assert calibrate_net(net, raw, y) == pytest.approx(fit_platt(z, y))
    assert seen == [[1.0, 0.0]]
    assert calibrate_net(torch.nn.Linear(2, 2), raw, y) is None  # calibrate off: nothing to fit
