"""``bundle.json`` is checked whole before a predictor trusts it: its own content is sealed, its
keys and version are this capfuse's, every path it names stays inside the bundle and is hashed,
nothing unlisted lies beside the files, and no encoder it names needs a model hub."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from capfuse.bundle import BundleError, Predictor
from capfuse.bundle.record import BUNDLE_FILE, seal
from capfuse.utils.io import read_json, sha256_file, write_json


@pytest.fixture
def bundle(tiny_bundle, tmp_path) -> Path:
    """A private copy of the session's bundle, to alter."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def _rewrite(bundle: Path, change, *, reseal: bool = True) -> None:
    record = read_json(bundle / BUNDLE_FILE)
    change(record)
    write_json(bundle / BUNDLE_FILE, seal(record) if reseal else record)


def test_an_intact_bundle_loads(bundle):
    assert Predictor.load(bundle).models


def test_an_edited_threshold_in_bundle_json_is_refused(bundle):
    def lower(record):
        t = record["thresholds"]
        t["values"] = 0.01 if t["kind"] == "global" else [0.01 for _ in t["values"]]

    _rewrite(bundle, lower, reseal=False)
    with pytest.raises(BundleError, match="does not match its record_sha256"):
        Predictor.load(bundle)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("image_fallback"), r"missing keys \['image_fallback'\]"),
        (lambda r: r.update(calibration={"t": 2}), r"unknown keys \['calibration'\]"),
        (lambda r: r.update(capfuse_version="99.0.0"), "written by capfuse 99.0.0, newer than this"),
        (lambda r: r.update(format=1), "format 1, this capfuse reads 2"),
    ],
)
def test_a_record_of_another_capfuse_is_refused_by_name(bundle, change, message):
    _rewrite(bundle, change)
    with pytest.raises(BundleError, match=message):
        Predictor.load(bundle)


@pytest.mark.parametrize("path", ["../../outside.yaml", "/etc/hostname", "models/../../x.yaml"])
def test_a_path_that_leaves_the_bundle_is_refused(bundle, path):
    name = next(iter(read_json(bundle / BUNDLE_FILE)["models"]))
    _rewrite(bundle, lambda r: r["models"][name].update(config=path))
    with pytest.raises(BundleError, match="not a plain path inside the bundle"):
        Predictor.load(bundle)


def test_a_symlink_out_of_the_bundle_is_refused(bundle, tmp_path):
    name = next(iter(read_json(bundle / BUNDLE_FILE)["models"]))
    config = bundle / "models" / name / "config.yaml"
    outside = tmp_path / "elsewhere.yaml"
    shutil.move(config, outside)
    config.symlink_to(outside)
    with pytest.raises(BundleError, match="resolves outside the bundle folder"):
        Predictor.load(bundle)


def test_a_model_name_that_is_a_path_is_refused(bundle):
    def rename(record):
        name = next(iter(record["models"]))
        record["models"]["../" + name] = record["models"].pop(name)

    _rewrite(bundle, rename)
    with pytest.raises(BundleError, match="is not a plain name"):
        Predictor.load(bundle)


def test_a_file_the_list_does_not_hash_is_refused(bundle):
    name = next(iter(read_json(bundle / BUNDLE_FILE)["models"]))
    (bundle / "models" / name / "fold0" / "extra.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(BundleError, match="files not listed in bundle.json"):
        Predictor.load(bundle)


def test_an_encoder_no_package_carries_is_refused_unless_the_hub_is_allowed(bundle):
    record = read_json(bundle / BUNDLE_FILE)
    name = next(n for n, info in record["models"].items() if "image" in info["inputs"])
    config = bundle / record["models"][name]["config"]
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    cfg.setdefault("image_encoder", {})["name"] = "resnet50"  # timm downloads its weights
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    rel = config.relative_to(bundle).as_posix()
    _rewrite(bundle, lambda r: r["files"].update({rel: sha256_file(config)}))
    with pytest.raises(BundleError, match="'resnet50' is not carried by a package"):
        Predictor.load(bundle)
    assert Predictor.load(bundle, allow_hub=True).models[name].image_encoder.name == "resnet50"


def test_weights_from_the_hub_are_refused_even_for_a_packaged_encoder(bundle):
    record = read_json(bundle / BUNDLE_FILE)
    name = next(n for n, info in record["models"].items() if "image" in info["inputs"])
    config = bundle / record["models"][name]["config"]
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    cfg.setdefault("image_encoder", {})["weights"] = "hub"  # timm's download, though a package carries Lite0
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    rel = config.relative_to(bundle).as_posix()
    _rewrite(bundle, lambda r: r["files"].update({rel: sha256_file(config)}))
    with pytest.raises(BundleError, match="would download it from a model hub"):
        Predictor.load(bundle)
