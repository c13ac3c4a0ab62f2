"""Every registered loss and head, and every fusion switch, forward and backward on tiny inputs."""

import math

import numpy as np
import pytest
import torch

from capfuse.nn.fusion import build_net, count_parameters
from capfuse.nn.heads import HEADS
from capfuse.nn.losses import LOSSES, class_frequencies

B, T, L, C = 4, 16, 8, 5
DIMS = {"img_pooled": 24, "img_tokens": 20, "cap_pooled": 12, "cap_tokens": 12}


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:, 5:] = False
    return {
        "img_pooled": torch.randn(B, DIMS["img_pooled"], generator=g),
        "img_tokens": torch.randn(B, T, DIMS["img_tokens"], generator=g),
        "cap_pooled": torch.randn(B, DIMS["cap_pooled"], generator=g),
        "cap_tokens": torch.randn(B, L, DIMS["cap_tokens"], generator=g),
        "cap_mask": mask,
        "targets": (torch.rand(B, C, generator=g) < 0.4).float(),
    }


def make_loss(name: str):
    kwargs = {"class_freq": np.linspace(0.05, 0.6, C)} if name == "weighted_bce" else {}
    return LOSSES.create(name, **kwargs)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_forward_backward_and_mask(name):
    loss_fn = make_loss(name)
    logits = torch.randn(B, C, requires_grad=True)
    y = batch()["targets"]
    loss = loss_fn(logits, y)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0

    # masked entries contribute nothing: changing their targets or logits changes neither loss nor grads
    mask = torch.ones(B, C)
    mask[:, :2] = 0
    a = logits.detach().clone().requires_grad_(True)
    b = a.detach().clone()
    b[:, :2] += 5.0
    b.requires_grad_(True)
    y2 = y.clone()
    y2[:, :2] = 1 - y2[:, :2]
    la, lb = loss_fn(a, y, mask), loss_fn(b, y2, mask)
    la.backward()
    lb.backward()
    assert torch.allclose(la, lb)
    assert torch.allclose(a.grad, b.grad) and (a.grad[:, :2] == 0).all()


def test_loss_identities():
    logits, y = torch.randn(B, C), batch()["targets"]
    bce = LOSSES.create("bce")(logits, y)
    assert torch.allclose(LOSSES.create("asl", gamma_neg=0, gamma_pos=0, clip=0)(logits, y), bce, atol=1e-6)
    assert torch.allclose(LOSSES.create("focal", gamma=0)(logits, y), bce, atol=1e-6)
    # smoothing pulls confident correct predictions' loss up
    confident = torch.where(y > 0, 8.0, -8.0)
    assert LOSSES.create("bce", label_smoothing=0.1)(confident, y) > LOSSES.create("bce")(confident, y)
    # rare classes weigh more
    w = LOSSES.create("weighted_bce", class_freq=np.array([0.01, 0.5])).class_weight
    assert w[0] > 2 * w[1]
    assert np.allclose(class_frequencies(np.array([[1, 0], [1, 0]])), [0.75, 0.25])


@pytest.mark.parametrize("kind", HEADS.names())
def test_every_head(kind):
    head = HEADS.create(kind, in_dim=DIMS["cap_tokens"], num_classes=C, hidden=16)
    b = batch()
    feat, logits = head(b["cap_pooled"], b["cap_tokens"], b["cap_mask"])
    logits.sum().backward()
    assert logits.shape == (B, C) and feat.shape[0] == B and torch.isfinite(logits).all()
    assert all(p.grad is not None for p in head.parameters())


NETS = {
    "image_mlp": {"inputs": ["image"], "image_head": {"kind": "mlp"}},
    "image_attn": {"inputs": ["image"], "image_head": {"kind": "attn"}},
    "caption_mlp": {"inputs": ["caption"], "caption_head": {"kind": "mlp"}},
    "caption_attn": {"inputs": ["caption"], "caption_head": {"kind": "attn"}},
    "early": {"fusion": {"logit_fusion": False, "cross_attention": False}},
    "logit_only": {"fusion": {"logit_fusion": True, "cross_attention": False}},
    "xattn_only": {"fusion": {"logit_fusion": False, "cross_attention": True}},
    "xattn_no_residual": {"fusion": {"logit_fusion": False, "cross_attention": True, "residual": False}},
    "full": {"image_head": {"kind": "attn"}, "caption_head": {"kind": "attn"}},
}


def net_of(cfg: dict, seed: int = 0, loss: str = "bce"):
    torch.manual_seed(seed)
    full = {"inputs": ["image", "caption"], "fusion": {"d_model": 16, "heads": 2, "dropout": 0.0}, **cfg}
    full["fusion"] = {"d_model": 16, "heads": 2, "dropout": 0.0, **cfg.get("fusion", {})}
    for key in ("image_head", "caption_head"):
        full[key] = {"hidden": 16, "dropout": 0.0, **cfg.get(key, {})}
    net = build_net(full, DIMS, C)
    net.loss_fn = make_loss(loss)
    return net


@pytest.mark.parametrize("name", NETS)
def test_every_net_forward_backward(name):
    net = net_of(NETS[name])
    out = net(batch())
    assert out["logits"].shape == (B, C) and torch.isfinite(out["loss"])
    out["loss"].backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert count_parameters(net) > 0


@pytest.mark.parametrize("switch", ["logit_fusion", "cross_attention", "residual"])
def test_each_fusion_switch_changes_the_output(switch):
    on = net_of({"fusion": {switch: True}}).eval()
    off = net_of({"fusion": {switch: False}}).eval()
    with torch.no_grad():
        assert not torch.allclose(on(batch())["logits"], off(batch())["logits"])


def test_padding_tokens_are_ignored():
    net = net_of(NETS["full"]).eval()
    b = batch()
    b2 = dict(b, cap_tokens=b["cap_tokens"].clone())
    b2["cap_tokens"][:, 5:] = 100.0  # padded positions
    with torch.no_grad():
        assert torch.allclose(net(b)["logits"], net(b2)["logits"], atol=1e-5)


def test_full_net_fits_a_small_batch():
    net = net_of(NETS["full"])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    b = batch(1)
    first = float(net(b)["loss"].detach())
    for _ in range(60):
        opt.zero_grad()
        loss = net(b)["loss"]
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first


def test_tempered_bce_is_bce_of_a_tempered_sigmoid_and_differs_from_bce():
    logits, y = torch.randn(B, C), batch()["targets"]
    bce = LOSSES.create("bce")
    plain = LOSSES.create("tempered_bce", temperature=1.0, gamma=0.0)
    assert torch.allclose(plain(logits, y), bce(logits, y), atol=1e-6)
    assert torch.allclose(
        LOSSES.create("tempered_bce", temperature=0.25, gamma=0.0)(logits, y), bce(4 * logits, y), atol=1e-6
    )
    assert not torch.allclose(LOSSES.create("tempered_bce")(logits, y), bce(logits, y), atol=1e-3)


def _hard_over_easy(loss_fn) -> float:
    """Gradient on a hard positive (logit -2) over that on an easy one (logit +2)."""
    logits = torch.tensor([[-2.0, 2.0]], requires_grad=True)
    loss_fn(logits, torch.ones(1, 2)).backward()
    return float(logits.grad[0, 0].abs() / logits.grad[0, 1].abs())


def test_tempered_bce_is_hardness_aware():
    bce = _hard_over_easy(LOSSES.create("bce"))
    # MuMIC (d): a lower temperature moves the gradient towards the hard entries ...
    warm, cold = (_hard_over_easy(LOSSES.create("tempered_bce", temperature=t, gamma=0.0)) for t in (1.0, 0.5))
    assert math.isclose(warm, bce, rel_tol=1e-5) and cold > 2 * warm
    # ... and the (1 - p_t)^gamma weights move it further
    assert _hard_over_easy(LOSSES.create("tempered_bce", temperature=0.5, gamma=1.0)) > 2 * cold
    with pytest.raises(ValueError, match="temperature"):
        LOSSES.create("tempered_bce", temperature=0.0)
