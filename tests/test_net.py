"""The ``net`` trainer: learning, early stopping, checkpoints, exact resume, fine-tuning path."""

import numpy as np
import pytest
import torch
import yaml

from capfuse.models.net import NetModel, cosine_with_warmup

C = 5


def synthetic(n: int = 240, n_test: int = 40, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Features that carry the labels (image tokens for some classes, caption for others)."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, C)) < 0.3).astype(np.uint8)
    Y[Y.sum(1) == 0, 0] = 1
    Yall = np.concatenate([Y, (rng.random((n_test, C)) < 0.3).astype(np.uint8)])
    W_img, W_cap = rng.normal(size=(C, 16)), rng.normal(size=(C, 12))
    W_img[3:] = 0  # classes 3, 4 are only in the caption
    W_cap[:2] = 0  # classes 0, 1 only in the image
    img_tokens = (Yall @ W_img)[:, None, :] + rng.normal(scale=0.8, size=(len(Yall), 4, 16))
    cap_tokens = (Yall @ W_cap)[:, None, :] + rng.normal(scale=0.8, size=(len(Yall), 6, 12))
    mask = np.ones((len(Yall), 6), bool)
    mask[:, 4:] = False
    orig = {
        "img_tokens": img_tokens.astype(np.float16),
        "img_pooled": img_tokens.mean(1).astype(np.float16),
        "cap_tokens": cap_tokens.astype(np.float16),
        "cap_pooled": cap_tokens[:, :4].mean(1).astype(np.float16),
        "cap_mask": mask.astype(np.uint8),
    }
    flip = dict(orig, img_tokens=orig["img_tokens"][:, ::-1].copy())
    feats = {
        "views": {"orig": orig, "hflip": flip},
        "n_test": n_test,
        "dims": {"img_pooled": 16, "img_tokens": 16, "cap_pooled": 12, "cap_tokens": 12},
    }
    return feats, Y


def config(**train) -> dict:
    return {
        "kind": "net",
        "inputs": ["image", "caption"],
        "image_head": {"kind": "mlp", "hidden": 32, "dropout": 0.1},
        "caption_head": {"kind": "attn", "hidden": 32, "dropout": 0.1},
        "fusion": {
            "logit_fusion": True,
            "cross_attention": True,
            "residual": True,
            "d_model": 16,
            "heads": 2,
            "dropout": 0.1,
        },
        "train": {"epochs": 6, "batch_size": 32, "lr": 3e-3, "patience": 10, **train},
    }


def folds_of(n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    return idx[idx % 4 != 0], idx[idx % 4 == 0]


def test_cosine_schedule():
    assert cosine_with_warmup(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert cosine_with_warmup(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_with_warmup(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert 0.1 < cosine_with_warmup(55, 100, 10, 0.1) < 1.0


def test_a_step_budget_shortens_the_schedule_of_large_folds_only(tmp_path):
    """``train.max_steps``: the demo's fold (11 steps an epoch) keeps a long span, a 24,000-row
    fold (40 steps) trains 240 / 40 = 6 epochs; a fold trained under it runs that many epochs."""
    from capfuse.config.schema import TrainSettings
    from capfuse.models.settings import schedule_epochs

    capped = TrainSettings(epochs=30, max_steps=240)
    assert schedule_epochs(capped, 11) == 22 and schedule_epochs(capped, 40) == 6
    assert schedule_epochs(capped, 1000) == 1 and schedule_epochs(capped, 1) == 30
    assert schedule_epochs(TrainSettings(epochs=30), 40) == 30  # 0: off
    with pytest.raises(ValueError, match="max_steps"):
        TrainSettings.from_config({"max_steps": -1})

    feats, Y = synthetic()
    tr, va = folds_of(len(Y))  # 180 rows, 153 after the inner split: 5 steps of 32 an epoch
    out = NetModel(config(max_steps=7, patience=30), seed=1).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "f")
    assert out.info["epochs_run"] == 2  # ceil(7 / 5), not train.epochs' 6


def test_learns_and_writes_best_checkpoint(tmp_path):
    from capfuse.metrics import mean_sample_f1

    feats, Y = synthetic()
    tr, va = folds_of(len(Y))
    torch.manual_seed(0)
    out = NetModel(config(), seed=1).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "fold0")
    assert out.val_logits.shape == (len(va), C) and out.test_logits.shape == (40, C)
    assert (tmp_path / "fold0" / "best.safetensors").exists()
    assert not (tmp_path / "fold0" / "last.pt").exists()  # removed once the fold is finished
    pred = (out.val_logits > 0).astype(np.uint8)
    pred[pred.sum(1) == 0, out.val_logits[pred.sum(1) == 0].argmax(1)] = 1
    assert mean_sample_f1(Y[va], pred) > 0.75
    assert 0 <= out.info["best_epoch"] < out.info["epochs_run"] <= 6


@pytest.mark.parametrize("ema", [0.0, 1.0])
def test_interrupted_fold_resumes_exactly(tmp_path, monkeypatch, ema):
    import capfuse.models.loop as net_mod

    feats, Y = synthetic()
    tr, va = folds_of(len(Y))
    cfg = config(ema_halflife=ema)  # with the weight average on, it resumes from last.pt too

    torch.manual_seed(0)
    full = NetModel(cfg, seed=3).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "a")

    real = net_mod.val_score
    calls = {"n": 0}

    def crash_on_third(y, logits, metric="f1"):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the machine stopped during epoch 2's evaluation
        return real(y, logits, metric)

    monkeypatch.setattr(net_mod, "val_score", crash_on_third)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        NetModel(cfg, seed=3).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "b")
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    monkeypatch.setattr(net_mod, "val_score", real)
    resumed = NetModel(cfg, seed=3).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "b")
    np.testing.assert_allclose(resumed.val_logits, full.val_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(resumed.test_logits, full.test_logits, rtol=1e-5, atol=1e-5)


def test_the_weight_average_is_judged_and_kept_without_changing_training(tmp_path, monkeypatch):
    """``train.ema_halflife``: the stopping rows judge the moving average and the fold keeps it,
    while the optimiser goes on from the live weights exactly as without it."""
    from safetensors.torch import load_file

    import capfuse.models.loop as net_mod

    feats, Y = synthetic()
    tr, va = folds_of(len(Y))
    states, judged = {}, {}
    for ema in (0.0, 1.0):
        calls = {"n": 0}

        def stop_at_third(y, logits, metric="f1", ema=ema, calls=calls):  # each epoch improves; the third never ends
            calls["n"] += 1
            judged.setdefault(ema, []).append(np.array(logits))
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return float(calls["n"])

        monkeypatch.setattr(net_mod, "val_score", stop_at_third)
        torch.manual_seed(0)
        with pytest.raises(KeyboardInterrupt):
            NetModel(config(ema_halflife=ema), seed=3).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / str(ema))
        states[ema] = torch.load(tmp_path / str(ema) / "last.pt", weights_only=True)
    # The live weights after two epochs are the same with and without the average...
    for key, value in states[0.0]["model"].items():
        torch.testing.assert_close(states[1.0]["model"][key], value, rtol=0, atol=0)
    # ...the average is not the live weights, and it is what was judged and saved as best.
    average = {k.removeprefix("module."): v for k, v in states[1.0]["ema"].items() if k.startswith("module.")}
    assert any(not torch.equal(average[k], v) for k, v in states[1.0]["model"].items())
    assert not np.allclose(judged[1.0][1], judged[0.0][1])
    assert states[1.0]["best_epoch"] == 1
    best = load_file(str(tmp_path / "1.0" / "best.safetensors"))
    assert best.keys() == average.keys()
    for key, value in best.items():
        torch.testing.assert_close(value, average[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="ema_halflife"):
        NetModel(config(ema_halflife=-1.0), seed=0)


def test_deterministic_for_a_seed(tmp_path):
    feats, Y = synthetic()
    tr, va = folds_of(len(Y))
    runs = []
    for name in ("x", "y"):
        torch.manual_seed(0)
        runs.append(NetModel(config(epochs=2), seed=5).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / name).val_logits)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_early_stopping_stops(tmp_path, monkeypatch):
    import capfuse.models.loop as net_mod

    feats, Y = synthetic()
    tr, va = folds_of(len(Y))
    monkeypatch.setattr(net_mod, "val_score", lambda y, logits, metric="f1": 0.5)  # never improves after epoch 0
    out = NetModel(config(epochs=30, patience=2), seed=0).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "f")
    assert out.info["best_epoch"] == 0 and out.info["epochs_run"] == 3


@pytest.mark.parametrize("loss", ["bce", "weighted_bce", "focal", "asl"])
def test_every_loss_trains(tmp_path, loss):
    feats, Y = synthetic(n=120)
    tr, va = folds_of(len(Y))
    out = NetModel(config(epochs=1, loss={"name": loss}), seed=0).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / loss)
    assert np.isfinite(out.val_logits).all()


def _tiny_finetune(tmp_path):
    """A 24-row demo and a fine-tuned image and caption model on a tiny random backbone."""
    from capfuse.data.demo import make_demo
    from capfuse.data.validate import validate_dataset

    data = tmp_path / "tiny"
    make_demo(data, n_train=24, n_test=8, size=64, seed=0)
    v = validate_dataset(data)
    Y = v.classes.to_matrix(list(v.train["labels"]))
    cfg = {
        "kind": "net",
        "inputs": ["image", "caption"],
        "finetune": True,
        "device": "cpu",
        "image_encoder": {"name": "mobilenetv2_050", "weights": "none", "size": 64, "grid": 2},
        "caption_encoder": {"name": "minilm", "max_len": 16, "trainable": True},
        "image_head": {"kind": "mlp", "hidden": 16},
        "caption_head": {"kind": "mlp", "hidden": 16},
        "fusion": {"logit_fusion": True, "cross_attention": True, "d_model": 16, "heads": 2},
        "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 8},
        "finetune_options": {"encoder_lr_mult": 0.1, "layer_decay": 0.5, "loader_threads": 2},
    }
    feats = {
        "data_dir": data,
        "ids": list(v.train["ImageID"]) + list(v.test["ImageID"]),
        "image_ok": np.ones(32, bool),
        "captions": list(v.train["Caption"]) + list(v.test["Caption"]),
        "n_test": 8,
    }
    return cfg, feats, Y


def test_finetune_path_on_cpu_with_a_tiny_backbone(tmp_path):
    """The GPU code path (encoders in the model, layer-wise LR, flip TTA on decoded images) on a CPU."""
    from capfuse.models.finetune import FinetuneNet, layerwise_groups

    cfg, feats, Y = _tiny_finetune(tmp_path)
    model = NetModel(cfg, seed=0)
    tr, va = np.arange(16), np.arange(16, 24)
    torch.manual_seed(0)  # fit_fold_finetune seeds with the model's seed before building
    before = {
        k: p.detach().clone()
        for k, p in FinetuneNet(
            cfg, Y.shape[1], lambda d: model.build(d, Y.shape[1], np.full(Y.shape[1], 0.2))
        ).named_parameters()
    }
    out = model.fit_fold(feats, Y, tr, va, fold_dir=tmp_path / "fold0")
    assert out.val_logits.shape == (8, Y.shape[1]) and out.test_logits.shape == (8, Y.shape[1])
    from safetensors.torch import load_file

    after = load_file(str(tmp_path / "fold0" / "best.safetensors"))
    assert any(k.startswith("backbone.") for k in after) and any(k.startswith("text.") for k in after)
    moved = [
        k for k in after if k.startswith("backbone.blocks") and k in before and not torch.equal(after[k], before[k])
    ]
    assert moved, "the backbone must train end to end"

    net = FinetuneNet(cfg, Y.shape[1], lambda d: model.build(d, Y.shape[1], np.full(Y.shape[1], 0.2)))
    groups = layerwise_groups(net, 0.1, 0.5)
    mults = sorted(g["lr_mult"] for g in groups)
    assert mults[-1] == 1.0 and mults[0] < 0.1 * 0.5**3  # head at 1x, the stem far below
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in net.parameters() if p.requires_grad)


def test_batches_made_ahead_train_the_same_weights(tmp_path):
    """``finetune_options.prefetch``: batches decoded in a background thread are the batches the
    training thread would have made, so the weights and logits match to the last bit."""
    from safetensors.torch import load_file

    cfg, feats, Y = _tiny_finetune(tmp_path)
    cfg["train"] = {**cfg["train"], "epochs": 2}
    tr, va = np.arange(16), np.arange(16, 24)
    outs, weights = [], []
    for ahead in (0, 2):
        cfg["finetune_options"] = {**cfg["finetune_options"], "prefetch": ahead}
        fold_dir = tmp_path / f"ahead{ahead}"
        outs.append(NetModel(cfg, seed=0).fit_fold(feats, Y, tr, va, fold_dir=fold_dir))
        weights.append(load_file(str(fold_dir / "best.safetensors")))
    np.testing.assert_array_equal(outs[0].val_logits, outs[1].val_logits)
    np.testing.assert_array_equal(outs[0].test_logits, outs[1].test_logits)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_prefetched_keeps_order_and_stops_early():
    from capfuse.utils.prefetch import prefetched

    calls = []

    def make(a, b):
        calls.append(a)
        return a * b

    args = [(i, 10) for i in range(7)]
    assert list(prefetched(make, args, 0)) == [i * 10 for i in range(7)]
    assert list(prefetched(make, args, 3)) == [i * 10 for i in range(7)]
    calls.clear()
    it = prefetched(make, args, 2)
    assert next(it) == 0
    it.close()  # leaving early: the two batches started ahead finish, no more are made
    assert sorted(calls) == [0, 1, 2]


def test_the_finetune_benchmark_times_both_ways(tmp_path, capsys):
    """``capfuse bench --only finetune`` on a tiny fine-tuned model: both timings, the image count."""
    from capfuse.bench.finetune import bench_finetune, print_finetune
    from capfuse.data.demo import make_demo

    data = tmp_path / "data" / "tiny"
    make_demo(data, n_train=20, n_test=6, size=64, seed=0)
    cfg, _, _ = _tiny_finetune(tmp_path)
    config = tmp_path / "tiny_ft.yaml"
    config.write_text(yaml.safe_dump({**cfg, "name": "tiny_ft"}))
    r = bench_finetune(data, config, model=None, epochs=1, rounds=1, root=tmp_path)
    assert r["model"] == "tiny_ft" and r["ahead"] == 2 and set(r["seconds"]) == {0, 2}
    assert r["train_rows"] == 16 and r["images"] == 16 + (4 + 6) * 2  # every fifth row held out; flip TTA
    assert all(v > 0 for v in r["img_s"].values())
    print_finetune(r)
    assert "speed-up" in capsys.readouterr().out
    frozen = tmp_path / "frozen.yaml"
    frozen.write_text(yaml.safe_dump({**cfg, "name": "frozen", "finetune": False}))
    with pytest.raises(ValueError, match="no finetune: true model"):
        bench_finetune(data, frozen, model=None, root=tmp_path)


def _mid_map_features(n: int = 96, n_test: int = 16) -> tuple[dict, np.ndarray]:
    """Cached 2x2 maps entering Lite0's last stage (both views), with a class pattern in them."""
    rng = np.random.default_rng(0)
    Y = (rng.random((n, C)) < 0.3).astype(np.uint8)
    Y[Y.sum(1) == 0, 0] = 1
    pattern = rng.normal(size=(C, 192, 2, 2))
    Yall = np.concatenate([Y, Y[:n_test]])
    mid = np.einsum("nc,cdhw->ndhw", Yall, pattern) + rng.normal(scale=0.5, size=(n + n_test, 192, 2, 2))
    orig = {"img_mid": mid.astype(np.float16)}
    feats = {
        "views": {"orig": orig, "hflip": {"img_mid": orig["img_mid"][:, :, :, ::-1].copy()}},
        "n_test": n_test,
        "dims": {"img_mid": 192},
    }
    return feats, Y


def test_top_stages_train_from_cached_mid_maps(tmp_path):
    """``image_encoder.train_blocks``: the pretrained top stage trains (slower) under the head."""
    from safetensors.torch import load_file

    from capfuse.encoders.image import create_backbone

    feats, Y = _mid_map_features()
    cfg = {
        "kind": "net",
        "inputs": ["image"],
        "image_head": {"kind": "mlp", "hidden": 32},
        "image_encoder": {"name": "tf_efficientnet_lite0", "weights": "package", "train_blocks": 1, "grid": 2},
        "finetune_options": {"encoder_lr_mult": 0.25},
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3},
    }
    model = NetModel(cfg, seed=0)
    net = model.build(feats["dims"], C, np.full(C, 0.3))
    groups = model.param_groups(net)
    assert [g["lr_mult"] for g in groups] == [1.0, 0.25]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    out = model.fit_fold(feats, Y, np.arange(72), np.arange(72, 96), fold_dir=tmp_path / "f")
    assert out.val_logits.shape == (24, C) and np.isfinite(out.test_logits).all()

    pretrained, _ = create_backbone("tf_efficientnet_lite0", weights="package", num_classes=0)
    trained = load_file(str(tmp_path / "f" / "best.safetensors"))
    conv = "top.blocks.0.0.conv_pw.weight"  # the first conv of the last stage
    assert trained[conv].shape == pretrained.blocks[6][0].conv_pw.weight.shape
    assert not torch.equal(trained[conv], pretrained.blocks[6][0].conv_pw.weight)  # it trained
    # Close to the pretrained weights still: it started there, at a quarter of the head's rate.
    assert (
        torch.nn.functional.cosine_similarity(
            trained[conv].flatten(), pretrained.blocks[6][0].conv_pw.weight.flatten(), 0
        )
        > 0.9
    )
    # BatchNorm statistics stay the ImageNet ones (freeze_bn, the default).
    assert torch.equal(trained["top.bn2.running_mean"], pretrained.bn2.running_mean)


def test_top_stages_read_through_the_multilevel_vector():
    """``pooling: multilevel`` under trained top stages: the trained map's mean and max and the
    entering map's mean, in that order, and a head as wide as that."""
    from capfuse.nn.fusion import TopBlocksNet

    cfg = {
        "kind": "net",
        "inputs": ["image"],
        "image_head": {"kind": "mlp", "hidden": 16},
        "image_encoder": {"name": "tf_efficientnet_lite0", "weights": "package", "train_blocks": 1, "grid": 2},
        "finetune_options": {"amp": False},  # fp32 on any CPU: the parts compare exactly
    }
    dims = {"img_mid": 192}
    mean_net = NetModel(cfg, seed=0).build(dims, C, np.full(C, 0.3)).eval()
    ml_cfg = {**cfg, "image_encoder": {**cfg["image_encoder"], "pooling": "multilevel"}}
    ml_net = NetModel(ml_cfg, seed=0).build(dims, C, np.full(C, 0.3)).eval()
    assert isinstance(ml_net, TopBlocksNet) and ml_net.pooling == "multilevel"
    mid = torch.randn(3, 192, 7, 7)
    with torch.inference_mode():
        plain = mean_net.features({"img_mid": mid})["img_pooled"]
        ml = ml_net.features({"img_mid": mid})
        fmap = ml_net.top(mid)
    assert plain.shape == (3, 1280) and ml["img_pooled"].shape == (3, 2 * 1280 + 192)
    torch.testing.assert_close(ml["img_pooled"][:, :1280], fmap.mean((2, 3)))
    torch.testing.assert_close(ml["img_pooled"][:, 1280:2560], fmap.amax((2, 3)))
    torch.testing.assert_close(ml["img_pooled"][:, 2560:], mid.mean((2, 3)))
    first = next(m for m in ml_net.head.modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == 2 * 1280 + 192
    with torch.inference_mode():
        assert ml_net({"img_mid": mid})["logits"].shape == (3, C)


def test_amp_dtype_follows_the_device_and_what_it_computes(monkeypatch):
    """bf16 on a CPU only where it is native (emulated bf16 is slower than fp32); off when asked."""
    from capfuse.models import finetune

    cpu = torch.device("cpu")
    assert finetune.amp_dtype_for(cpu, False) is None
    monkeypatch.setattr(finetune, "cpu_has_bf16", lambda: True)
    assert finetune.amp_dtype_for(cpu, True) == torch.bfloat16
    monkeypatch.setattr(finetune, "cpu_has_bf16", lambda: False)
    assert finetune.amp_dtype_for(cpu, True) is None


def test_a_top_stage_in_fp32_on_the_cpu_is_announced_once(caplog, monkeypatch, tmp_path):
    """Without native bf16 the top stage trains two to three times slower: the log says so, once,
    when a fold trains; building the same net to predict or to cost it says nothing."""
    import capfuse.models.net as net_module

    feats, Y = _mid_map_features()
    cfg = {
        "kind": "net",
        "inputs": ["image"],
        "image_head": {"kind": "mlp", "hidden": 16},
        "image_encoder": {"name": "tf_efficientnet_lite0", "weights": "package", "train_blocks": 1, "grid": 2},
        "train": {"epochs": 1, "batch_size": 32},
    }
    fp32 = {**cfg, "finetune_options": {"amp": False}}

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "trains in fp32 on this CPU" in r.getMessage()]

    monkeypatch.setattr(net_module, "_WARNED_FP32", set())
    with caplog.at_level("WARNING", logger="capfuse"):
        NetModel(fp32, seed=0).build(feats["dims"], C, np.full(C, 0.3))
        assert warnings() == []
        for k in range(2):
            NetModel(fp32, seed=0).fit_fold(feats, Y, np.arange(72), np.arange(72, 96), fold_dir=tmp_path / str(k))
    assert len(warnings()) == 1 and "tf_efficientnet_lite0" in warnings()[0]
    caplog.clear()
    monkeypatch.setattr(net_module, "_WARNED_FP32", set())
    monkeypatch.setattr(net_module, "amp_dtype_for", lambda device, amp: torch.bfloat16)
    with caplog.at_level("WARNING", logger="capfuse"):
        NetModel(cfg, seed=0).fit_fold(feats, Y, np.arange(72), np.arange(72, 96), fold_dir=tmp_path / "bf16")
    assert warnings() == []


def test_trained_top_stages_under_bf16_autocast_stay_close_to_fp32():
    """``amp_dtype``: the top stages run in bf16, the pooled vector the head reads is fp32 and
    close to the fp32 pass's."""
    from capfuse.encoders.image import BackboneTop, create_backbone
    from capfuse.nn.fusion import TopBlocksNet

    backbone, _ = create_backbone("tf_efficientnet_lite0", weights="package", num_classes=0)
    top = BackboneTop(backbone, 1).eval()
    mid = {"img_mid": torch.randn(4, 192, 7, 7)}
    with torch.inference_mode():
        fp32 = TopBlocksNet(top, None, grid=2, pooling="multilevel").features(mid)["img_pooled"]
        bf16 = TopBlocksNet(top, None, grid=2, pooling="multilevel", amp_dtype=torch.bfloat16).features(mid)
    assert bf16["img_pooled"].dtype == torch.float32 and bf16["img_tokens"].dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(bf16["img_pooled"], fp32, dim=1)
    assert (cos > 0.99).all(), cos


def test_the_top_stage_trains_channels_last_to_the_same_values():
    """``TopBlocksNet`` runs its top stage channels_last (faster oneDNN convolutions): the same
    outputs and gradients as the cached map's NCHW layout, to float rounding."""
    import torch

    from capfuse.encoders.image import BackboneTop, create_backbone
    from capfuse.nn.fusion import TopBlocksNet

    mid = torch.randn(4, 192, 3, 3, generator=torch.Generator().manual_seed(0))
    grads = {}
    for channels_last in (False, True):
        model, _ = create_backbone("tf_efficientnet_lite0", weights="package", num_classes=0)
        net = TopBlocksNet(BackboneTop(model, 1), None, pooling="multilevel", channels_last=channels_last)
        conv = net.top.conv_head.weight
        seen = []
        net.top.register_forward_pre_hook(lambda _, args, seen=seen: seen.append(args[0]))
        pooled = net.train().features({"img_mid": mid})["img_pooled"]
        assert seen[0].is_contiguous(memory_format=torch.channels_last) == channels_last
        pooled.pow(2).mean().backward()
        grads[channels_last] = (pooled.detach(), conv.grad.clone())
    torch.testing.assert_close(grads[True][0], grads[False][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[True][1], grads[False][1], atol=1e-5, rtol=1e-3)


def test_the_top_stage_benchmark_times_every_variant(capsys):
    """``capfuse bench --only top-stage`` on a tiny input: both layouts per precision, a rate each."""
    from capfuse.bench.top_stage import bench_top_stage, print_top_stage
    from capfuse.models.finetune import cpu_has_bf16

    r = bench_top_stage(size=64, batch=4, steps=1, rounds=1)
    assert r["shape"] == (4, 192, 2, 2)  # 64 px / 32
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    assert sorted(r["rows_s"]) == sorted((p, lay) for p in precisions for lay in ("nchw", "channels_last"))
    assert all(v > 0 for v in r["rows_s"].values())
    print_top_stage(r)
    assert "channels_last" in capsys.readouterr().out
