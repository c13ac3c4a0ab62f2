"""The feature store: every frozen encoder run once, and what each model of a config reads.

Per image and test-time view (original, horizontal flip): the pooled vector, a token grid of
the final feature map and, for models that train a backbone's top stages on the CPU, the map
entering those stages. Per caption: MiniLM token states (or GloVe vectors) and their mask.
Caches live in ``runs/<dataset>/cache/`` and are keyed by encoder, size, view and a checksum
of the inputs (see ``capfuse.features.image`` and ``capfuse.features.text``), so ``make train``
finds them and a changed image or caption rebuilds only what it invalidates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capfuse.config.schema import ModelSettings, resolve_model
from capfuse.data.dataset import Dataset
from capfuse.data.names import DISCOVERY_VERSION
from capfuse.features.align import align_views
from capfuse.features.image import (
    CalibrationImages,
    ImageEncoderSpec,
    embed_image_views,
    inputs_checksum,
    mid_output,
)
from capfuse.features.text import caption_features
from capfuse.features.tfidf import fit_tfidf, tfidf_state
from capfuse.nn.fusion import needs_class_text
from capfuse.utils.io import remove_stale_tmp, sha256_reprs
from capfuse.utils.timing import timed

# Every function here takes a model config (a dict) or its resolved settings (ModelSettings);
# the encoders' defaults are the schema's (capfuse.config.schema).


def pooled_output(model_cfg: dict | ModelSettings) -> str:
    """The cached image vector a model reads: ``pooled`` or ``pooled_ml`` (``image_encoder.pooling``)."""
    return "pooled_ml" if resolve_model(model_cfg).image_encoder.pooling == "multilevel" else "pooled"


def image_outputs(model_cfg: dict | ModelSettings) -> tuple[str, ...]:
    """What a model reads from the image cache: pooled vectors, token grids or a mid-level map."""
    m = resolve_model(model_cfg)
    if m.kind != "net":
        return (pooled_output(m),)
    n = m.image_encoder.train_blocks
    return (mid_output(n),) if n > 0 else (pooled_output(m), "tokens")


def uses_cache(model_cfg: dict | ModelSettings) -> bool:
    """End-to-end fine-tuning decodes images itself; every other model reads cached features."""
    m = resolve_model(model_cfg)
    return not (m.kind == "net" and m.finetune)


def flip_views(model_cfg: dict | ModelSettings) -> tuple[str, ...]:
    m = resolve_model(model_cfg)
    if m.kind == "net" and (m.train.tta or m.train.flip_p > 0):
        return ("orig", "hflip")
    return ("orig",)


def encoder_reads(models: dict[str, dict | ModelSettings]) -> dict[ImageEncoderSpec, tuple[set[str], set[str]]]:
    """Per cached image encoder, the outputs and the views ``models`` read from it."""
    out: dict = {}
    for model_cfg in models.values():
        m = resolve_model(model_cfg)
        if "image" in m.inputs and uses_cache(m):
            outputs, views = out.setdefault(m.image_encoder.cache_spec(), (set(), set()))
            outputs.update(image_outputs(m))
            views.update(flip_views(m))
    return out


def _embed_images(data_dir, ids, ok, requests: list, cache, **kw) -> dict:
    """``embed_image_views``, as a row of the command's timings (a cache hit shows as seconds)."""
    what = ", ".join(f"{spec.name}@{spec.size or 'native'} {view}" for spec, view, _ in requests)
    with timed(f"embed {what}"):
        return embed_image_views(data_dir, ids, ok, requests, cache, **kw)


def _embed_captions(captions, spec, cache, *, key: str, **kw) -> dict:
    with timed(f"embed {spec.name} captions ({key})"):
        return caption_features(captions, spec, cache, key=key, **kw)


class RowConcat:
    """Two arrays' rows end to end, without copying them: the cached arrays of train and test
    rows followed by an unlabelled folder's. A plain ``np.concatenate`` would read every token
    grid of 40,000 images into memory (gigabytes) where the memory maps serve; rows are read
    only when a batch asks for them."""

    def __init__(self, first, second) -> None:
        if first.shape[1:] != second.shape[1:] or first.dtype != second.dtype:
            raise ValueError(f"cannot join rows of {first.shape} {first.dtype} and {second.shape} {second.dtype}")
        self.parts = (first, second)
        self.shape = (first.shape[0] + second.shape[0], *first.shape[1:])
        self.dtype = first.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        first, second = self.parts
        idx = np.arange(self.shape[0])[rows]  # any index numpy takes, as row numbers
        out = np.empty((*np.shape(idx), *self.shape[1:]), self.dtype)
        low = idx < len(first)
        out[low] = first[idx[low]]
        out[~low] = second[idx[~low] - len(first)]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class FeatureStore:
    """Builds each feature block once per run and shares it between models."""

    aligns = True  # ``image_encoder.align: test`` models read their test rows aligned

    def __init__(self, ds: Dataset, quiet: bool | None, models: dict[str, dict | ModelSettings] | None = None) -> None:
        self.ds = ds
        self.quiet = quiet
        # Every stage that embeds builds a store first: the arrays a killed run was writing
        # (gigabytes, memory-mapped) go before new ones claim the disk.
        remove_stale_tmp(ds.paths.cache)
        self._image: dict = {}
        self._caption: dict = {}
        self.want(models or {})
        # int8 graphs are calibrated on the training images, the same graph for every split and
        # for an unlabelled folder, so their features stay comparable.
        self.calibration = CalibrationImages.spread(
            ds.paths.data_dir, [i for i, ok in zip(ds.train_ids, ds.image_ok[: len(ds.train_ids)]) if ok]
        )

    def want(self, models: dict[str, dict | ModelSettings]) -> None:
        """Embed, from now on, every output and view ``models`` read from each encoder, so that one
        pass over the images (each decoded once) serves every backbone and view. A time budget
        narrows it to the models it kept: no pass computes a view that only a dropped model reads."""
        read = encoder_reads(models)
        self.wanted = {spec: outputs for spec, (outputs, _) in read.items()}
        self.wanted_views = {spec: views for spec, (_, views) in read.items()}

    def _outputs(self, spec: ImageEncoderSpec, outputs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(outputs) | self.wanted.get(spec, set())))

    def image(self, spec: ImageEncoderSpec, output: str = "pooled") -> tuple[np.ndarray, str]:
        out = self.image_views(spec, (output,), ("orig",))["orig"]
        return out[output], out["checksum"]

    def caption_tfidf(self, params: dict) -> tuple:
        """Train and test TF-IDF matrices and the fitted vocabulary (``tfidf_state``), which the
        linear models save beside their coefficients so that new captions can be transformed."""
        key = ("tfidf", repr(sorted(params.items())))
        if key not in self._caption:
            v = self.ds.val
            train, test = list(v.train["Caption"]), list(v.test["Caption"])
            vec = fit_tfidf(train, test, **params)
            self._caption[key] = (
                vec.transform(train).tocsr(),
                vec.transform(test).tocsr(),
                (*tfidf_state(vec), vec.ngram_range[1]),
            )
        return self._caption[key]

    def _pending(self, asked: list[tuple[ImageEncoderSpec, str, tuple[str, ...]]], done: dict) -> list:
        """``asked`` plus every wanted (encoder, view) not embedded yet: one pass decodes for all."""
        requests = {(spec, view): outputs for spec, view, outputs in asked}
        for spec, views in self.wanted_views.items():
            for view in sorted(views):
                requests.setdefault((spec, view), self._outputs(spec, ()))
        return [(spec, view, outs) for (spec, view), outs in requests.items() if (spec, outs, view) not in done]

    def image_views(self, spec: ImageEncoderSpec, outputs: tuple[str, ...], views: tuple[str, ...]) -> dict:
        """The requested outputs of every row (train then test), for each test-time view."""
        outputs = self._outputs(spec, outputs)
        missing = [(spec, view, outputs) for view in views if (spec, outputs, view) not in self._image]
        if missing:
            ids, ok = self.ds.train_ids + self.ds.test_ids, self.ds.image_ok
            got = _embed_images(
                self.ds.paths.data_dir,
                ids,
                ok,
                self._pending(missing, self._image),
                self.ds.paths.cache,
                quiet=self.quiet,
                calibration=self.calibration,
            )
            for (s, view), arrays in got.items():
                self._image[(s, self._outputs(s, tuple(o for o in arrays if o != "checksum")), view)] = arrays
        return {view: self._image[(spec, outputs, view)] for view in views}

    def caption_tokens(self, spec) -> dict:
        """Token states, mask and pooled vectors of every caption (train then test)."""
        key = ("tokens", spec)
        if key not in self._caption:
            v = self.ds.val
            captions = list(v.train["Caption"]) + list(v.test["Caption"])
            self._caption[key] = _embed_captions(captions, spec, self.ds.paths.cache, key="all", quiet=self.quiet)
        return self._caption[key]

    def for_net(self, model_cfg: dict | ModelSettings, parts: list) -> dict:
        """Feature views for the ``net`` kind in cached mode: rows are train then test."""
        m = resolve_model(model_cfg)
        inputs = m.inputs
        views = flip_views(m)
        out: dict = {view: {} for view in views}
        dims: dict = {}
        if "image" in inputs:
            spec = m.image_encoder.cache_spec()
            wanted = image_outputs(m)
            img = self.image_views(spec, wanted, views)
            # Models that train the top stages read the mid map; the others read the final one.
            keys = (
                {"img_mid": wanted[0]}
                if wanted[0].startswith("mid")
                else {"img_pooled": pooled_output(m), "img_tokens": "tokens"}
            )
            for view in views:
                out[view].update({key: img[view][name] for key, name in keys.items()})
                parts.append(img[view]["checksum"])
            orig = {key: img["orig"][name] for key, name in keys.items()}
            # Channels of the mid map [N, C, h, w], width of pooled [N, D] and tokens [N, T, D].
            dims.update({key: arr.shape[1] if key != "img_tokens" else arr.shape[2] for key, arr in orig.items()})
        if "caption" in inputs:
            cap = self.caption_tokens(m.caption_encoder)
            for view in views:  # captions do not flip
                out[view].update(cap_pooled=cap["pooled"], cap_tokens=cap["tokens"], cap_mask=cap["mask"])
            parts.append(cap["checksum"])
            dims["cap_pooled"], dims["cap_tokens"] = cap["pooled"].shape[1], cap["tokens"].shape[2]
        return {"views": out, "dims": dims}

    def extra_rows(self, model_cfg: dict | ModelSettings, feats: dict, parts: list) -> None:
        """Append the unlabelled folder's rows after the test rows of every cached view.

        Their features are cached apart (``cache/unlabelled/``, key ``unlabelled``), so naming
        a folder never recomputes the train and test features.
        """
        extra, folder = self.ds.extra, self.ds.extra_dir
        ids, captions = list(extra["ImageID"]), list(extra["Caption"])
        m = resolve_model(model_cfg)
        inputs = m.inputs
        views = feats["views"]
        if "image" in inputs:
            spec = m.image_encoder.cache_spec()
            names = {"img_pooled": pooled_output(m), "img_tokens": "tokens", "img_mid": image_outputs(m)[0]}
            keys = {view: [k for k in views[view] if k in names] for view in views}
            got = _embed_images(
                folder,
                ids,
                np.ones(len(ids), bool),
                [(spec, view, self._outputs(spec, tuple(names[k] for k in keys[view]))) for view in views],
                self.ds.paths.cache / "unlabelled",
                quiet=self.quiet,
                calibration=self.calibration,
            )
            for view in views:
                for k in keys[view]:
                    views[view][k] = RowConcat(views[view][k], got[(spec, view)][names[k]])
                parts.append(got[(spec, view)]["checksum"])
        if "caption" in inputs:
            spec = m.caption_encoder
            cap = _embed_captions(captions, spec, self.ds.paths.cache, key="unlabelled", quiet=self.quiet)
            # Captions do not flip: one concatenation serves every view.
            joined = {
                k: RowConcat(views["orig"][k], cap[name])
                for k, name in (("cap_pooled", "pooled"), ("cap_tokens", "tokens"), ("cap_mask", "mask"))
            }
            for view in views:
                views[view].update(joined)
            parts.append(cap["checksum"])
        first = len(self.ds.train_ids) + len(self.ds.test_ids)
        feats["extra_pool_rows"] = np.arange(first, first + len(ids))
        parts.extend([ids, captions])

    def for_model(self, model_cfg: dict | ModelSettings, with_extra: bool = False) -> dict:
        """What ``model_cfg`` reads, for every row: train, test and, ``with_extra`` (models with
        pseudo-label rounds), the rows of the unlabelled folder (``data.unlabelled``)."""
        n_train = len(self.ds.train_ids)
        # Test rows with a usable image: the unlabelled pool that pseudo-label rounds may use.
        feats: dict = {"n_test": len(self.ds.test_ids), "test_image_ok": self.ds.val.test["image_ok"].to_numpy(bool)}
        parts = [
            self.ds.train_ids,
            self.ds.test_ids,
            list(self.ds.val.train["Caption"]),
            list(self.ds.val.test["Caption"]),
            self.ds.Y.tobytes(),
        ]
        m = resolve_model(model_cfg)
        inputs = m.inputs
        aligned = "image" in inputs and m.image_encoder.align == "test" and self.aligns
        if m.kind == "net" and uses_cache(m):
            feats.update(self.for_net(m, parts))
            if with_extra and self.ds.extra is not None:
                self.extra_rows(m, feats, parts)
            if aligned:
                feats["alignment"] = align_views(feats["views"], n_train, feats["test_image_ok"])
        elif m.kind == "net":
            feats.update(
                data_dir=self.ds.paths.data_dir,
                ids=self.ds.train_ids + self.ds.test_ids,
                image_ok=self.ds.image_ok,
                captions=list(self.ds.val.train["Caption"]) + list(self.ds.val.test["Caption"]),
            )
            if "image" in inputs:
                # Fine-tuning decodes the images itself, so no feature checksum speaks for them:
                # their stat keys do, and a replaced image retrains the model.
                parts.append(inputs_checksum(self.ds.paths.data_dir, feats["ids"], feats["image_ok"]))
        else:
            if "image" in inputs:
                arr, checksum = self.image(m.image_encoder.cache_spec(), pooled_output(m))
                if aligned:
                    views = {"orig": {"img_pooled": arr}}
                    feats["alignment"] = align_views(views, n_train, feats["test_image_ok"])
                    arr = np.asarray(views["orig"]["img_pooled"])
                feats["image_train"], feats["image_test"] = arr[:n_train], arr[n_train:]
                parts.append(checksum)
            if "caption" in inputs:
                feats["caption_train"], feats["caption_test"], feats["tfidf_state"] = self.caption_tfidf(m.tfidf)
        # Class ids and names: label-query heads embed the names as prompts, the context task
        # reports its groups by name. Names count towards the fingerprint only for models that
        # read them, so renaming a class retrains those models and no others.
        feats.update(class_ids=list(self.ds.class_ids), class_names=list(self.ds.val.classes.names))
        names = self.ds.names
        if names is not None and names.discovered:
            # Discovered names come from labels, so each fold rediscovers them from its own
            # training rows (capfuse.models.net); the settings and version say how.
            feats["class_discovery"] = {"captions": list(self.ds.val.train["Caption"]), "settings": names.settings}
        if m.kind == "net":
            if needs_class_text(m):
                parts.append(feats["class_names"])
                if "class_discovery" in feats:
                    parts.append(f"discovered:v{DISCOVERY_VERSION}:{names.settings}")
        feats["fingerprint"] = sha256_reprs(*parts)
        return feats


def cache_listing(cache_dir: Path) -> list[dict]:
    """Every cached array: file name, shape and size."""
    rows = []
    for f in sorted(Path(cache_dir).glob("*.npy")):
        arr = np.load(f, mmap_mode="r")
        rows.append({"file": f.name, "shape": "x".join(map(str, arr.shape)), "mb": f.stat().st_size / 2**20})
    return rows
