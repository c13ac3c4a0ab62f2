"""Config values are checked where they load: each bad value is one line naming its file, its
dotted key, the value as given and what is allowed; good edge values pass; overrides and YAML
that do not parse are one-line errors; the CLI prints them and exits 2 without a traceback."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# The modules that define losses, heads, TF-IDF and the stacker register their parameters with
# the check as they load (as every command that builds them does before reading its config).
import capfuse.ensemble.second_level  # noqa: F401
import capfuse.features.tfidf  # noqa: F401
import capfuse.nn.fusion  # noqa: F401
from capfuse.config import ConfigError, load_config, resolve, resolve_checked, resolve_model, validate
from capfuse.config.model_blocks import IMAGE_BACKENDS, PRECISIONS, TEXT_WEIGHTS
from capfuse.config.pipeline_blocks import CLASS_NAMES
from capfuse.config.schema import PROJECTOR_KINDS

REPO = Path(__file__).resolve().parents[1]

# (YAML as a user writes it, the dotted key, the value as read, what the line says is allowed).
# Each config is a whole file: a model kind where the block belongs to a model.
BAD = [
    # data
    ('data: {strict: "false"}', "data.strict", "'false'", "must be true or false"),
    ("data: {workers: 0}", "data.workers", "0", "must be an integer >= 1"),
    ("data: {max_pixels: 0}", "data.max_pixels", "0", "must be an integer >= 1"),
    ("data: {class_names: names}", "data.class_names", "'names'", "must be 'auto', 'discover' or 'numbers'"),
    # folds
    ("folds: {k: 2.9}", "folds.k", "2.9", "must be an integer >= 2"),
    ("folds: {k: 1}", "folds.k", "1", "must be an integer >= 2"),
    ("folds: {seed: -1}", "folds.seed", "-1", "must be an integer in [0, 4294967296)"),
    # threshold
    ("threshold: {per_class: Auto}", "threshold.per_class", "'Auto'", "must be true, false or 'auto'"),
    ("threshold: {trials: -5}", "threshold.trials", "-5", "must be an integer >= 1"),
    ("threshold: {max_labels: 0}", "threshold.max_labels", "0", "must be null or an integer >= 1"),
    ("threshold: {min_labels: 3, max_labels: 2}", "threshold.max_labels", "2", "must be null or >= min_labels (3)"),
    # ensemble
    ("ensemble: {rounds: first}", "ensemble.rounds", "'first'", "must be 'all' or 'last'"),
    (
        "ensemble: {candidates: [stack, vote]}",
        "ensemble.candidates[1]",
        "'vote'",
        "must be 'best_single', 'mean_blend', 'weighted_blend' or 'stack'",
    ),
    ("ensemble: {models: fusion}", "ensemble.models", "'fusion'", "must be 'all' or a list, each a non-empty string"),
    # pseudo
    ("pseudo: {scores: probs}", "pseudo.scores", "'probs'", "must be 'logits' or 'align'"),
    ("pseudo: {pos_keep: 0}", "pseudo.pos_keep", "0", "must be a number in (0, 1]"),
    ("pseudo: {graph: 1.5}", "pseudo.graph", "1.5", "must be a number in [0, 1]"),
    ("pseudo: {rounds: -1}", "pseudo.rounds", "-1", "must be an integer >= 0"),
    # ratios
    ("ratios: {percents: [5, 200]}", "ratios.percents[1]", "200", "must be a number in (0, 100]"),
    ("ratios: {pseudo_rounds: 1.5}", "ratios.pseudo_rounds", "1.5", "must be an integer >= 0"),
    # image_encoder
    ("kind: net\nimage_encoder: {size: 0}", "image_encoder.size", "0", "must be null or an integer >= 1"),
    (
        "kind: net\nimage_encoder: {backend: tensorrt}",
        "image_encoder.backend",
        "'tensorrt'",
        "must be 'onnx', 'openvino' or 'torch'",
    ),
    ("kind: net\nimage_encoder: {precision: fp16}", "image_encoder.precision", "'fp16'", "must be 'fp32' or 'int8'"),
    ("kind: net\nimage_encoder: {pooling: max}", "image_encoder.pooling", "'max'", "must be 'mean' or 'multilevel'"),
    ("kind: linear\nimage_encoder: {train_blocks: -1}", "image_encoder.train_blocks", "-1", "must be an integer >= 0"),
    # caption_encoder
    ("kind: net\ncaption_encoder: {max_len: 0}", "caption_encoder.max_len", "0", "must be an integer >= 1"),
    (
        "kind: net\ncaption_encoder: {backend: openvino}",
        "caption_encoder.backend",
        "'openvino'",
        "must be 'onnx' or 'torch'",
    ),
    # heads, and a head's own parameters typed by its signature
    ("kind: net\nimage_head: {dropout: 1.0}", "image_head.dropout", "1.0", "must be a number in [0, 1)"),
    ("kind: net\ncaption_head: {kind: attn, queries: two}", "caption_head.queries", "'two'", "must be an integer"),
    (
        "kind: net\ncaption_head: {kind: attn, hidden: 100, heads: 3}",
        "caption_head.heads",
        "3",
        "must divide hidden (100)",
    ),
    # fusion and label_query
    ("kind: net\nfusion: {d_model: 100, heads: 3}", "fusion.heads", "3", "must divide d_model (100)"),
    (
        "kind: net\nfusion: {label_query: yes please}",
        "fusion.label_query",
        "'yes please'",
        "must be true, false or a mapping",
    ),
    (
        "kind: net\nfusion: {label_query: {temperature: 0}}",
        "fusion.label_query.temperature",
        "0",
        "must be a number > 0",
    ),
    # aux
    ("kind: net\naux: {align_on: negatives}", "aux.align_on", "'negatives'", "must be 'positives' or 'all'"),
    ("kind: net\naux: {n_contexts: 1}", "aux.n_contexts", "1", "must be an integer >= 2"),
    # train
    ("kind: net\ntrain: {lr: abc}", "train.lr", "'abc'", "must be a number > 0"),
    ('kind: net\ntrain: {tta: "false"}', "train.tta", "'false'", "must be true or false"),
    ("kind: net\ntrain: {patience: -1}", "train.patience", "-1", "must be an integer >= 0"),
    ("kind: net\ntrain: {batch_size: 0}", "train.batch_size", "0", "must be an integer >= 1"),
    ("kind: net\ntrain: {epochs: 0}", "train.epochs", "0", "must be an integer >= 1"),
    ("kind: net\ntrain: {early_stop: heldout}", "train.early_stop", "'heldout'", "must be 'inner', 'refit' or 'none'"),
    ("kind: net\ntrain: {inner_frac: 0.5}", "train.inner_frac", "0.5", "must be a number in (0, 0.5)"),
    ("kind: net\ntrain: {flip_p: 2}", "train.flip_p", "2", "must be a number in [0, 1]"),
    (
        "kind: net\ntrain: {calibrate: true, early_stop: refit}",
        "train.calibrate",
        "True",
        "needs early_stop: inner (it fits on the inner stopping rows, which early_stop: refit trains on)",
    ),
    ("kind: net\ntrain: {loss: {name: asl, gamma_neg: four}}", "train.loss.gamma_neg", "'four'", "must be a number"),
    # finetune_options
    (
        "kind: net\nfinetune_options: {layer_decay: 0}",
        "finetune_options.layer_decay",
        "0",
        "must be a number in (0, 1]",
    ),
    ("kind: net\nfinetune_options: {prefetch: -1}", "finetune_options.prefetch", "-1", "must be an integer >= 0"),
    # the model kinds
    ("kind: net\ndevice: gpu", "device", "'gpu'", "must be 'cpu', 'cuda', 'cuda:<n>' or 'mps'"),
    ("kind: net\ninputs: [image, text]", "inputs[1]", "'text'", "must be 'image' or 'caption'"),
    ("kind: linear\nsolver: saga", "solver", "'saga'", "must be 'joint' or 'ovr'"),
    ("kind: linear\nC: 0", "C", "0", "must be a number > 0"),
    ("kind: linear\nmax_iter: 0", "max_iter", "0", "must be an integer >= 1"),
    # zeroshot
    ("zeroshot: {projector: {kind: conv}}", "zeroshot.projector.kind", "'conv'", "must be 'linear' or 'mlp'"),
    ("zeroshot: {train: {batch_size: 1}}", "zeroshot.train.batch_size", "1", "must be an integer >= 2"),
    ("zeroshot: {prompts: [a photo]}", "zeroshot.prompts[0]", "'a photo'", "must be a string holding {name}"),
    (
        "zeroshot: {eval: {eval_folds: some}}",
        "zeroshot.eval.eval_folds",
        "'some'",
        "must be 'all' or a list, each an integer >= 0",
    ),
    # ablation variants: a variant's `set` and `pseudo` are checked like the blocks they change
    (
        "ablation: {variants: [{name: x, base: y, set: {train: {lr: -1}}}]}",
        "ablation.variants[0].set.train.lr",
        "-1",
        "must be a number > 0",
    ),
    (
        "ablation: {variants: [{name: x, pseudo: {rounds: two}}]}",
        "ablation.variants[0].pseudo.rounds",
        "'two'",
        "must be an integer >= 0",
    ),
    ("ablation: {second_level: 1}", "ablation.second_level", "1", "must be true or false"),
    # model keys at the top of a pipeline, the defaults of its models, are checked as well
    ("models: [a]\ntrain: {max_steps: -3}", "train.max_steps", "-3", "must be an integer >= 0"),
]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def message(exc: pytest.ExceptionInfo) -> list[str]:
    return str(exc.value).splitlines()


@pytest.mark.parametrize(("text", "key", "value", "allowed"), BAD, ids=[f"{row[1]}={row[2]}" for row in BAD])
def test_a_bad_value_is_one_line_with_its_file_key_and_the_allowed_values(tmp_path, text, key, value, allowed):
    path = write(tmp_path / "bad.yaml", text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message(info) == [f"{path}: {key} = {value}: {allowed}"]


def test_there_are_at_least_thirty_bad_values_across_every_block():
    assert len(BAD) >= 30
    blocks = {row[1].split(".")[0].split("[")[0] for row in BAD}
    every = {
        "data", "folds", "threshold", "ensemble", "pseudo", "ratios", "image_encoder", "caption_encoder",
        "image_head", "caption_head", "fusion", "aux", "train", "finetune_options", "solver", "zeroshot", "ablation",
    }  # fmt: skip
    assert every <= blocks


def test_a_set_override_with_a_bad_value_names_the_override():
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "configs" / "pipeline.yaml", ["train.lr=abc"])
    assert message(info) == ["--set train.lr=abc: train.lr = 'abc': must be a number > 0"]


def test_a_bad_value_is_blamed_on_the_file_that_set_it(tmp_path):
    parent = write(tmp_path / "configs" / "parent.yaml", "folds: {k: 1}\n")
    child = write(tmp_path / "configs" / "child.yaml", "inherit: parent\nthreshold: {trials: 5}\n")
    with pytest.raises(ConfigError) as info:
        load_config(child)
    assert message(info) == [f"{parent}: folds.k = 1: must be an integer >= 2"]


def test_every_problem_of_a_config_is_listed_at_once():
    cfg = {"kind": "net", "train": {"lr": "abc", "patience": -1, "lerning_rate": 1}, "folds": {"k": 2.9}}
    with pytest.raises(ConfigError) as info:
        validate(cfg, source="mine.yaml")
    lines = message(info)
    assert len(lines) == 4 and all(line.startswith("mine.yaml: ") for line in lines)
    assert {line.split(" ")[1] for line in lines} == {"train.lr", "train.patience", "folds.k", "unknown"}


def test_a_model_built_in_code_is_checked_too():
    with pytest.raises(ConfigError) as info:
        resolve_checked({"train": {"batch_size": 0}}, kind="net")
    assert message(info) == ["model config: train.batch_size = 0: must be an integer >= 1"]
    with pytest.raises(ConfigError, match=r"folds\.k = 2\.9"):
        resolve({"folds": {"k": 2.9}})
    with pytest.raises(ConfigError, match=r"solver = 'saga'"):
        resolve_model({"kind": "linear", "solver": "saga"})


# -- good values ---------------------------------------------------------------------------------


def test_good_edge_values_pass_and_keep_their_meaning(tmp_path):
    path = write(
        tmp_path / "edge.yaml",
        "threshold: {max_labels: null, per_class: auto, min_labels: 0}\n"
        "ensemble: {models: [a, b], candidates: [stack]}\n"
        "folds: {k: 2}\n"
        "ratios: {percents: [100]}\n"
        "pseudo: {pos_keep: 1, graph: 0}\n",
    )
    top = resolve(load_config(path))
    assert top.threshold.max_labels is None and top.threshold.per_class == "auto" and top.threshold.min_labels == 0
    assert top.ensemble.models == ("a", "b") and top.ensemble.candidates == ("stack",)
    assert top.ratios.percents == (100.0,) and top.pseudo.pos_keep == 1
    for per_class in (True, False):
        assert resolve({"threshold": {"per_class": per_class}}).threshold.per_class is per_class
    net = resolve_model(
        {
            "kind": "net",
            "train": {"lr": 1, "patience": 0, "max_steps": 0, "early_stop": "none", "loss": {"name": "asl", "clip": 0}},
            "image_encoder": {"size": None},
            "fusion": {"label_query": True},
            "device": "cuda:1",
            "inputs": ["caption"],
        }
    )
    assert net.train.lr == 1.0 and isinstance(net.train.lr, float)  # an integer where a number is asked
    assert net.image_encoder.size is None and net.fusion.label_query is not None and net.inputs == ("caption",)
    assert resolve_model({"kind": "net", "fusion": {"label_query": {"enabled": False}}}).fusion.label_query is None
    assert resolve_model({"kind": "net", "fusion": {"label_query": False}}).fusion.label_query is None


def test_an_empty_block_means_its_defaults(tmp_path):
    path = write(tmp_path / "empty.yaml", "data:\nfolds:\nkind: net\ntrain:\nimage_head:\n")
    cfg = load_config(path)
    assert resolve(cfg).folds.k == 5 and resolve_model(cfg).train.lr == 2e-3


def test_a_parameter_block_registered_by_its_function_is_typed_by_its_signature(monkeypatch):
    from capfuse.config import check
    from capfuse.features.tfidf import fit_tfidf

    monkeypatch.setattr(check, "_PARAMETERS", dict(check._PARAMETERS))
    monkeypatch.setattr(check, "_PARAMETER_TYPES", dict(check._PARAMETER_TYPES))
    check.register_parameters("tfidf", fit_tfidf)
    validate({"kind": "linear", "tfidf": {"min_df": 1, "max_features": None}})
    with pytest.raises(ConfigError) as info:
        validate({"kind": "linear", "tfidf": {"min_df": "two", "ngram_max": 2.5}}, source="lin.yaml")
    assert sorted(message(info)) == [
        "lin.yaml: tfidf.min_df = 'two': must be an integer",
        "lin.yaml: tfidf.ngram_max = 2.5: must be an integer",
    ]


def test_resolved_settings_are_plain_dataclasses():
    net = resolve_model({"kind": "net", "caption_head": {"kind": "attn", "queries": 2}, "fusion": {"label_query": {}}})
    plain = dataclasses.asdict(net)  # what run fingerprints hash
    assert plain["caption_head"] == {"kind": "attn", "hidden": 256, "dropout": 0.3, "options": {"queries": 2}}
    assert plain["train"]["loss"] == {"name": "weighted_bce"} and plain["inputs"] == ("image", "caption")
    assert dataclasses.asdict(resolve_model({"kind": "net"})) == dataclasses.asdict(type(net)())  # defaults: one home
    assert hash(net.image_encoder.cache_spec()) == hash(resolve_model({"kind": "linear"}).image_encoder.cache_spec())
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.train.lr = 1.0  # type: ignore[misc]


def test_the_config_layers_lists_of_names_match_their_homes():
    # The config layer cannot import the layers that define these names; it restates them.
    from capfuse.data.names import NAME_MODES
    from capfuse.encoders.runtime import BACKENDS
    from capfuse.encoders.runtime import PRECISIONS as RUNTIME_PRECISIONS
    from capfuse.encoders.text import WEIGHTS
    from capfuse.zeroshot.settings import PROJECTOR_KINDS as ZEROSHOT_PROJECTORS

    assert CLASS_NAMES == NAME_MODES and IMAGE_BACKENDS == BACKENDS and PRECISIONS == RUNTIME_PRECISIONS
    assert TEXT_WEIGHTS == WEIGHTS and PROJECTOR_KINDS == ZEROSHOT_PROJECTORS


# -- what does not parse --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("key=[", "--set key=[: the value '[' is not valid YAML: "),
        ("=3", "--set =3: the key must be names joined by dots, like train.lr"),
        ("a..b=1", "--set a..b=1: the key must be names joined by dots, like train.lr"),
        ("train.lr", "--set train.lr: an override must look like key.sub=value"),
        ("seed.x=1", "--set seed.x=1: 'seed' is not a mapping, it holds 42"),
    ],
)
def test_an_override_that_does_not_parse_is_one_line(tmp_path, override, says):
    path = write(tmp_path / "top.yaml", "seed: 42\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert len(message(info)) == 1 and message(info)[0].startswith(says)


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    path = write(tmp_path / "broken.yaml", "folds:\n  k: 3\ntrain: {lr: [1, 2}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = message(info)
    assert line.startswith(f"{path}:3:") and "invalid YAML" in line
    # PyYAML's own multi-line text does not come through as it is.
    assert 'in "' not in line and "^" not in line


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("train.lr=abc", "--set train.lr=abc: train.lr = 'abc': must be a number > 0"),
        ("key=[", "--set key=[: the value '[' is not valid YAML"),
    ],
)
def test_the_cli_prints_one_line_and_exits_2(tmp_path, override, says):
    run = subprocess.run(
        [sys.executable, "-m", "capfuse.cli", "folds", "--data", str(tmp_path / "data"), "--root", str(tmp_path)]
        + ["--config", str(REPO / "configs" / "pipeline.yaml"), "--set", override],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert run.returncode == 2
    output = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert len(output) == 1 and says in output[0] and "ERROR" in output[0]
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "runs").exists()  # stopped before touching anything


def test_shipped_configs_still_load_with_their_values_checked():
    shipped = sorted((REPO / "configs").rglob("*.yaml"))
    assert shipped
    for path in shipped:
        cfg = load_config(path)
        resolve(cfg)
        if "kind" in cfg:
            resolve_model(cfg)
        yaml.safe_dump(cfg)  # still a plain tree: nothing typed written into it
