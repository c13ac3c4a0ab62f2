"""The ablation stage on the tiny dataset: shared runs are reused, derived ones live apart, one table."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from capfuse.cli import main
from capfuse.config import ConfigError, load_config
from capfuse.data.demo import PRESETS, make_demo
from capfuse.stages.ablate import variant_configs

REPO = Path(__file__).resolve().parents[1]


def _configs(tmp: Path, variants: list[dict], models: tuple[str, ...] = ("image_mlp", "caption_mlp")) -> Path:
    """A configs/ folder holding the repo's configs and an ablation config with ``variants``."""
    cfg_dir = tmp / "configs"
    cfg_dir.mkdir(parents=True)
    (cfg_dir / "models").symlink_to(REPO / "configs" / "models")
    for name in ("pipeline.yaml",):
        (cfg_dir / name).symlink_to(REPO / "configs" / name)
    path = cfg_dir / "ablation.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "inherit": "pipeline",
                "models": list(models),
                "ablation": {"reference": "caption_mlp", "variants": variants},
            }
        )
    )
    return path


def test_the_repo_ablation_config_resolves_every_variant():
    cfg_path = REPO / "configs" / "ablation.yaml"
    variants = variant_configs(load_config(cfg_path), cfg_path)
    names = [v["name"] for v in variants]
    assert {
        "image_mlp",
        "caption_mlp",
        "fusion_crossattention",
        "loss_tsig",
        "fusion_labelquery",
        "fusion_context",
        "pseudo_round",
    } <= set(names)
    by_name = {v["name"]: v for v in variants}
    assert by_name["loss_tsig"]["model"]["train"]["loss"]["name"] == "tempered_bce"
    assert by_name["fusion_context"]["model"]["aux"]["context_weight"] == 0.2
    assert by_name["fusion_concat"]["model"]["fusion"]["cross_attention"] is False
    # A variant that is exactly a pipeline model shares its run; a derived one gets its own name.
    assert by_name["caption_mlp"]["shared"] and by_name["caption_mlp"]["model"]["name"] == "caption_mlp"
    assert not by_name["loss_bce"]["shared"] and by_name["loss_bce"]["model"]["name"] == "loss_bce"
    # A registered config outside the pipeline's list must not land where `make stack` takes every model.
    lq = by_name["fusion_labelquery"]
    assert not lq["shared"] and lq["model"]["name"] == "fusion_labelquery"
    assert by_name["pseudo_round"]["pseudo"].rounds == 1
    assert by_name["pseudo_round"]["model"]["name"] == "fusion_crossattention"
    # The ablation block never reaches a model config: it would change every fingerprint.
    assert all("ablation" not in v["model"] for v in variants)


def test_bad_variants_are_named(tmp_path):
    path = _configs(tmp_path, [{"name": "a", "base": "caption_mlp", "colour": "red"}])
    with pytest.raises(ValueError, match=r"variants\[0\].*colour"):
        variant_configs(load_config(path), path)
    path.write_text(yaml.safe_dump({"inherit": "pipeline", "ablation": {"variants": [{"name": "x", "base": "nope"}]}}))
    with pytest.raises(ConfigError, match="nope"):
        variant_configs(load_config(path), path)


@pytest.mark.slow
def test_ablate_writes_one_table_and_leaves_the_pipeline_alone(tmp_path):
    data = tmp_path / "data" / "tiny"
    make_demo(data, **PRESETS["tiny"], seed=0)
    cfg = _configs(
        tmp_path,
        [
            {"name": "caption_mlp", "group": "reference", "change": "caption MLP"},
            {
                "name": "cap_bce",
                "base": "caption_mlp",
                "group": "loss",
                "change": "plain BCE",
                "set": {"train": {"loss": {"name": "bce"}, "epochs": 3}},
            },
            {
                "name": "cap_pseudo",
                "base": "caption_mlp",
                "group": "semi-supervised",
                "change": "one round",
                "pseudo": {"rounds": 1, "graph": 0.5, "graph_k": 5},
            },
        ],
    )
    common = ["--data", str(data), "--root", str(tmp_path), "--quiet", "--set", "folds.k=3"]
    assert main(["folds", *common, "--config", str(cfg)]) == 0
    assert main(["train", *common, "--config", str(cfg)]) == 0  # image_mlp and caption_mlp, as `make ablate` does
    before = (tmp_path / "runs" / "tiny" / "caption_mlp" / "oof_logits.csv").read_bytes()
    assert (
        main(
            [
                "ablate",
                *common,
                "--config",
                str(cfg),
                "--set",
                "threshold.trials=20",
                "--set",
                "ensemble.stack.num_threads=1",
            ]
        )
        == 0
    )

    runs = tmp_path / "runs" / "tiny"
    table = pd.read_csv(runs / "ablation.csv")
    assert list(table["variant"][:3]) == ["caption_mlp", "cap_bce", "cap_pseudo"]
    assert {"best_single", "weighted_blend", "stack", "global_threshold", "per_class_thresholds"} <= set(
        table["variant"]
    )
    ref = table.set_index("variant")
    assert ref.loc["caption_mlp", "delta"] == 0.0
    assert ref.loc["cap_bce", "delta"] == pytest.approx(
        ref.loc["cap_bce", "mean_f1"] - ref.loc["caption_mlp", "mean_f1"]
    )
    assert table["mean_f1"].between(0, 1).all() and (table.loc[:2, "minutes"] >= 0).all()
    # The shared model was reused, not retrained; derived variants and rounds live apart, where
    # the stack stage (which takes every model under runs/<dataset>/) does not look.
    assert (runs / "caption_mlp" / "oof_logits.csv").read_bytes() == before
    assert (runs / "ablation" / "cap_bce" / "metrics.json").exists()
    assert (runs / "ablation" / "caption_mlp@r1" / "metrics.json").exists()
    assert not (runs / "cap_bce").exists() and not (runs / "caption_mlp@r1").exists()
    assert not (runs / "ensemble").exists()  # in memory: no submission artefact rewritten
    assert (
        ref.loc["cap_pseudo", "mean_f1"]
        == pd.read_json(runs / "ablation" / "caption_mlp@r1" / "metrics.json", typ="series")["cv_mean_f1"]
    )
    assert "| cap_bce | loss |" in (runs / "ablation.md").read_text()


@pytest.mark.slow
def test_seeds_train_apart_and_give_a_mean_and_its_spread(tmp_path):
    data = tmp_path / "data" / "tiny"
    make_demo(data, **PRESETS["tiny"], seed=0)
    cfg = _configs(
        tmp_path,
        [
            {"name": "caption_mlp", "group": "reference", "change": "caption MLP"},
            {
                "name": "cap_bce",
                "base": "caption_mlp",
                "change": "plain BCE",
                "set": {"train": {"loss": {"name": "bce"}}},
            },
        ],
        models=("caption_mlp",),  # no image model: nothing to embed
    )
    common = ["--data", str(data), "--root", str(tmp_path), "--quiet", "--set", "folds.k=3", "--config", str(cfg)]
    assert main(["folds", *common]) == 0
    assert main(["train", *common]) == 0
    runs = tmp_path / "runs" / "tiny"
    before = (runs / "caption_mlp" / "oof_logits.csv").read_bytes()
    args = ["--set", "ablation.seeds=2", "--set", "ablation.second_level=false"]
    assert main(["ablate", *common, *args]) == 0

    table = pd.read_csv(runs / "ablation.csv").set_index("variant")
    assert list(table.index) == ["caption_mlp", "cap_bce"] and (table["seeds"] == 2).all()
    # The first seed is the pipeline's own model, reused; the second trains apart with its own seed.
    assert (runs / "caption_mlp" / "oof_logits.csv").read_bytes() == before
    for name in ("caption_mlp", "cap_bce"):
        first = runs / name if name == "caption_mlp" else runs / "ablation" / name
        scores = [
            pd.read_json(d / "metrics.json", typ="series")["cv_mean_f1"]
            for d in (first, runs / "ablation" / f"{name}@s1042")
        ]
        assert scores[0] != scores[1], "the second seed trained the same model again"
        assert table.loc[name, "mean_f1"] == pytest.approx(sum(scores) / 2, abs=1e-5)
        assert table.loc[name, "sd"] == pytest.approx(abs(scores[0] - scores[1]) / 2**0.5, abs=1e-5)
    assert table.loc["cap_bce", "delta"] == pytest.approx(
        table.loc["cap_bce", "mean_f1"] - table.loc["caption_mlp", "mean_f1"], abs=1e-5
    )
    header = [c.strip() for c in (runs / "ablation.md").read_text().splitlines()[0].split("|")]
    assert {"sd", "seeds"} <= set(header)
