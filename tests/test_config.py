"""Config inheritance, overrides and the registry's errors."""

from pathlib import Path

import pytest

from capfuse.config import ConfigError, apply_override, load_config
from capfuse.utils.registry import Registry

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_overrides_parent_and_dicts_merge(tmp_path):
    root = tmp_path / "configs"
    write(root / "default.yaml", "seed: 1\nfolds: {k: 5, seed: 42}\nlist: [1, 2]\n")
    child = write(root / "models" / "m.yaml", "inherit: default\nfolds: {k: 3}\nlist: [9]\n")
    cfg = load_config(child, validate=False)  # the inheritance rules alone, on made-up keys
    assert cfg == {"seed": 1, "folds": {"k": 3, "seed": 42}, "list": [9]}


def test_overrides_parse_yaml_values(tmp_path):
    path = write(tmp_path / "c.yaml", "a: {b: 1}\n")
    cfg = load_config(path, ["a.b=0.5", "a.c=[1, 2]", "flag=true"], validate=False)
    assert cfg == {"a": {"b": 0.5, "c": [1, 2]}, "flag": True}
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_override(cfg, "nonsense")


def test_inheritance_loop_and_missing_parent_are_clear_errors(tmp_path):
    root = tmp_path / "configs"
    write(root / "a.yaml", "inherit: b\n")
    write(root / "b.yaml", "inherit: a\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(root / "a.yaml")
    write(root / "c.yaml", "inherit: nowhere\n")
    with pytest.raises(ConfigError, match="nowhere"):
        load_config(root / "c.yaml")


def test_shipped_configs_resolve():
    from capfuse.training.selection import model_configs

    path = REPO / "configs" / "pipeline.yaml"
    models = model_configs(load_config(path, ["folds.k=3"]), path)
    assert set(models) >= {"caption_linear", "fusion_linear_multilevel", "fusion_labelquery_origview_asl"}
    for name, cfg in models.items():
        assert cfg["name"] == name
        assert cfg["kind"]
        assert cfg["folds"]["k"] == 3  # pipeline-wide settings flow into every model


def test_registry_rejects_duplicates_and_names_known_items():
    reg = Registry("thing")

    @reg.register("a")
    def make_a(x=1):
        return ("a", x)

    assert reg.create("a", x=2) == ("a", 2)
    with pytest.raises(KeyError, match="registered twice"):
        reg.register("a")(make_a)
    with pytest.raises(KeyError, match="registered: a"):
        reg.get("b")
