"""Bundles: what a fold saves replays its own test logits, and an exported bundle predicts the
tiny test set exactly as the pipeline's submission did, from the bundle and the test folder only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from capfuse.bundle import BundleError, Predictor
from capfuse.bundle.export import ExportError, check_exportable
from capfuse.cli import main
from capfuse.config.schema import resolve_model
from capfuse.data.csvio import read_split
from capfuse.data.demo import PRESETS, make_demo
from capfuse.ensemble.stack import stack_features, stack_oof_and_test, stack_predict
from capfuse.features.tfidf import fit_tfidf, tfidf_state
from capfuse.models.linear import LinearModel
from capfuse.submission import read_submission
from capfuse.utils.io import read_json
from capfuse.utils.numeric import sigmoid

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "configs" / "pipeline.yaml"
# One model of each kind and input the default pipeline trains: TF-IDF alone, Lite0's
# multi-level vector + TF-IDF, MiniLM tokens, and the label-query fusion (prompts, token grids,
# contexts); and the best preset's other kinds: GloVe captions and a pseudo-label round
# (caption_mlp@r1), and a net over Lite0's trained top stage (image_mlp_topblock: the map entering it).
# The nets run 3 epochs (configs written by ``_configs``): exactness does not need a good model.
# Two read their test rows' image features aligned (``image_encoder.align: test``), a linear
# model and the trained top stage: a bundle must align the rows it predicts as the run did.
MODELS = [
    "caption_linear",
    "fusion_linear_multilevel",
    "caption_mlp",
    "fusion_labelquery_origview",
    "caption_attention_glove",
    "image_mlp_topblock",
]
ROUNDS = {"caption_mlp": 1}
ALIGNED = ("fusion_linear_multilevel", "image_mlp_topblock")
SETS = ("folds.k=3", "threshold.trials=5", "ensemble.stack.num_threads=1")


def _sets(*extra: str) -> list[str]:
    return [arg for s in (*SETS, *extra) for arg in ("--set", s)]


def _configs(folder: Path) -> Path:
    """A pipeline of MODELS whose nets stop after 3 epochs, inheriting the shipped configs."""
    (folder / "models").mkdir(parents=True)
    nets = ("caption_mlp", "fusion_labelquery_origview", "caption_attention_glove", "image_mlp_topblock")
    for name in (*nets, "fusion_linear_multilevel"):
        cfg = {"inherit": str(REPO / "configs" / "models" / f"{name}.yaml")}
        if name in nets:
            cfg["train"] = {"epochs": 3, "patience": 2}
        if name in ALIGNED:
            cfg["image_encoder"] = {"align": "test"}
        if name in ROUNDS:
            cfg["pseudo"] = {"rounds": ROUNDS[name]}
        (folder / "models" / f"{name}.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"inherit": str(PIPELINE), "models": MODELS}), encoding="utf-8")
    return pipeline


@pytest.mark.parametrize("inputs", [["image"], ["caption"], ["image", "caption"]])
def test_a_linear_fold_replays_its_test_logits_from_its_files(tmp_path, inputs):
    rng = np.random.default_rng(0)
    n, n_test = 60, 20
    words = ["dog", "cat", "bus", "red", "no", "car", "tree"]
    captions = [" ".join(rng.choice(words, 4)) for _ in range(n + n_test)]
    Y = (rng.random((n, 3)) < 0.4).astype(np.uint8)
    Y[:, 2] = 0  # a class without positives: predicted by its prior, saved as such
    image = rng.normal(size=(n + n_test, 8)).astype(np.float16)
    vec = fit_tfidf(captions[:n], captions[n:], min_df=1)
    feats = {
        "n_test": n_test,
        "image_train": image[:n],
        "image_test": image[n:],
        "caption_train": vec.transform(captions[:n]).tocsr(),
        "caption_test": vec.transform(captions[n:]).tocsr(),
        "tfidf_state": (*tfidf_state(vec), 2),
    }
    model = LinearModel({"kind": "linear", "inputs": inputs, "tfidf": {"min_df": 1}}, seed=0)
    out = model.fit_fold(feats, Y, np.arange(40), np.arange(40, 60), fold_dir=tmp_path)
    # Only captions the vocabulary has never seen, to show nothing is refitted on new rows.
    again = model.predict_saved(tmp_path, image=image[n:], captions=captions[n:])
    assert again.dtype == np.float32 and np.array_equal(again, out.test_logits)
    assert not list(tmp_path.glob("*.pkl"))


@pytest.mark.parametrize("init", ["blend", "constant"])
def test_the_stackers_saved_fold_models_replay_its_test_probabilities(init):
    rng = np.random.default_rng(1)
    n, n_test, c = 150, 30, 3
    Y = (rng.random((n, c)) < 0.4).astype(np.uint8)
    Y[:, 2] = 0
    oof = [(rng.normal(size=(n, c)) + 2 * (Y - 0.5)).astype(np.float32) for _ in range(2)]
    test = [rng.normal(size=(n_test, c)).astype(np.float32) for _ in range(2)]
    base = {"base_probs": [sigmoid(z) for z in oof], "base_probs_test": [sigmoid(z) for z in test]}
    saved: list = []
    _, want = stack_oof_and_test(
        stack_features(oof),
        Y,
        np.arange(n) % 3,
        stack_features(test),
        {"num_threads": 1},
        num_rounds=8,
        saved=saved,
        **(base if init == "blend" else {}),
    )
    assert len(saved) == 3 and all(len(fold["classes"]) == c for fold in saved)
    assert np.array_equal(stack_predict(saved, test, [sigmoid(z) for z in test]), want)


@pytest.mark.parametrize("model", ["fusion_crossattention_lite2_finetune_gpu", "image_mlp_finetune"])
def test_export_refuses_what_a_bundle_cannot_replay_naming_the_model(model):
    from capfuse.config import load_config

    settings = resolve_model(load_config(REPO / "configs" / "models" / f"{model}.yaml", []))
    assert settings.finetune, f"{model} is the catalogue's fine-tuning config and must stay one"
    with pytest.raises(ExportError, match=model):
        check_exportable(model, settings)


def _test_rows(data: Path) -> pd.DataFrame:
    rows, _ = read_split(data / "test.csv", "test")  # captions hold unquoted commas
    return pd.DataFrame({"ImageID": [r.image_id for r in rows], "Caption": [r.caption for r in rows]})


def _test_folder(data: Path, dest: Path) -> Path:
    """The test half of a COMP5329 folder alone: test.csv and its images, no train.csv."""
    (dest / "data").mkdir(parents=True)
    shutil.copyfile(data / "test.csv", dest / "test.csv")
    for image_id in _test_rows(data)["ImageID"]:
        src = data / "data" / image_id
        if src.exists():
            shutil.copyfile(src, dest / "data" / image_id)
    return dest


def _check_exact(root: Path, sub_csv: Path, probs_csv: Path) -> None:
    want_sub = read_submission(root / "submissions" / "tiny-latest.csv")
    got_sub = read_submission(sub_csv)
    pd.testing.assert_frame_equal(got_sub, want_sub)
    want = pd.read_csv(root / "runs" / "tiny" / "ensemble" / "test_probs.csv", dtype={"ImageID": str})
    got = pd.read_csv(probs_csv, dtype={"ImageID": str})
    assert list(got.columns) == list(want.columns) and list(got["ImageID"]) == list(want["ImageID"])
    diff = np.abs(got.drop(columns="ImageID").to_numpy() - want.drop(columns="ImageID").to_numpy())
    assert diff.max() <= 1e-5, f"largest probability difference {diff.max():.2e}"


@pytest.mark.slow
def test_an_exported_bundle_reproduces_the_pipelines_submission_from_the_test_folder_alone(tmp_path, monkeypatch):
    from capfuse.features import align

    monkeypatch.setattr(align, "MIN_ROWS", 10)  # the tiny set's 39 usable test images are aligned
    root = tmp_path / "project"
    data = root / "data" / "tiny"
    make_demo(data, **PRESETS["tiny"], seed=0)
    # A test image that cannot be read: its row must come from the caption fallback both ways.
    broken = _test_rows(data)["ImageID"].iloc[3]
    (data / "data" / broken).write_bytes(b"not an image")
    common = ["--data", str(data), "--root", str(root), "--config", str(_configs(tmp_path / "configs")), "--quiet"]
    unseen = _test_folder(data, tmp_path / "unseen")
    work = tmp_path / "work"  # encoder exports and features, shared by every prediction below

    for candidates in ("[weighted_blend]", "[stack]"):
        sets = _sets(f"ensemble.candidates={candidates}")
        assert main(["all" if candidates == "[weighted_blend]" else "infer", *common, *sets]) == 0
        bundle = tmp_path / f"bundle-{candidates.strip('[]')}"
        assert main(["export", *common, *sets, "--out", str(bundle)]) == 0
        record = read_json(bundle / "bundle.json")
        assert record["second_level"]["candidate"] == candidates.strip("[]")
        # The default's `ensemble.rounds: last`: a model's last round stands in its place.
        assert set(record["models"]) == (set(MODELS) - set(ROUNDS)) | {f"{m}@r{r}" for m, r in ROUNDS.items()}
        assert record["image_fallback"]["model"] in {
            "caption_linear",
            "caption_mlp",
            "caption_attention_glove",
            "caption_mlp@r1",
        }
        assert sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()) == sorted(
            [*record["files"], "bundle.json"]
        )
        for name in ALIGNED:
            assert read_json(bundle / "models" / name / "alignment.json")["orig"]
        # The training data and the run folder out of reach: predicting must not need them.
        hidden = root.with_name("hidden")
        root.rename(hidden)
        try:
            if candidates == "[weighted_blend]":
                out = tmp_path / "predictions"
                args = [
                    "predict",
                    "--bundle",
                    str(bundle),
                    "--data",
                    str(unseen),
                    "--out",
                    str(out),
                    "--cache",
                    str(work),
                ]
                assert main(args) == 0
                sub_csv, probs_csv = out / "unseen-latest.csv", out / "unseen-latest-probs.csv"
            else:
                pred = Predictor.load(bundle, work_dir=work).predict_folder(unseen)
                assert not pred.image_ok[3] and pred.image_ok.sum() == len(pred.ids) - 1
                sub_csv, probs_csv = tmp_path / "stack.csv", tmp_path / "stack-probs.csv"
                pred.submission().to_csv(sub_csv, index=False)
                pred.probabilities().to_csv(probs_csv, index=False)
        finally:
            hidden.rename(root)
        _check_exact(root, sub_csv, probs_csv)

    # Images and captions from memory: paths give the folder's numbers; a PIL image is
    # re-encoded losslessly, which a JPEG's draft decoding may not match to the last bit.
    rows = [0, 1, 2, 4]  # row 3's image is the broken one
    test = _test_rows(unseen).iloc[rows]
    folder = pd.read_csv(tmp_path / "stack-probs.csv", dtype={"ImageID": str}).iloc[rows]
    predictor = Predictor.load(bundle, work_dir=work)
    few = predictor.predict([unseen / "data" / i for i in test["ImageID"]], list(test["Caption"]))
    assert np.abs(few.probs - folder.drop(columns="ImageID").to_numpy()).max() <= 1e-5
    assert few.image_ok.all() and all(len(labels) >= 1 for labels in few.labels)
    assert all(isinstance(n, str) for n in few.label_names[0]) and few.label_names[0]
    from PIL import Image

    with Image.open(unseen / "data" / test["ImageID"].iloc[0]) as im:
        one = predictor.predict([im.convert("RGB"), None], [test["Caption"].iloc[0], test["Caption"].iloc[1]])
    assert one.image_ok.tolist() == [True, False] and all(len(labels) >= 1 for labels in one.labels)
    assert np.abs(one.probs[0] - few.probs[0]).max() < 0.05

    # A folder of images alone, captions from a CSV: the same labels, rows in file-name order.
    images_only = tmp_path / "images"
    shutil.copytree(unseen / "data", images_only)
    out = tmp_path / "from-images"
    args = ["predict", "--bundle", str(bundle), "--data", str(images_only), "--captions", str(unseen / "test.csv")]
    assert main([*args, "--out", str(out), "--cache", str(work)]) == 0
    got = read_submission(out / "images-latest.csv")
    want = read_submission(root / "submissions" / "tiny-latest.csv")
    assert list(got["ImageID"]) == sorted(want["ImageID"])
    pd.testing.assert_frame_equal(got.set_index("ImageID"), want.set_index("ImageID").loc[got["ImageID"]])

    # An altered file is refused before anything is predicted.
    victim = next(bundle.glob("models/caption_linear/fold0/coef.npy"))
    victim.write_bytes(victim.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(BundleError, match="coef.npy"):
        Predictor.load(bundle)
    assert yaml.safe_load((bundle / "models" / "caption_linear" / "config.yaml").read_text())["kind"] == "linear"
