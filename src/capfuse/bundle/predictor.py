"""``Predictor``: an exported bundle that labels new images with captions, offline.

It replays exactly what ``capfuse infer`` does to the test set, from the bundle's files only:
the frozen encoders' features (the same code and cache format as training), every fold of
every base model (fold logits summed in float64, divided, stored as float32, as the trainer
writes ``test_logits.csv``), the kept second-level candidate (probabilities stored as float32,
as ``test_probs.csv`` is), the thresholds and the never-empty rule, and the caption fallback
for rows without a usable image. It reads no training row and no ``runs/`` folder.

``save`` copies the bundle a predictor loaded to a folder of the caller's, sealed as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from capfuse.bundle.inputs import Rows, read_test_folder, stage_inputs
from capfuse.bundle.record import BUNDLE_FILE, SEAL, BundleError, check_offline, inside, read_record
from capfuse.config.schema import resolve_model
from capfuse.data.logits import logits_frame
from capfuse.ensemble.blend import apply_weights, mean_blend
from capfuse.ensemble.decision import apply_threshold
from capfuse.ensemble.stack import stack_predict
from capfuse.features.align import ALIGNMENT_FILE, align_new_rows
from capfuse.features.image import embed_image_views
from capfuse.features.store import flip_views, image_outputs, pooled_output
from capfuse.features.text import caption_features
from capfuse.models import MODELS
from capfuse.models.cached import CachedViews
from capfuse.submission import predictions_to_frame
from capfuse.utils.io import current_umask, read_json
from capfuse.utils.lock import dataset_lock
from capfuse.utils.numeric import sigmoid


@dataclass
class Prediction:
    ids: list[str]
    probs: np.ndarray  # [N, C] float64 (float32 values): the kept candidate's probabilities
    binary: np.ndarray  # [N, C] uint8: the label sets after thresholds and the never-empty rule
    class_ids: list[int]
    class_names: list[str]
    image_ok: np.ndarray  # [N] bool: False rows were predicted from their caption alone
    logits: dict[str, np.ndarray]  # every base model's fold-mean logits [N, C] float32
    flags: list[str] | None = None  # [N] what was wrong with each input row ("" for nothing)

    @property
    def labels(self) -> list[list[int]]:
        ids = np.asarray(self.class_ids)
        return [ids[np.flatnonzero(row)].tolist() for row in self.binary]

    @property
    def label_names(self) -> list[list[str]]:
        names = np.asarray(self.class_names, dtype=object)
        return [names[np.flatnonzero(row)].tolist() for row in self.binary]

    def submission(self) -> pd.DataFrame:
        return predictions_to_frame(self.ids, self.binary, self.class_ids)

    def probabilities(self) -> pd.DataFrame:
        return logits_frame(self.ids, self.probs, self.class_ids)

    def flagged(self) -> pd.DataFrame:
        """The rows something was wrong with: position (1-based), ImageID, image_ok, what."""
        flags = self.flags or [""] * len(self.ids)
        rows = [i for i, f in enumerate(flags) if f]
        return pd.DataFrame(
            {
                "row": [i + 1 for i in rows],
                "ImageID": [self.ids[i] for i in rows],
                "image_ok": [bool(self.image_ok[i]) for i in rows],
                "flag": [flags[i] for i in rows],
            }
        )


class Predictor:
    """``Predictor.load(bundle)``, then ``predict(images, captions)`` or ``predict_folder(folder)``.

    ``fast`` predicts with the bundle's fast variant (its caption-only models, one fold each,
    with the second level and threshold export refitted on their OOF; no image is embedded);
    ``folds`` uses only the first that many folds of every model, under the full second level."""

    def __init__(
        self,
        folder: Path,
        record: dict,
        work_dir: Path | None = None,
        quiet: bool | None = True,
        *,
        fast: bool = False,
        folds: int | None = None,
    ) -> None:
        self.folder = folder
        self.quiet = quiet  # progress bars of the encoders' passes: None follows CAPFUSE_QUIET / CI
        self.record = record
        self.class_ids = [c["id"] for c in record["classes"]]
        self.class_names = [c["name"] for c in record["classes"]]
        self.second_level, self.thresholds = record["second_level"], record["thresholds"]
        names = list(record["models"])
        if fast:
            variant = record.get("fast")
            if not variant:
                raise BundleError(f"{folder / BUNDLE_FILE}: no fast variant (the bundle has no caption-only model)")
            self.second_level, self.thresholds = variant["second_level"], variant["thresholds"]
            names = [n for n in names if n in {*variant["second_level"]["models"], record["image_fallback"]["model"]}]
            folds = variant["folds"] if folds is None else min(folds, variant["folds"])
        if folds is not None and folds < 1:
            raise ValueError(f"folds must be at least 1, got {folds}")
        self.folds = {n: min(folds or info["folds"], info["folds"]) for n, info in record["models"].items()}
        self.fast = fast
        # The stage timings of the run that `capfuse.fit` trained it in (``.table()`` is the stage
        # table); None for a bundle loaded from disk, whose run is not known.
        self.timings = None
        self.models = {}
        for name in names:
            info = record["models"][name]
            cfg = yaml.safe_load((folder / info["config"]).read_text(encoding="utf-8"))
            self.models[name] = resolve_model(cfg)
        # Encoder exports (ONNX) and feature arrays land here, and are reused between calls.
        self._tmp = None if work_dir is not None else tempfile.TemporaryDirectory(prefix="capfuse-predict-")
        self.work_dir = Path(work_dir) if work_dir is not None else Path(self._tmp.name)

    @classmethod
    def load(
        cls,
        bundle: str | Path,
        *,
        verify: bool = True,
        work_dir: str | Path | None = None,
        quiet: bool | None = True,
        fast: bool = False,
        folds: int | None = None,
        allow_hub: bool = False,
    ) -> Predictor:
        """Read ``bundle/bundle.json`` (``capfuse.bundle.record`` checks it whole); ``verify`` checks
        every file against its sha256 first. ``allow_hub`` lets a model whose encoder no installed
        package carries download it from a model hub; without it such a bundle is refused."""
        folder = Path(bundle)
        record = read_record(folder, verify=verify)
        predictor = cls(folder, record, Path(work_dir) if work_dir is not None else None, quiet, fast=fast, folds=folds)
        if not allow_hub:
            for name, settings in predictor.models.items():
                check_offline(name, settings, folder / BUNDLE_FILE)
        return predictor

    def save(self, path: str | Path) -> Path:
        """Copy the bundle to the folder ``path``, every file checked against its sha256 on the way,
        and return it; ``Predictor.load(path)`` then predicts exactly as this predictor does.

        The copy is renamed into place whole, so a failed save leaves nothing half written.
        ``path`` may be missing, an empty folder, or a bundle (nothing else in it), which is
        replaced; any other folder is refused. A folder that already holds this bundle is kept."""
        out = Path(path)
        held = _bundle_in(out)
        if held is not None and held.get(SEAL) == self.record.get(SEAL):
            return out
        if out.is_symlink() or (out.exists() and held is None and (not out.is_dir() or any(out.iterdir()))):
            raise BundleError(f"{out} exists and is not a bundle: save into a new or empty folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        old = None
        try:
            for rel in [*self.record["files"], BUNDLE_FILE]:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(inside(self.folder, rel, f"{self.folder / BUNDLE_FILE}: files"), tmp / rel)
            if read_record(tmp, verify=True).get(SEAL) != self.record.get(SEAL):
                raise BundleError(f"{self.folder}: its bundle.json changed since it was loaded; load it again")
            os.chmod(tmp, 0o777 & ~current_umask())
            if held is not None:
                # rename(2) replaces an empty folder only: the old bundle steps aside first.
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.replace(out, old)
            os.replace(tmp, out)
        finally:
            for leftover in (tmp, old):
                if leftover is not None and leftover.exists():
                    shutil.rmtree(leftover)
        return out

    def _check_unchanged(self) -> None:
        """A bundle replaced since it was loaded would pair this record's thresholds and blend
        with another run's weight files, read at predict time: refuse instead."""
        try:
            seal = read_json(self.folder / BUNDLE_FILE).get(SEAL)
        except (OSError, ValueError, AttributeError):
            seal = None
        if seal != self.record.get(SEAL):
            raise BundleError(f"{self.folder}: the bundle was replaced or removed since it was loaded; load it again")

    # -- inputs ---------------------------------------------------------------------------------

    def predict_folder(self, data_dir: str | Path) -> Prediction:
        """A folder in the COMP5329 test layout (``test.csv`` + ``data/``)."""
        return self.predict_rows(read_test_folder(data_dir, max_pixels=self.record.get("max_pixels")))

    def predict(self, images: list, captions: list[str] | None = None, ids: list[str] | None = None) -> Prediction:
        """Images (paths or PIL images; None for none) with their captions, in that order.

        ``ids`` name the rows (default: a path's file name, else the row's number)."""
        images = list(images)
        if ids is None:
            ids = [Path(im).name if isinstance(im, (str, Path)) else f"{i:06d}" for i, im in enumerate(images)]
        if len(ids) != len(images):
            raise ValueError(f"{len(images)} images but {len(ids)} ids")
        # Each call stages its inputs in a folder of its own, removed after: two predictions
        # sharing a work folder never see each other's images, and nothing of the user's in
        # that folder is touched.
        self.work_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".inputs-", dir=self.work_dir))
        try:
            rows = stage_inputs(staging, images, captions, max_pixels=self.record.get("max_pixels"))
            pred = self.predict_rows(rows)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        pred.ids = [str(i) for i in ids]
        return pred

    # -- the pipeline, replayed -------------------------------------------------------------------

    def _features(self, rows: Rows) -> dict:
        cache = self.work_dir / "cache"
        requests: dict = {}
        for m in self.models.values():
            if "image" in m.inputs:
                spec = m.image_encoder.cache_spec()
                for view in flip_views(m):
                    requests.setdefault((spec, view), set()).update(image_outputs(m))
        images = {}
        if requests:
            asked = [(spec, view, tuple(sorted(outs))) for (spec, view), outs in requests.items()]
            images = embed_image_views(rows.data_dir, rows.ids, rows.image_ok, asked, cache, quiet=self.quiet)
        captions = {}
        for m in self.models.values():
            if m.kind == "net" and "caption" in m.inputs and m.caption_encoder not in captions:
                captions[m.caption_encoder] = caption_features(
                    rows.captions, m.caption_encoder, cache, key="predict", quiet=self.quiet
                )
        return {"images": images, "captions": captions}

    def _aligned(self, name: str, views: dict, rows: Rows) -> None:
        """A model trained with ``image_encoder.align: test`` reads these rows' image features
        aligned to its training rows' statistics, which its bundle folder keeps, as the run read
        its test rows (capfuse.features.align: by these rows' own statistics where there are
        enough of them, else by the run's test set's)."""
        if "image" not in self.models[name].inputs or self.models[name].image_encoder.align == "none":
            return
        record = read_json(self.folder / "models" / name / ALIGNMENT_FILE)
        for view, arrays in views.items():
            for key in [k for k in arrays if k.startswith("img_")]:
                arrays[key] = align_new_rows(arrays[key], rows.image_ok, record[view][key])

    def _net_views(self, m, feats: dict) -> tuple[dict, dict]:
        """The cached views ``FeatureStore.for_net`` would give the net, for these rows only."""
        views: dict = {view: {} for view in flip_views(m)}
        dims: dict = {}
        if "image" in m.inputs and m.image_encoder.train_blocks:
            # Trained top stages start from the map entering them, as in training.
            spec = m.image_encoder.cache_spec()
            mid = image_outputs(m)[0]
            for view in views:
                views[view]["img_mid"] = feats["images"][(spec, view)][mid]
            dims["img_mid"] = views["orig"]["img_mid"].shape[1]
        elif "image" in m.inputs:
            spec = m.image_encoder.cache_spec()
            for view in views:
                img = feats["images"][(spec, view)]
                views[view].update(img_pooled=img[pooled_output(m)], img_tokens=img["tokens"])
            dims.update(
                img_pooled=views["orig"]["img_pooled"].shape[1], img_tokens=views["orig"]["img_tokens"].shape[2]
            )
        if "caption" in m.inputs:
            cap = feats["captions"][m.caption_encoder]
            for view in views:
                views[view].update(cap_pooled=cap["pooled"], cap_tokens=cap["tokens"], cap_mask=cap["mask"])
            dims.update(cap_pooled=cap["pooled"].shape[1], cap_tokens=cap["tokens"].shape[2])
        return views, dims

    def _model_logits(self, name: str, feats: dict, rows: Rows) -> np.ndarray:
        m = self.models[name]
        model = MODELS.create(m.kind, cfg=m, seed=m.seed)
        n, c = len(rows.ids), len(self.class_ids)
        total = np.zeros((n, c), dtype=np.float64)
        if m.kind == "net":
            views, dims = self._net_views(m, feats)
        elif "image" in m.inputs:  # a linear model reads the plain view's pooled vector
            views = {"orig": {"img_pooled": feats["images"][(m.image_encoder.cache_spec(), "orig")][pooled_output(m)]}}
        else:
            views = {}
        # Once per model, not per fold: every fold reads the same aligned rows.
        self._aligned(name, views, rows)
        image = np.asarray(views["orig"]["img_pooled"]) if m.kind != "net" and views else None
        for fold in range(self.folds[name]):
            fold_dir = self.folder / "models" / name / f"fold{fold}"
            if m.kind == "net":
                net = model.load_saved(fold_dir, dims, c)
                total += model.predict_rows(net, CachedViews(views), np.arange(n), c)
            else:
                total += model.predict_saved(fold_dir, image=image, captions=rows.captions)
        return (total / self.folds[name]).astype(np.float32)

    def _second_level(self, logits: dict[str, np.ndarray]) -> np.ndarray:
        kept = self.second_level
        names = kept["models"]
        z = [logits[n] for n in names]
        p = [sigmoid(x) for x in z]
        cand = kept["candidate"]
        if cand == "best_single":
            out = p[names.index(kept["model"])]
        elif cand == "mean_blend":
            out = mean_blend(p)
        elif cand == "weighted_blend":
            out = apply_weights(p, np.asarray(kept["weights"]))
        elif cand == "stack":
            folds = [
                {
                    "weights": fold["weights"],
                    "classes": [
                        {"booster": (self.folder / "second_level" / part["booster"]).read_text(encoding="utf-8")}
                        if "booster" in part
                        else part
                        for part in fold["classes"]
                    ],
                }
                for fold in kept["folds"]
            ]
            out = stack_predict(folds, z, p)
        else:
            raise BundleError(f"{self.folder / BUNDLE_FILE}: unknown second-level candidate {cand!r}")
        # test_probs.csv holds float32; the thresholds were applied to what it holds.
        return np.asarray(out, dtype=np.float32).astype(np.float64)

    def predict_rows(self, rows: Rows) -> Prediction:
        # One writer at a time in a work folder (``--cache``): the encoders' exports and feature
        # arrays there are written under names that do not depend on the rows, so a second
        # prediction at once would read the first one's half-written features. It waits its turn.
        self._check_unchanged()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with dataset_lock(self.work_dir, wait=True, what="capfuse predict"):
            feats = self._features(rows)
        logits = {name: self._model_logits(name, feats, rows) for name in self.models}
        probs = self._second_level(logits)
        t = self.thresholds
        rule = {"min_labels": t["min_labels"], "max_labels": t["max_labels"]}
        binary = apply_threshold(probs, np.asarray(t["values"], dtype=np.float64), **rule)
        bad = ~rows.image_ok
        if bad.any():
            fb = self.record["image_fallback"]
            if fb["model"] is not None:
                caption_p = sigmoid(logits[fb["model"]])
                binary[bad] = apply_threshold(caption_p[bad], fb["threshold"], **rule)
            else:
                prior = np.broadcast_to(np.asarray(fb["priors"]), (int(bad.sum()), len(self.class_ids)))
                binary[bad] = apply_threshold(
                    prior, 1.0, min_labels=max(1, rule["min_labels"]), max_labels=rule["max_labels"]
                )
        return Prediction(
            ids=list(rows.ids),
            probs=probs,
            binary=binary,
            class_ids=self.class_ids,
            class_names=self.class_names,
            image_ok=rows.image_ok,
            logits=logits,
            flags=rows.flags,
        )


def _bundle_in(folder: Path) -> dict | None:
    """``folder``'s sealed record when it holds a whole bundle and nothing else; None otherwise."""
    if folder.is_symlink() or not (folder / BUNDLE_FILE).is_file():
        return None
    try:
        return read_record(folder, verify=True)
    except BundleError:
        return None
