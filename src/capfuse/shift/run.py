"""The shift report of a dataset: its inputs read from the run, the analyses, the files.

Inputs: the image vector the config's first cached-image model reads (from the feature cache
that training filled), the captions' TF-IDF projected on its top singular directions, and both
side by side. Writes ``runs/<dataset>/shift.json`` and ``runs/<dataset>/shift_scores.csv``
(``ImageID,score``: each training row's out-of-fold test-likeness) atomically, logs the table
and the warning, and returns the manifest's summary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml
from sklearn.decomposition import TruncatedSVD
from threadpoolctl import threadpool_limits

from capfuse.config.schema import resolve, resolve_model
from capfuse.data.dataset import Dataset
from capfuse.ensemble.second_level import config_models
from capfuse.ensemble.under_shift import Shift
from capfuse.features.store import FeatureStore, image_outputs, pooled_output, uses_cache
from capfuse.features.tfidf import fit_tfidf
from capfuse.shift import report as R
from capfuse.shift.adversarial import FIT_ROWS, adversarial, n_dims, reduce
from capfuse.shift.novelty import novelty as nn_novelty
from capfuse.utils.io import read_json, write_csv, write_json
from capfuse.utils.log import log, stage

REPORT_FILE = "shift.json"
SCORES_FILE = "shift_scores.csv"
# The encoder measured when no model of the config reads a pooled image vector (`capfuse shift`
# on a caption-only config): the schema's default image encoder and its pooled vector.
DEFAULT_IMAGE_MODEL = {"kind": "linear", "inputs": ["image"]}
MIN_TRAIN, MIN_TEST = 4, 2


def reads_pooled(model_cfg: dict) -> bool:
    """Does the model read a cached pooled image vector (not a token grid or map alone)?"""
    m = resolve_model(model_cfg)
    return "image" in m.inputs and uses_cache(m) and pooled_output(m) in image_outputs(m)


def image_model(paths, cfg: dict, models: dict[str, dict] | None) -> tuple[str, dict] | None:
    """Whose image vector to measure: the first of the config's trained models, in its order,
    that reads a cached pooled vector (its vectors are in the cache already); else, given
    ``models`` (the config's, resolved), the first of those that reads one, else the default
    encoder. None: no trained model reads one and ``models`` is not given (nothing is embedded)."""
    for name in config_models(cfg):
        file = paths.model_dir(name) / "config.yaml"
        if file.is_file():
            model_cfg = yaml.safe_load(file.read_text(encoding="utf-8"))
            if reads_pooled(model_cfg):
                return name, model_cfg
    if models is None:
        return None
    return next(((n, m) for n, m in models.items() if reads_pooled(m)), ("the default encoder", DEFAULT_IMAGE_MODEL))


def image_input(paths, cfg: dict, ds: Dataset, quiet: bool | None, models: dict[str, dict] | None) -> R.Input | None:
    """The image vectors of every training row and of the test rows with a usable image."""
    found = image_model(paths, cfg, models)
    if found is None:
        log.info("shift: no trained model of this config reads a cached image vector; image shift not measured")
        return None
    name, model_cfg = found
    m = resolve_model(model_cfg)
    spec, output = m.image_encoder.cache_spec(), pooled_output(m)
    vectors, _ = FeatureStore(ds, quiet).image(spec, output)
    n_train = len(ds.train_ids)
    ok = ds.val.test["image_ok"].to_numpy(bool)
    rows = np.flatnonzero(ok)
    return R.Input(
        "image",
        vectors[:n_train],  # memory-mapped: read once, when projected
        np.asarray(vectors[n_train:][rows]),
        rows,
        f"{spec.name} {output} vector ({name})",
        int(vectors.shape[1]),
    )


def caption_input(ds: Dataset, seed: int) -> R.Input | None:
    """TF-IDF of the captions (the linear models' vectoriser) on its top singular directions;
    None when the captions hold too few words to project (empty captions, a one-word vocabulary)."""
    train, test = list(ds.val.train["Caption"]), list(ds.val.test["Caption"])
    try:
        tfidf = fit_tfidf(train, test).transform(train + test)
    except ValueError:  # scikit-learn's "empty vocabulary"
        tfidf = None
    if tfidf is None or tfidf.shape[1] < 3:
        log.info("shift: the captions hold too few words to measure a caption shift")
        return None
    dims = n_dims(tfidf.shape[0], tfidf.shape[1] - 1)
    fit_rows = np.sort(np.random.default_rng(seed).choice(tfidf.shape[0], min(FIT_ROWS, tfidf.shape[0]), replace=False))
    svd = TruncatedSVD(dims, random_state=seed).fit(tfidf[fit_rows])
    z = svd.transform(tfidf).astype(np.float32)
    n_train = len(train)
    return R.Input(
        "caption", z[:n_train], z[n_train:], np.arange(len(test)), f"caption TF-IDF, top {dims} SVD", tfidf.shape[1]
    )


def analyse(ds: Dataset, inputs: dict[str, R.Input], seed: int) -> tuple[dict, np.ndarray | None]:
    """shift.json's content and the primary input's OOF score of every training row."""
    n_train = len(ds.train_ids)
    # The caption input arrives projected already (a sparse TF-IDF matrix has no dense PCA).
    reduced = {
        name: inp.stacked() if name == "caption" else reduce(inp.stacked(), seed=seed) for name, inp in inputs.items()
    }
    results = [adversarial(name, reduced[name], n_train, inp.dims, seed=seed) for name, inp in inputs.items()]
    if "image" in inputs and "caption" in inputs:
        image, caption = inputs["image"], inputs["caption"]
        keep = np.concatenate([np.arange(n_train), n_train + image.test_rows])
        both = np.concatenate([reduced["image"], reduced["caption"][keep]], axis=1)
        inputs["both"] = R.Input(
            "both",
            both[:n_train],
            both[n_train:],
            image.test_rows,
            "image and caption, side by side",
            image.dims + caption.dims,
        )
        results.append(adversarial("both", both, n_train, inputs["both"].dims, seed=seed))
    found = None
    if "image" in inputs:
        found = nn_novelty(reduced["image"][:n_train], reduced["image"][n_train:], seed=seed)
    report = R.build(ds.paths.dataset, ds.train_ids, ds.test_ids, results, inputs, found)
    return report, (R.primary(results).scores[:n_train] if results else None)


def shift_report(
    paths, cfg: dict, ds: Dataset, *, quiet: bool | None = None, models: dict[str, dict] | None = None
) -> dict:
    """Measure the train/test shift of ``ds``, write its files, log it; the manifest's summary.

    ``models`` (the config's models, resolved): with no trained model reading a cached image
    vector, embed the images for the first of them that reads one, or with the default encoder
    (minutes on a CPU), rather than leave the image input out.
    """
    with stage("shift", paths.dataset):
        seed = resolve(cfg).seed
        inputs = {}
        n_train, n_test = len(ds.train_ids), len(ds.test_ids)
        # Out-of-fold scores need two rows of each side per input, the null four training rows.
        if n_train >= MIN_TRAIN and n_test >= MIN_TEST:
            image = image_input(paths, cfg, ds, quiet, models)
            if image is not None and len(image.test_rows) >= MIN_TEST:
                inputs["image"] = image
            caption = caption_input(ds, seed)
            if caption is not None:
                inputs["caption"] = caption
        else:
            log.warning("shift: %d train and %d test rows are too few to measure a shift", n_train, n_test)
        # One BLAS thread: these are small decompositions and products, where threads that wait
        # on each other (or on another process's) cost up to 50 times the work.
        with threadpool_limits(1):
            report, scores = analyse(ds, inputs, seed)
        json_path = paths.runs / REPORT_FILE
        write_json(json_path, report)
        if scores is None:
            (paths.runs / SCORES_FILE).unlink(missing_ok=True)  # an older run's scores would mislead
        else:
            write_csv(paths.runs / SCORES_FILE, pd.DataFrame({"ImageID": ds.train_ids, "score": scores.round(6)}))
        log.info(
            "train/test shift (adversarial validation, %s; %s):\n%s",
            report["method"]["folds"],
            json_path,
            R.table(report),
        )
        if report["warning"]:
            log.warning("%s", report["warning"])
        else:
            log.info("shift: no input tells test from training rows better than random splits of training do")
        rel = json_path.relative_to(paths.root) if json_path.is_relative_to(paths.root) else json_path
        return R.summary(report, str(rel))


def read_shift(paths, ds: Dataset) -> Shift | None:
    """The dataset's last shift report as the second level reads it: the warning and every
    training row's test-likeness. None without a report, or when its rows are not ``ds``'s
    (a report of other data: the stage measures again)."""
    report_file, scores_file = paths.runs / REPORT_FILE, paths.runs / SCORES_FILE
    if not report_file.is_file():
        return None
    report = read_json(report_file)
    if report.get("rows", {}).get("train") != len(ds.train_ids):
        return None
    scores = None
    if scores_file.is_file():
        frame = pd.read_csv(scores_file, dtype={"ImageID": str}, keep_default_na=False)
        if frame["ImageID"].tolist() != list(ds.train_ids):
            return None
        scores = frame["score"].to_numpy(np.float64)
    rel = scores_file.relative_to(paths.root) if scores_file.is_relative_to(paths.root) else scores_file
    inputs = report.get("inputs")
    shifted = None if not isinstance(inputs, list) else frozenset(i["input"] for i in inputs if i.get("shifted"))
    return Shift(scores, bool(report.get("warning")), str(rel), shifted)
