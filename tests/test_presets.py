"""The presets (`make all PRESET=fast|default|best`): each is a config that loads, and says what it promises."""

import subprocess
from pathlib import Path

import pytest

from capfuse.config import load_config
from capfuse.config.schema import resolve_model
from capfuse.features.store import flip_views
from capfuse.training.selection import select_models

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "configs" / "presets"


def models_of(preset: str) -> dict[str, dict]:
    path = PRESETS / f"{preset}.yaml"
    return select_models(load_config(path), path)


def test_the_three_presets_exist_and_every_model_resolves():
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == ["best", "default", "fast"]
    for preset in ("fast", "default", "best"):
        assert models_of(preset), preset


def test_default_preset_is_the_pipeline():
    # `make all` and `make all PRESET=default` must train the same models under the same fingerprints.
    pipeline = REPO / "configs" / "pipeline.yaml"
    assert models_of("default") == select_models(load_config(pipeline), pipeline)


def test_fast_preset_needs_one_view_of_one_backbone():
    # Its time budget holds because one backbone pass feeds every image model.
    models = models_of("fast")
    settings = [resolve_model(m) for m in models.values()]
    encoders = {s.image_encoder.cache_spec() for s in settings if "image" in s.inputs}
    assert len(encoders) == 1
    assert all(flip_views(m) == ("orig",) for m in models.values())


def test_fast_preset_trains_no_attention_over_token_grids():
    # Attention over 16 image tokens costs ~0.5 s a 512-row step on two cores: 6-7 minutes a
    # 24,000-row fold, which the 20-minute budget cannot hold. Pooled vectors train in seconds.
    nets = {name: resolve_model(m) for name, m in models_of("fast").items() if resolve_model(m).kind == "net"}
    assert nets, "the fast preset has a net model"
    for name, s in nets.items():
        assert not s.fusion.cross_attention and s.fusion.label_query is None, name
        assert s.image_head.kind == "mlp" and s.caption_head.kind == "mlp", name


def test_best_preset_adds_to_the_default():
    best, default = models_of("best"), models_of("default")
    assert len(best) > len(default)
    assert any(m.get("pseudo", {}).get("rounds", 0) > 0 for m in best.values())


def test_unknown_preset_is_refused_by_make():
    out = subprocess.run(["make", "-n", "folds", "PRESET=nope"], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "configs/presets/nope.yaml" in out.stderr
    assert "best default fast" in out.stderr


@pytest.mark.parametrize("preset", ["fast", "default", "best"])
def test_make_passes_the_preset_config(preset):
    out = subprocess.run(
        ["make", "-n", "folds", f"PRESET={preset}"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert f"--config configs/presets/{preset}.yaml" in out.stdout
