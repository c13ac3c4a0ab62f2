"""The config catalogue: every model config is used, named by the scheme, read through at most
two files, commented without figures or history, and printed resolved by ``capfuse config``;
defaults live in the schema only, and a run's fingerprint hashes the resolved config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import capfuse.training.cv as trainer_mod
from capfuse.cli import main
from capfuse.config import deep_merge, load_config, resolve, resolve_config_path, resolve_model
from capfuse.config.catalogue import (
    CLASSIFIERS,
    INPUTS,
    MODIFIERS,
    NAME_SCHEME,
    catalogue,
    catalogue_markdown,
    inherit_chain,
    model_paths,
    name_problem,
    preset_paths,
    users,
)
from capfuse.config.show import settings_dict
from capfuse.training.cv import train_model
from capfuse.training.fingerprint import fingerprint_config, run_fingerprint
from capfuse.utils.runs import FINGERPRINT_SCHEME

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
MODELS = model_paths(CONFIGS)
PRESETS = preset_paths(CONFIGS)


def _preset_models() -> list[str]:
    return sorted({m for path in PRESETS.values() for m in resolve(load_config(path)).models})


# -- the catalogue holds what is used, and nothing else -----------------------------------------


def test_every_model_config_is_used_by_a_preset_an_ablation_or_a_test():
    used = users(CONFIGS)
    tests = [p.read_text() for p in (REPO / "tests").glob("*.py") if p.name != Path(__file__).name]
    unused = [
        name
        for name in MODELS
        if name not in used and not any(re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", t) for t in tests)
    ]
    assert not unused, f"model configs no preset, ablation file or test uses: {unused}"


def test_the_usage_scan_sees_presets_and_ablation_rows():
    used = users(CONFIGS)
    assert "preset default" in used["fusion_logit_topblock_asl"] and "preset fast" in used["fusion_logit_origview"]
    # An ablation row's base counts: image_mlp is the base of derived rows only in image_features.
    assert "ablation image_features.yaml" in used["image_mlp"]
    assert "fusion_crossattention_lite2_finetune_gpu" not in used  # a test uses it, no preset


def test_every_preset_model_has_a_config_and_the_catalogue_lists_it():
    listed = {e.name: e for e in catalogue(CONFIGS)}
    for name in _preset_models():
        assert name in listed, name
        assert any(u.startswith("preset ") for u in listed[name].used_by)
        assert listed[name].description and not listed[name].description.endswith(","), name
    table = catalogue_markdown(CONFIGS)
    assert table.count("\n") == len(MODELS) + 2
    assert "| `caption_linear` | linear | caption |" in table


# -- at most two files to read, no setting switched back and forth --------------------------------


def _leaves(tree: dict, path: tuple = ()) -> dict[tuple, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("loss",):
            out.update(_leaves(value, path + (key,)))
        else:
            out[path + (key,)] = value
    return out


def _switches(chain: list[Path], default: dict) -> dict[tuple, list]:
    """Keys whose value, from the schema's default through each file (root first), returns to an
    earlier value after another."""
    values: dict[tuple, list] = {}
    for path in reversed(chain):
        raw = yaml.safe_load(path.read_text()) or {}
        raw.pop("inherit", None)
        for key, value in _leaves(raw).items():
            seq = values.setdefault(key, [default.get(key, object())])
            if seq[-1] != value:
                seq.append(value)
    return {key: seq for key, seq in values.items() if len(seq) != len({json.dumps(v, default=str) for v in seq})}


@pytest.mark.parametrize("name", _preset_models())
def test_a_preset_model_reads_at_most_three_files_and_switches_nothing_back(name):
    chain = inherit_chain(MODELS[name])
    assert len(chain) - 1 <= 2, f"{name}: {len(chain) - 1} inherit hops: {[p.name for p in chain]}"
    kind = resolve_model(load_config(MODELS[name])).kind
    default = _leaves(settings_dict(resolve_model({"kind": kind})))
    assert not _switches(chain, default), name


def test_the_switch_check_sees_a_value_that_returns(tmp_path):
    models = tmp_path / "configs" / "models"
    models.mkdir(parents=True)
    (models / "a.yaml").write_text("kind: net\ntrain: {flip_p: 0.0}\n")
    (models / "b.yaml").write_text("inherit: models/a\ntrain: {flip_p: 0.5}\n")
    chain = inherit_chain(models / "b.yaml")
    default = _leaves(settings_dict(resolve_model({"kind": "net"})))
    assert list(_switches(chain, default)) == [("train", "flip_p")]


# -- comments say why: no figures, dates or history ---------------------------------------------


def comment_of(line: str) -> str:
    """The comment of a YAML line: from the first ``#`` outside quotes that starts a comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[i + 1 :]
    return ""


FIGURE = re.compile(r"\d\.\d")
DATE = re.compile(r"\b(19|20)\d\d-\d\d(-\d\d)?\b")
HISTORY = re.compile(r"\b(was|were|before|previously|formerly|used to|no longer|anymore|until now)\b", re.I)


def test_the_comment_reader_tells_comments_from_values():
    assert comment_of("lr: 0.002") == ""
    assert FIGURE.search(comment_of("lr: 0.002   # CV 0.85 against 0.84"))
    assert comment_of('change: "a # 0.5 in a string"') == ""
    assert comment_of("prompts: ['a {name}.']  # why") == " why"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_no_figure_date_or_history_in_a_yaml_comment(path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        comment = comment_of(line)
        where = f"{path.relative_to(REPO)}:{number}: {comment.strip()}"
        assert not FIGURE.search(comment), f"a figure in a comment: {where}"
        assert not DATE.search(comment), f"a date in a comment: {where}"
        assert not HISTORY.search(comment), f"history in a comment: {where}"


# -- one naming scheme, documented ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_name_follows_the_scheme(name):
    assert name_problem(name) is None, name_problem(name)


def test_the_scheme_refuses_history_names():
    for bad in ("fused_lr", "fusion_lq_orig", "img_top1_ml", "fusion_logit_pseudo_asl", "fusion_logit_top1"):
        assert name_problem(bad) is not None, bad
    assert name_problem("fusion_logit_multilevel_origview_asl_pseudo") is None


def test_the_readme_documents_the_scheme_and_every_word():
    readme = (CONFIGS / "models" / "README.md").read_text()
    assert NAME_SCHEME in readme
    for word in [*INPUTS, *CLASSIFIERS, *(w for group in MODIFIERS for w in group)]:
        assert f"`{word}`" in readme, word


# -- defaults live in the schema only ------------------------------------------------------------


def _get(tree: dict, path: tuple):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _parents(path: Path) -> dict:
    """What the files ``path`` inherits from give, merged."""
    raw = yaml.safe_load(path.read_text()) or {}
    parents = raw.get("inherit") or []
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = deep_merge(merged, load_config(resolve_config_path(parent, relative_to=path), validate=False))
    return merged


def _restated(stated: dict, default: dict, parents: dict | None = None, path: tuple = ()) -> list[str]:
    """Keys ``stated`` at their schema default, other than to undo a parent's other value."""
    out = []
    for key, value in stated.items():
        if key not in default:
            continue
        here = path + (key,)
        if isinstance(value, dict) and isinstance(default[key], dict):
            out += _restated(value, default[key], parents, here)
        elif json.dumps(value) == json.dumps(default[key]) or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and value == default[key]
        ):
            if _get(parents or {}, here) in (None, value):
                out.append(".".join(here))
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_model_file_states_no_schema_default(name):
    raw = yaml.safe_load(MODELS[name].read_text())
    raw.pop("inherit", None)
    kind = resolve_model(load_config(MODELS[name])).kind
    default = settings_dict(resolve_model({"kind": kind}))
    # kind and inputs say what the model is; a component's options (loss, head) are as given.
    stated = {k: v for k, v in raw.items() if k not in ("kind", "inputs")}
    restated = _restated(stated, default, _parents(MODELS[name]))
    assert not restated, f"{name} restates schema defaults: {restated}"


def test_pipeline_and_zeroshot_files_state_no_schema_default():
    from capfuse.zeroshot import ZeroShotSettings

    for name in ("pipeline.yaml", "zeroshot.yaml", *(f"presets/{p}.yaml" for p in PRESETS)):
        raw = yaml.safe_load((CONFIGS / name).read_text()) or {}
        raw.pop("inherit", None)
        zeroshot = raw.pop("zeroshot", None) or {}
        assert not _restated(raw, settings_dict(resolve({})), _parents(CONFIGS / name)), name
        flat = {k: v for k, v in zeroshot.items() if not isinstance(v, dict)}
        for group in ("projector", "loss", "train", "eval"):
            flat.update(zeroshot.get(group) or {})
        assert not _restated(flat, settings_dict(ZeroShotSettings())), name


# -- capfuse config show / list ------------------------------------------------------------------


def _show(capsys, *argv) -> str:
    assert main(["config", "show", *argv, "--configs", str(CONFIGS)]) == 0
    return capsys.readouterr().out


def _origins(text: str) -> dict[str, str]:
    """``key`` (dotted) -> origin, for every value line of ``capfuse config show``."""
    out, stack = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "- ")):
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        key = line.strip().split(":", 1)[0]
        stack[depth:] = [key]
        if "  # from " in line:
            out[".".join(stack)] = line.rsplit("  # from ", 1)[1]
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_show_prints_every_resolved_value_of_a_model(capsys, name):
    text = _show(capsys, name)
    expected = settings_dict(resolve_model({**load_config(MODELS[name]), "name": name}))
    assert yaml.safe_load(text) == expected  # every value, as resolved, the defaults included
    origins = _origins(text)
    assert origins and all(o == "default" or o.endswith(".yaml") for o in origins.values())
    assert origins["kind"].endswith(".yaml") and origins["pseudo_round"] == "default"


def test_config_show_names_the_file_the_override_and_the_default(capsys):
    origins = _origins(_show(capsys, "fusion_labelquery_origview_asl", "--set", "train.lr=0.01"))
    assert origins["fusion.label_query.caption_tokens"].endswith("configs/models/fusion_labelquery.yaml")
    assert origins["train.patience"].endswith("configs/models/fusion_labelquery_origview.yaml")
    assert origins["train.loss.name"].endswith("configs/models/fusion_labelquery_origview_asl.yaml")
    assert origins["train.lr"] == "--set train.lr=0.01"
    assert origins["train.epochs"] == origins["image_encoder.size"] == "default"
    head = _origins(_show(capsys, "caption_attention_glove"))
    assert head["caption_head.options.queries"].endswith("caption_attention_glove.yaml")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_show_resolves_every_preset_and_its_models(capsys, preset):
    text = _show(capsys, preset)
    printed = yaml.safe_load(text)
    cfg = load_config(PRESETS[preset])
    assert printed["models"] == list(resolve(cfg).models)
    assert set(printed["model_settings"]) == set(resolve(cfg).models)
    origins = _origins(text)
    assert origins["folds.k"] == "default" and origins["models"].endswith(".yaml")


def test_config_show_takes_a_path_and_refuses_an_unknown_name(capsys, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(f"inherit: {MODELS['caption_linear']}\nC: 2.0\n")
    origins = _origins(_show(capsys, str(path)))
    assert origins["C"].endswith("mine.yaml") and origins["tfidf.ngram_max"].endswith("caption_linear.yaml")
    assert main(["config", "show", "fused_lr", "--configs", str(CONFIGS)]) == 2


def test_config_list_prints_every_model(capsys):
    assert main(["config", "list", "--configs", str(CONFIGS)]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^{name}\s", out, re.M) for name in MODELS)
    assert main(["config", "list", "--markdown", "--configs", str(CONFIGS)]) == 0
    assert capsys.readouterr().out == catalogue_markdown(CONFIGS)


# -- run fingerprints hash the resolved config ---------------------------------------------------

NET = {"kind": "net", "inputs": ["caption"], "seed": 3}


def test_a_default_written_out_keeps_the_fingerprint_and_a_change_does_not():
    folds = np.arange(10) % 2
    fp = run_fingerprint(NET, "data", folds)
    explicit = {
        **NET,
        "train": {"lr": 0.002, "epochs": 30, "loss": {"name": "weighted_bce"}},
        "pseudo": {"ramp_epochs": 5},
    }
    assert run_fingerprint(explicit, "data", folds) == fp
    assert run_fingerprint({**NET, "data": {"workers": 2, "unlabelled": "elsewhere"}}, "data", folds) == fp
    assert run_fingerprint({**NET, "train": {"lr": 0.003}}, "data", folds) != fp
    assert run_fingerprint({**NET, "folds": {"k": 3}}, "data", folds) != fp
    assert run_fingerprint({**NET, "data": {"max_pixels": 10}}, "data", folds) != fp
    assert run_fingerprint(NET, "other data", folds) != fp
    assert fingerprint_config(NET)["model"]["train"]["lr"] == 0.002


C, N, N_TEST, K = 3, 40, 8, 2
LINEAR = {"kind": "linear", "inputs": ["image"], "seed": 3, "C": 0.5}


@pytest.fixture
def synthetic(monkeypatch):
    """Features a linear model learns in a second, with K folds, as ``train_model`` takes them."""
    monkeypatch.setattr(trainer_mod, "light_report", lambda cfg, params, ms=0.0: {})
    rng = np.random.default_rng(0)
    Y = (rng.random((N + N_TEST, C)) < 0.4).astype(np.uint8)
    Y[Y.sum(1) == 0, 0] = 1
    x = (Y @ rng.normal(size=(C, 4)) + rng.normal(scale=0.5, size=(N + N_TEST, 4))).astype(np.float32)
    feats = {"image_train": x[:N], "image_test": x[N:], "n_test": N_TEST}
    return dict(
        train_ids=[f"{i}.jpg" for i in range(N)],
        test_ids=[f"t{i}.jpg" for i in range(N_TEST)],
        Y=Y[:N],
        folds=np.arange(N) % K,
        class_ids=list(range(1, C + 1)),
        feats=feats,
        data_fingerprint="synthetic",
    )


def _trained_folds(out: Path) -> list[int]:
    return [json.loads(line)["fold"] for line in (out / "log.jsonl").read_text().splitlines() if line]


def test_a_run_with_a_default_written_out_is_not_retrained(tmp_path, synthetic):
    out = tmp_path / "runs" / "tiny" / "image_linear"
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    assert json.loads((out / "fingerprint.json").read_text())["scheme"] == FINGERPRINT_SCHEME
    train_model("image_linear", {**LINEAR, "max_iter": 300, "solver": "joint"}, out_dir=out, **synthetic)
    assert _trained_folds(out) == [0, 1]  # both folds skipped the second time
    train_model("image_linear", {**LINEAR, "C": 0.25}, out_dir=out, **synthetic)
    assert _trained_folds(out) == [0, 1]  # a changed value starts over: a new log


def test_a_run_folder_of_the_raw_scheme_is_retrained_once_with_a_message(tmp_path, synthetic, caplog):
    out = tmp_path / "runs" / "tiny" / "image_linear"
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    record = json.loads((out / "fingerprint.json").read_text())
    # As the raw scheme wrote it: another fingerprint, and no scheme key.
    (out / "fingerprint.json").write_text(json.dumps({"capfuse": 1, "fingerprint": "a" * 64}))
    caplog.set_level("INFO", logger="capfuse")
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    said = [r.getMessage() for r in caplog.records if "retraining it once" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and "resolved config" in said[0]
    assert json.loads((out / "fingerprint.json").read_text()) == record  # the resolved scheme's, as before
    caplog.clear()
    train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    assert not [r for r in caplog.records if "retraining" in r.getMessage()]  # once only
    assert _trained_folds(out) == [0, 1]


def test_a_folder_capfuse_did_not_write_is_kept_under_the_new_scheme(tmp_path, synthetic):
    out = tmp_path / "runs" / "tiny" / "image_linear"
    out.mkdir(parents=True)
    (out / "precious.txt").write_text("the user's")
    with pytest.raises(ValueError, match="not written by capfuse"):
        train_model("image_linear", LINEAR, out_dir=out, **synthetic)
    assert (out / "precious.txt").read_text() == "the user's"
