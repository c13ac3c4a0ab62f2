"""The train stage: shared cached features, then every configured model over every fold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse import config as cfglib
from capfuse.features import ImageEncoderSpec
from capfuse.stages.common import Dataset, load_dataset
from capfuse.text import tfidf_features
from capfuse.trainer import train_model, update_leaderboard
from capfuse.utils.log import log, stage


def model_configs(cfg: dict, config_path: Path) -> dict[str, dict]:
    """The models a pipeline config lists (``models: [name, ...]``), each resolved with its parents.

    A model config given directly (it has a ``kind``) is a one-model pipeline.
    """
    if "kind" in cfg:
        name = cfg.get("name") or config_path.stem
        return {name: {**cfg, "name": name}}
    names = cfg.get("models") or []
    if not names:
        raise ValueError(f"{config_path}: lists no models (expected `models: [name, ...]`)")
    out = {}
    for name in names:
        path = cfglib.resolve_config_path(f"models/{name}", relative_to=config_path)
        model_cfg = cfglib.load_config(path)
        # Pipeline-wide settings (seed, data, threshold rules) flow down unless the model overrides them.
        inherited = {k: v for k, v in cfg.items() if k not in ("models", "infer", "inherit")}
        out[name] = {**cfglib.deep_merge(inherited, model_cfg), "name": name}
    return out


def _hash_text(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
    return h.hexdigest()


class FeatureStore:
    """Builds each feature block once per run and shares it between models."""

    def __init__(self, ds: Dataset, quiet: bool | None, models: dict[str, dict] | None = None) -> None:
        self.ds = ds
        self.quiet = quiet
        self._image: dict = {}
        self._caption: dict[str, tuple] = {}
        # Every output any model needs from an encoder, so one backbone pass serves them all.
        self.wanted: dict[ImageEncoderSpec, set[str]] = {}
        for model_cfg in (models or {}).values():
            if "image" in model_cfg.get("inputs", ["image", "caption"]) and not model_cfg.get("finetune", False):
                spec = ImageEncoderSpec.from_config(model_cfg.get("image_encoder", {"name": "tf_efficientnet_lite0"}))
                self.wanted.setdefault(spec, set()).update(("pooled", "tokens") if model_cfg["kind"] == "net" else ("pooled",))

    def _outputs(self, spec: ImageEncoderSpec, outputs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(o for o in ("pooled", "tokens") if o in set(outputs) | self.wanted.get(spec, set()))

    def image(self, spec: ImageEncoderSpec) -> tuple[np.ndarray, str]:
        out = self.image_views(spec, ("pooled",), ("orig",))["orig"]
        return out["pooled"], out["checksum"]

    def caption_tfidf(self, params: dict) -> tuple:
        key = repr(sorted(params.items()))
        if key not in self._caption:
            v = self.ds.val
            self._caption[key] = tfidf_features(list(v.train["Caption"]), list(v.test["Caption"]), **params)
        return self._caption[key]

    def image_views(self, spec: ImageEncoderSpec, outputs: tuple[str, ...], views: tuple[str, ...]) -> dict:
        """Pooled vectors and token grids of every row, for each test-time view."""
        from capfuse.features import embed_image_features

        outputs = self._outputs(spec, outputs)
        key = (spec, outputs, views)
        if key not in self._image:
            v = self.ds.val
            ids = self.ds.train_ids + self.ds.test_ids
            ok = np.concatenate([np.ones(len(v.train), bool), v.test["image_ok"].to_numpy(bool)])
            self._image[key] = {view: embed_image_features(self.ds.paths.data_dir, ids, ok, spec, self.ds.paths.cache,
                                                           view=view, outputs=outputs, quiet=self.quiet)
                                for view in views}
        return self._image[key]

    def caption_tokens(self, spec) -> dict:
        from capfuse.text_features import embed_captions

        key = ("tokens", spec)
        if key not in self._caption:
            v = self.ds.val
            captions = list(v.train["Caption"]) + list(v.test["Caption"])
            self._caption[key] = embed_captions(captions, spec, self.ds.paths.cache, key="all", quiet=self.quiet)
        return self._caption[key]

    def for_net(self, model_cfg: dict, parts: list) -> dict:
        """Feature views for the ``net`` kind in cached mode: rows are train then test."""
        from capfuse.encoders.text import TextEncoderSpec

        inputs = model_cfg.get("inputs", ["image", "caption"])
        tta = model_cfg.get("train", {}).get("tta", True) or model_cfg.get("train", {}).get("flip_p", 0.5) > 0
        views = ("orig", "hflip") if tta else ("orig",)
        out: dict = {view: {} for view in views}
        dims: dict = {}
        if "image" in inputs:
            spec = ImageEncoderSpec.from_config(model_cfg.get("image_encoder", {"name": "tf_efficientnet_lite0"}))
            img = self.image_views(spec, ("pooled", "tokens"), views)
            for view in views:
                out[view]["img_pooled"], out[view]["img_tokens"] = img[view]["pooled"], img[view]["tokens"]
                parts.append(img[view]["checksum"])
            dims["img_pooled"] = img["orig"]["pooled"].shape[1]
            dims["img_tokens"] = img["orig"]["tokens"].shape[2]
        if "caption" in inputs:
            enc = dict(model_cfg.get("caption_encoder", {"name": "minilm"}))
            cap = self.caption_tokens(TextEncoderSpec(**enc))
            for view in views:  # captions do not flip
                out[view].update(cap_pooled=cap["pooled"], cap_tokens=cap["tokens"], cap_mask=cap["mask"])
            parts.append(cap["checksum"])
            dims["cap_pooled"], dims["cap_tokens"] = cap["pooled"].shape[1], cap["tokens"].shape[2]
        return {"views": out, "dims": dims}

    def for_model(self, model_cfg: dict) -> dict:
        n_train = len(self.ds.train_ids)
        feats: dict = {"n_test": len(self.ds.test_ids)}
        parts = [self.ds.train_ids, self.ds.test_ids, list(self.ds.val.train["Caption"]),
                 list(self.ds.val.test["Caption"]), self.ds.Y.tobytes()]
        inputs = model_cfg.get("inputs", ["image", "caption"])
        if model_cfg["kind"] == "net" and not model_cfg.get("finetune", False):
            feats.update(self.for_net(model_cfg, parts))
            feats["fingerprint"] = _hash_text(*parts)
            return feats
        if model_cfg["kind"] == "net":
            feats.update(data_dir=self.ds.paths.data_dir, ids=self.ds.train_ids + self.ds.test_ids,
                         image_ok=np.concatenate([np.ones(n_train, bool), self.ds.val.test["image_ok"].to_numpy(bool)]),
                         captions=list(self.ds.val.train["Caption"]) + list(self.ds.val.test["Caption"]))
            feats["fingerprint"] = _hash_text(*parts)
            return feats
        if "image" in inputs:
            spec = ImageEncoderSpec.from_config(model_cfg.get("image_encoder", {"name": "tf_efficientnet_lite0"}))
            arr, checksum = self.image(spec)
            feats["image_train"], feats["image_test"] = arr[:n_train], arr[n_train:]
            parts.append(checksum)
        if "caption" in inputs:
            feats["caption_train"], feats["caption_test"] = self.caption_tfidf(model_cfg.get("tfidf", {}))
        feats["fingerprint"] = _hash_text(*parts)
        return feats


def run_train(paths, cfg: dict, config_path: Path, *, only: list[str] | None = None, quiet: bool | None = None) -> pd.DataFrame:
    models = model_configs(cfg, config_path)
    if only:
        unknown = sorted(set(only) - set(models))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; this config trains {sorted(models)}")
        models = {k: v for k, v in models.items() if k in only}
    with stage("train", f"{paths.dataset}: {', '.join(models)}"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        folds = ds.folds()
        store = FeatureStore(ds, quiet, models)
        board = None
        for name, model_cfg in models.items():
            with stage(f"train {name}", model_cfg["kind"]):
                feats = store.for_model(model_cfg)
                metrics = train_model(
                    name, model_cfg, out_dir=paths.model_dir(name), train_ids=ds.train_ids,
                    test_ids=ds.test_ids, Y=ds.Y, folds=folds, class_ids=ds.class_ids,
                    feats=feats, data_fingerprint=feats["fingerprint"],
                )
                if not metrics:
                    continue  # a non-zero torchrun rank: rank 0 writes the artefacts
                board = update_leaderboard(paths.runs / "leaderboard.csv", metrics)
                log.info("%s: CV mean F1 %.4f (threshold %.2f), mAP %.4f", name, metrics["cv_mean_f1"],
                         metrics["threshold"], metrics["cv_map"])
        if board is not None:
            log.info("leaderboard (%s):\n%s", paths.runs / "leaderboard.csv", board.to_string(index=False))
        return board
