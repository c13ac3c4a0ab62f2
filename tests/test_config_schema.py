"""The config schema: unknown keys are errors that say where and what was meant; every shipped
config checks and resolves; the resolved objects carry the schema's defaults."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

# The modules that define losses, heads, TF-IDF and the stacker register their parameters with
# the schema as they load (as every command that builds them does before reading its config).
import capfuse.ensemble.second_level  # noqa: F401
import capfuse.features.tfidf  # noqa: F401
import capfuse.nn.fusion  # noqa: F401
from capfuse.config import (
    ConfigError,
    load_config,
    resolve,
    resolve_model,
    validate,
)
from capfuse.config.check import ZEROSHOT_GROUPS, ZEROSHOT_KEYS
from capfuse.zeroshot import ZeroShotSettings

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def write(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def raises(*parts: str):
    """``pytest.raises(ConfigError)`` whose message holds every one of ``parts`` (plain text)."""

    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(ConfigError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            out = self.ctx.__exit__(*exc)
            message = str(self.info.value)
            for part in parts:
                assert part in message, f"{part!r} not in {message!r}"
            return out

    return Check()


# -- unknown keys: the key, where it came from, what was meant ---------------------------------


def test_a_misspelt_top_level_key_names_the_file_and_the_key_meant(tmp_path):
    path = write(tmp_path / "mine.yaml", {"inherit": str(CONFIGS / "pipeline.yaml"), "threshhold": {"trials": 5}})
    with raises("'threshhold'", str(path), "did you mean 'threshold'?"):
        load_config(path)


def test_a_misspelt_nested_key_names_its_dotted_path(tmp_path):
    path = write(
        tmp_path / "mine.yaml",
        {"inherit": str(CONFIGS / "models" / "fusion_crossattention.yaml"), "train": {"lerning_rate": 0.1}},
    )
    with raises("'train.lerning_rate'", str(path), "did you mean 'train.lr'?"):
        load_config(path)
    path = write(
        tmp_path / "deep.yaml",
        {"inherit": str(CONFIGS / "models" / "fusion_labelquery.yaml"), "fusion": {"label_query": {"temprature": 0.2}}},
    )
    with raises("'fusion.label_query.temprature'", "did you mean 'fusion.label_query.temperature'?"):
        load_config(path)


def test_model_config_keys_follow_the_kind(tmp_path):
    # A net key in a linear model: the kind decides which keys exist.
    path = write(
        tmp_path / "lin.yaml", {"inherit": str(CONFIGS / "models" / "caption_linear.yaml"), "fusion": {"heads": 2}}
    )
    with raises("'fusion'", str(path)):
        load_config(path)
    path = write(
        tmp_path / "net.yaml",
        {"inherit": str(CONFIGS / "models" / "fusion_crossattention.yaml"), "fusion": {"cross_atention": False}},
    )
    with raises("'fusion.cross_atention'", str(path), "did you mean 'fusion.cross_attention'?"):
        load_config(path)
    path = write(tmp_path / "kind.yaml", {"kind": "nett"})
    with raises("model kind 'nett'", "did you mean 'net'?"):
        load_config(path)


def test_a_key_at_the_wrong_level_is_pointed_to_its_block(tmp_path):
    path = write(tmp_path / "flat.yaml", {"inherit": str(CONFIGS / "models" / "image_mlp.yaml"), "patience": 3})
    with raises("'patience'", "did you mean 'train.patience'?"):
        load_config(path)


def test_registry_blocks_take_the_chosen_components_parameters(tmp_path):
    base = str(CONFIGS / "models" / "fusion_crossattention.yaml")
    path = write(tmp_path / "loss.yaml", {"inherit": base, "train": {"loss": {"name": "asl", "gama_neg": 2}}})
    with raises("'train.loss.gama_neg'", "'asl' loss", "did you mean 'train.loss.gamma_neg'?"):
        load_config(path)
    path = write(tmp_path / "loss_name.yaml", {"inherit": base, "train": {"loss": {"name": "weigted_bce"}}})
    with raises("loss 'weigted_bce'", "did you mean 'weighted_bce'?"):
        load_config(path)
    # attn heads take queries; an mlp head does not (it used to swallow any keyword).
    path = write(tmp_path / "head.yaml", {"inherit": base, "caption_head": {"kind": "mlp", "queries": 2}})
    with raises("'caption_head.queries'", "'mlp' head"):
        load_config(path)
    ok = write(tmp_path / "attn.yaml", {"inherit": base, "caption_head": {"kind": "attn", "queries": 2}})
    assert resolve_model(load_config(ok)).caption_head.kwargs() == {"hidden": 256, "dropout": 0.3, "queries": 2}
    path = write(
        tmp_path / "stack.yaml", {"inherit": str(CONFIGS / "pipeline.yaml"), "ensemble": {"stack": {"num_thread": 1}}}
    )
    with raises("'ensemble.stack.num_thread'", "did you mean 'ensemble.stack.num_threads'?"):
        load_config(path)


def test_an_unknown_key_is_blamed_on_the_file_that_brought_it(tmp_path):
    parent = write(
        tmp_path / "configs" / "parent.yaml", {"inherit": str(CONFIGS / "pipeline.yaml"), "folds": {"kk": 3}}
    )
    child = write(tmp_path / "configs" / "child.yaml", {"inherit": "parent", "folds": {"seed": 1}})
    with raises("'folds.kk'", str(parent), "did you mean 'folds.k'?") as info:
        load_config(child)
    assert str(child) not in str(info.value)


def test_an_ablation_variants_set_block_is_checked(tmp_path):
    path = write(
        tmp_path / "configs" / "abl.yaml",
        {
            "inherit": str(CONFIGS / "pipeline.yaml"),
            "ablation": {
                "reference": "fusion_crossattention",
                "variants": [
                    {"name": "fusion_crossattention"},
                    {"name": "fast", "base": "fusion_crossattention", "set": {"train": {"lerning_rate": 1.0}}},
                ],
            },
        },
    )
    with raises(
        "'ablation.variants[1].set.train.lerning_rate'", str(path), "did you mean 'ablation.variants[1].set.train.lr'?"
    ):
        load_config(path)
    path = write(
        tmp_path / "configs" / "abl2.yaml",
        {
            "inherit": str(CONFIGS / "pipeline.yaml"),
            "ablation": {"variants": [{"name": "r", "base": "fusion_crossattention", "psuedo": {"rounds": 1}}]},
        },
    )
    with raises("'ablation.variants[0].psuedo'", "did you mean 'ablation.variants[0].pseudo'?"):
        load_config(path)


def test_a_set_override_is_checked_and_named():
    with raises("'folds.kk'", "--set folds.kk=3", "did you mean 'folds.k'?"):
        load_config(CONFIGS / "pipeline.yaml", ["folds.kk=3"])
    with raises("'train.lerning_rate'", "--set train.lerning_rate=0.1", "did you mean 'train.lr'?"):
        load_config(CONFIGS / "models" / "caption_mlp.yaml", ["train.lerning_rate=0.1"])
    # What the tests and the README pass keeps working.
    load_config(
        CONFIGS / "pipeline.yaml",
        [
            "folds.k=3",
            "threshold.trials=20",
            "ensemble.stack.num_threads=1",
            "models=[caption_linear,image_linear,caption_mlp]",
            "train.epochs=4",
            "pseudo.graph=0.5",
            "ratios.models=[fusion_crossattention]",
            "data.unlabelled=somewhere",
        ],
    )


def test_zeroshot_keys_are_grouped(tmp_path):
    path = write(tmp_path / "zs.yaml", {"inherit": str(CONFIGS / "zeroshot.yaml"), "zeroshot": {"epochs": 3}})
    with raises("'zeroshot.epochs'", "did you mean 'zeroshot.train.epochs'?"):
        load_config(path)
    path = write(
        tmp_path / "zs2.yaml",
        {"inherit": str(CONFIGS / "zeroshot.yaml"), "zeroshot": {"caption_encoder": {"max_lenght": 16}}},
    )
    with raises("'zeroshot.caption_encoder.max_lenght'", "did you mean 'zeroshot.caption_encoder.max_len'?"):
        load_config(path)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        validate({"seeed": 1, "folds": {"kk": 2}, "data": 3}, source="inline")
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and all(line.startswith("inline: ") for line in lines)


# -- the shipped configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_checks_and_resolves(path):
    cfg = load_config(path)
    before = copy.deepcopy(cfg)
    assert cfg == load_config(path, validate=False)  # checking adds nothing to the dict runs fingerprint
    resolve(cfg)
    if "kind" in cfg:
        resolve_model(cfg)
    if "zeroshot" in cfg:
        ZeroShotSettings.from_config(cfg)
    assert cfg == before  # resolving never writes into the config


def test_every_model_and_ablation_variant_resolves():
    from capfuse.stages.ablate import variant_configs

    for name in ("ablation", "early_stop"):
        path = CONFIGS / f"{name}.yaml"
        for v in variant_configs(load_config(path), path):
            settings = resolve_model(v["model"])
            assert settings.kind == v["model"]["kind"]


# -- defaults: one home, the schema (tests/test_catalogue.py: no config file restates one) ------


def test_the_schema_lists_the_zeroshot_keys():
    # The schema lists the zeroshot block's keys (the config layer does not import capfuse.zeroshot).
    grouped = [name for names in ZEROSHOT_GROUPS.values() for name in names]
    assert sorted([*ZEROSHOT_KEYS, *grouped]) == sorted(f.name for f in dataclasses.fields(ZeroShotSettings))


def test_resolved_objects_carry_the_documented_defaults():
    net = resolve_model({"kind": "net"})
    assert net.image_encoder.name == "tf_efficientnet_lite0" and net.image_encoder.size == 224
    assert net.caption_encoder.max_len == 24  # the length every net model ran with (not 32)
    assert (net.train.epochs, net.train.batch_size, net.train.lr, net.train.patience) == (30, 128, 2e-3, 4)
    assert net.train.loss_settings.name == "weighted_bce"
    assert net.fusion.d_model == 128 and net.fusion.label_query is None
    assert net.image_head.kwargs() == {"hidden": 256, "dropout": 0.3}
    assert net.finetune_options.loader_threads == 8 and net.device == "cpu" and not net.finetune
    linear = resolve_model({"kind": "linear", "inputs": ["caption"]})
    assert linear.C == 1.0 and linear.inputs == ("caption",) and linear.max_iter == 300
    top = resolve({})
    assert top.seed == 42 and top.folds.k == 5 and top.threshold.trials == 300
    assert top.ratios.models == ("fusion_labelquery",) and top.ensemble.models == "all"
    assert top.pseudo.rounds == 0 and top.data.max_pixels == 50_000_000


def test_resolved_shipped_models_read_their_files():
    def model(name):
        return resolve_model(load_config(CONFIGS / "models" / f"{name}.yaml"))

    assert model("caption_attention_glove").caption_encoder.max_len == 32
    head = model("caption_attention_glove").caption_head
    assert head.kind == "attn" and head.kwargs() == {"hidden": 128, "dropout": 0.3, "queries": 2}
    lq = model("fusion_labelquery").fusion.label_query
    assert lq is not None and lq.caption_tokens and lq.d_model == 128
    assert model("fusion_labelquery_origview").train.patience == 2
    loss = model("fusion_labelquery_origview_asl").train.loss_settings
    assert loss.name == "asl" and model("fusion_labelquery_origview_asl").train.calibrate
    gpu = model("fusion_crossattention_lite2_finetune_gpu")
    assert gpu.finetune and gpu.device == "cuda" and gpu.image_encoder.size == 260 and gpu.train.accumulate == 2
    top = model("fusion_logit_topblock_asl")
    assert top.image_encoder.train_blocks == 1 and top.train.max_steps == 240 and top.train.flip_p == 0.5
    assert model("image_linear").C == 0.005 and model("fusion_linear_multilevel").tfidf == {"ngram_max": 2, "min_df": 2}
