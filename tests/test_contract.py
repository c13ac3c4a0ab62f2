"""The contract every model config keeps, checked for each file under ``configs/models/``.

In the spirit of scikit-learn's ``check_estimator``: the parameters are discovered from the
folder when the tests are collected, so a config is covered the day its file is added. Each
config trains in-process on the tiny dataset over two folds (``contract_support``), its nets
for two epochs in batches of 16: the contract is about behaviour, and only the prior check reads
a score. Four trainer calls per config serve every check: an uninterrupted run, a run stopped as
it starts fold 1 and then run again, and fold 0 alone with fold 0's labels shuffled.

The checks, and what each one guarantees:

* **builds**: the file loads, passes the schema check, resolves, and its kind builds a model
  object. Every config, including those the checks below cannot train here.
* **shapes**: the OOF logits are (n_train, C), every row filled by the fold that held it out,
  rows in the dataset's order and class columns in class-id order; the test logits are
  (n_test, C); all finite. The second level reads these files by position and by column name.
* **determinism**: the same fold trained twice gives bit-identical validation and test logits.
  Resuming, the honest-OOF check and bundle replay all rely on it.
* **better than the class prior**: the OOF mAP beats the class prior's (one score for every row
  of a class, its ties in random order: ``contract_support.class_prior_map``) by
  ``PRIOR_MARGIN``, on data whose labels the captions and images carry. A model that learns
  nothing, or learns from permuted labels, fails it. ``PRIOR_MARGIN_EXEMPT`` names, with a
  reason, a config that must only beat the prior itself.
* **held-out shuffle**: fold 0's label sets shuffled among fold 0's rows leave fold 0's OOF and
  test logits bit-identical: no epoch choice, early stop, calibration or prior reads the labels
  of the rows a fold predicts.
* **resume after a kill**: a run stopped as it starts fold 1, then run again, trains fold 1
  only and ends with OOF and test logits byte-identical to an uninterrupted run's.
* **exact replay from a bundle**: for one config of each kind group (linear, net, net with a
  pseudo-label round, end-to-end fine-tuning, and any group a new config brings), chosen from
  the discovered configs as the cheapest of its group, a one-model pipeline is trained,
  exported, and ``Predictor.load(bundle).predict_folder(data)`` gives the run's own test
  probabilities and submission. A group that export refuses (fine-tuning: a bundle replays
  cached-feature models only) must be refused with an error naming the model.

A config whose round 0 is another config's to the letter (``x_pseudo`` is ``x`` plus a
pseudo-label round) shares that config's training runs. ``NOT_TRAINED_HERE`` names, with a
reason, each config the training checks cannot run on a CPU test machine; it still gets
**builds** and one forward pass on a tiny batch.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from capfuse import config as cfglib
from capfuse.metrics import mean_average_precision
from capfuse.models import MODELS
from capfuse.utils.io import read_json
from capfuse.utils.numeric import sigmoid
from contract_support import (
    MODEL_DIR,
    class_prior_map,
    contract_sets,
    discovered,
    kind_group,
    load_model,
    make_bench,
)

NAMES = discovered()
NOT_TRAINED_HERE = {
    "fusion_crossattention_lite2_finetune_gpu": (
        "device: cuda: it trains on a GPU only, and a CPU stand-in would test another model"
    ),
}
TRAINED = [n for n in NAMES if n not in NOT_TRAINED_HERE]
PRIOR_MARGIN = 0.05  # OOF mAP over the class prior's; a model trained on permuted labels falls below
# Configs that the tiny data cannot teach enough in the contract's two epochs to clear the margin;
# each must still beat the class prior itself.
PRIOR_MARGIN_EXEMPT = {
    "caption_attention_glove": (
        "attention pooling over 50-d GloVe vectors learns little from the 40 captions of a tiny fold"
    ),
    "image_mlp_finetune": (
        "the whole backbone trains from ImageNet weights on 64 px images: two epochs of 40 images move it little"
    ),
}


@pytest.fixture(scope="session")
def bench(tiny_run, tmp_path_factory):
    return make_bench(tiny_run, tmp_path_factory.mktemp("contract"), TRAINED)


def test_every_config_file_is_a_parameter_and_the_allow_list_names_real_configs():
    assert NAMES == sorted(p.stem for p in MODEL_DIR.glob("*.yaml")) and len(NAMES) >= 2
    unknown = sorted(set(NOT_TRAINED_HERE) - set(NAMES))
    assert not unknown, f"NOT_TRAINED_HERE names configs that do not exist: {unknown}"
    assert all(reason.strip() for reason in NOT_TRAINED_HERE.values())
    unknown = sorted(set(PRIOR_MARGIN_EXEMPT) - set(TRAINED))
    assert not unknown, f"PRIOR_MARGIN_EXEMPT names configs the battery does not train: {unknown}"


@pytest.mark.parametrize("name", NAMES)
def test_builds(name):
    settings = cfglib.resolve_model(load_model(name, contract_sets(name)))
    model = MODELS.create(settings.kind, cfg=settings, seed=settings.seed)
    assert model.needs_image == ("image" in settings.inputs)


@pytest.mark.parametrize("name", sorted(NOT_TRAINED_HERE))
def test_what_cannot_train_here_still_runs_forward_on_a_tiny_batch(name):
    from capfuse.models.finetune import FinetuneNet

    settings = cfglib.resolve_model(load_model(name))
    assert settings.kind == "net" and settings.finetune, "a forward pass is written for fine-tuning nets only"
    model = MODELS.create(settings.kind, cfg=settings, seed=settings.seed)
    C = 5
    torch.manual_seed(0)
    net = FinetuneNet(settings, C, lambda dims: model.build(dims, C, np.full(C, 0.2))).eval()
    batch = {}
    if net.backbone is not None:
        batch["image"] = torch.randn(2, 3, net.pre.size, net.pre.size)
    if net.text is not None:
        tokens = net.tokenizer(["a dog on a bus", "a red car"], padding=True, return_tensors="pt")
        batch.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    with torch.no_grad():
        logits = net(batch)["logits"]
    assert logits.shape == (2, C) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", TRAINED)
def test_shapes(bench, name):
    runs, ds = bench.runs(name), bench.ds
    classes = [str(c) for c in ds.class_ids]
    oof = pd.read_csv(runs.full / "oof_logits.csv", dtype={"ImageID": str})
    test = pd.read_csv(runs.full / "test_logits.csv", dtype={"ImageID": str})
    assert list(oof.columns) == ["ImageID", "fold", *classes]
    assert list(test.columns) == ["ImageID", *classes]
    assert list(oof["ImageID"]) == ds.train_ids and list(test["ImageID"]) == ds.test_ids
    assert (oof["fold"].to_numpy() == bench.folds).all()
    assert oof[classes].shape == (len(ds.train_ids), len(classes))
    assert test[classes].shape == (len(ds.test_ids), len(classes))
    assert np.isfinite(oof[classes].to_numpy()).all() and np.isfinite(test[classes].to_numpy()).all()
    for fold in range(int(bench.folds.max()) + 1):
        held = np.flatnonzero(bench.folds == fold)
        val = np.load(runs.full / f"fold{fold}" / "val_logits.npy")
        assert val.shape == (len(held), len(classes))
        # Each row from the fold that held it out (the CSV holds float32 values at full precision).
        np.testing.assert_array_equal(oof[classes].to_numpy(np.float32)[held], val)


@pytest.mark.parametrize("name", TRAINED)
def test_determinism(bench, name):
    runs = bench.runs(name)
    for part in ("val_logits", "test_logits"):
        first = np.load(runs.full / "fold0" / f"{part}.npy")
        again = np.load(runs.resumed / "fold0" / f"{part}.npy")
        assert np.array_equal(first, again), f"{name}: fold 0 trained twice gave other {part}"


@pytest.mark.parametrize("name", TRAINED)
def test_beats_the_class_prior(bench, name):
    runs, Y = bench.runs(name), bench.ds.Y
    oof = pd.read_csv(runs.full / "oof_logits.csv", dtype={"ImageID": str})
    score = mean_average_precision(Y, sigmoid(oof[[str(c) for c in bench.ds.class_ids]].to_numpy()))
    assert score == pytest.approx(runs.metrics["cv_map"], abs=1e-5)
    margin = 0.0 if name in PRIOR_MARGIN_EXEMPT else PRIOR_MARGIN
    floor = class_prior_map(Y) + margin
    assert score >= floor, f"{name}: OOF mAP {score:.3f} below the class prior + {margin} ({floor:.3f})"


@pytest.mark.parametrize("name", TRAINED)
def test_held_out_shuffle(bench, name):
    runs = bench.runs(name)
    assert runs.trained["shuffled"] == [0, 1], "the shuffled run trains fold 0 and stops at fold 1"
    for part in ("val_logits", "test_logits"):
        true = np.load(runs.full / "fold0" / f"{part}.npy")
        shuffled = np.load(runs.shuffled / "fold0" / f"{part}.npy")
        assert np.array_equal(true, shuffled), f"{name}: fold 0's {part} moved with its own labels"


@pytest.mark.parametrize("name", TRAINED)
def test_resume_after_a_kill(bench, name):
    runs = bench.runs(name)
    assert runs.trained["killed"] == [0, 1]
    assert "fold0/done.json" in runs.after_kill and "fold1/done.json" not in runs.after_kill
    assert "metrics.json" not in runs.after_kill, "an interrupted run must not look finished"
    assert runs.trained["rerun"] == [1], "the rerun must train only the fold the kill interrupted"
    for file in ("oof_logits.csv", "test_logits.csv"):
        assert (runs.resumed / file).read_bytes() == (runs.full / file).read_bytes(), f"{name}: {file} differs"
    resumed, full = read_json(runs.resumed / "metrics.json"), dict(runs.metrics)
    for record in (resumed, full):
        record.pop("train_minutes")
    assert resumed == full


def _cost(name: str) -> tuple:
    """Cheapest first: fewer inputs, captions before images, one view before two, then by name."""
    settings = cfglib.resolve_model(load_model(name))
    views = 2 if settings.kind == "net" and (settings.train.tta or settings.train.flip_p > 0) else 1
    return (len(settings.inputs), "image" in settings.inputs, views, name)


def representatives() -> dict[str, str]:
    """The cheapest config of each kind group among the discovered ones."""
    groups: dict[str, list[str]] = {}
    for name in NAMES:
        groups.setdefault(kind_group(name), []).append(name)
    return {group: min(names, key=_cost) for group, names in sorted(groups.items())}


def test_every_kind_group_has_a_bundle_representative():
    chosen = representatives()
    assert {"linear", "net", "net+pseudo", "net+finetune"} <= set(chosen)
    assert all(kind_group(name) == group for group, name in chosen.items())


@pytest.mark.parametrize("group", sorted(representatives()))
def test_exact_replay_from_a_bundle(tiny_run, tmp_path, group):
    from capfuse.bundle import Predictor
    from capfuse.bundle.export import ExportError, check_exportable
    from capfuse.cli import main
    from capfuse.submission import read_submission

    name = representatives()[group]
    settings = cfglib.resolve_model(load_model(name))
    try:
        check_exportable(name, settings)
    except ExportError as err:
        assert name in str(err), f"export refused {name} without naming it: {err}"
        return
    root = tmp_path / "project"
    shared = tiny_run.root / "runs" / tiny_run.data.name
    shutil.copytree(shared / "cache", root / "runs" / tiny_run.data.name / "cache", symlinks=True)
    sets = ("folds.k=2", "threshold.trials=5", "ensemble.stack.num_threads=1", *contract_sets(name))
    common = ["--data", str(tiny_run.data), "--root", str(root), "--config", str(MODEL_DIR / f"{name}.yaml")]
    common += ["--quiet", *[arg for s in sets for arg in ("--set", s)]]
    assert main(["all", *common]) == 0
    bundle = tmp_path / "bundle"
    assert main(["export", *common, "--out", str(bundle)]) == 0
    pred = Predictor.load(bundle, work_dir=tmp_path / "work").predict_folder(tiny_run.data)

    want_sub = read_submission(root / "submissions" / f"{tiny_run.data.name}-latest.csv")
    pd.testing.assert_frame_equal(pred.submission(), want_sub)
    want = pd.read_csv(root / "runs" / tiny_run.data.name / "ensemble" / "test_probs.csv", dtype={"ImageID": str})
    got = pred.probabilities()
    assert list(got.columns) == list(want.columns) and list(got["ImageID"]) == list(want["ImageID"])
    diff = np.abs(got.drop(columns="ImageID").to_numpy(np.float64) - want.drop(columns="ImageID").to_numpy())
    assert diff.max() <= 1e-6, f"{name}: largest test probability difference {diff.max():.2e}"
