"""Export a trained run as a self-contained bundle: what ``capfuse.bundle.Predictor`` needs, no more.

The bundle copies, per base model and fold, the files its kind saved at training time (a linear
model's coefficients, scaler and TF-IDF vocabulary; a net's ``best.safetensors``), the model's
resolved config, the kept second-level candidate (``ensemble/kept/``) and the thresholds, and
writes ``bundle.json`` last with a sha256 of every file. It holds no pickle and no training row.

What the pipeline computes at submission time from the training labels (the caption model and
threshold that predict rows without a usable image, or the class priors) is computed here, the
way ``capfuse infer`` computes it, and stored as numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

from capfuse import __version__
from capfuse.bundle.prune import blend_level, prune_models, read_oof
from capfuse.bundle.record import BUNDLE_FILE, FORMAT, seal
from capfuse.config.schema import resolve, resolve_model
from capfuse.data.dataset import Dataset
from capfuse.data.logits import read_logits
from capfuse.ensemble.decision import fit_global_threshold
from capfuse.ensemble.freshness import stale_second_level
from capfuse.ensemble.second_level import (
    KEPT_DIR,
    ensemble_dir,
    pipeline_models,
    threshold_rule,
    trained_models,
)
from capfuse.features.align import ALIGNMENT_FILE
from capfuse.features.image import effective_precision
from capfuse.models.linear import LINEAR_FILES
from capfuse.utils.io import current_umask, read_json, sha256_file, write_json
from capfuse.utils.log import log
from capfuse.utils.numeric import sigmoid

NET_FILES = ("best.safetensors",)
LINEAR_OPTIONAL = ("scaler_mean.npy", "scaler_scale.npy", "tfidf_terms.json", "tfidf_idf.npy")


class ExportError(ValueError):
    """The run cannot be exported as it is; the message names the model and the fix."""


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_exportable(name: str, settings) -> None:
    """Refuse, naming the model, every kind a bundle cannot replay yet: a wrong bundle is worse
    than none, since its predictions would look fine."""
    # A pseudo-label round (name@rK) is a net like any other once trained: the pseudo rows only
    # shaped its weights, which its folds saved. GloVe captions come from the same package
    # table at predict time (the bundle names it in the model's config), like the encoders.
    if settings.kind == "net":
        if settings.finetune:
            raise ExportError(f"{name}: fine-tuned (finetune: true) models cannot be exported yet")
    elif settings.kind != "linear":
        raise ExportError(f"{name}: model kind {settings.kind!r} cannot be exported")
    if "image" in settings.inputs and effective_precision(settings.image_encoder.cache_spec()) != "fp32":
        raise ExportError(f"{name}: int8 image encoders cannot be exported yet (their calibration is not kept)")


def _model_files(name: str, kind: str, fold_dir: Path) -> list[Path]:
    need = NET_FILES if kind == "net" else LINEAR_FILES
    missing = [f for f in need if not (fold_dir / f).exists()]
    if missing:
        raise ExportError(
            f"{name}: {fold_dir} lacks {', '.join(missing)} (trained before capfuse kept what predicting "
            f"needs): remove {fold_dir.parent} and run `make train` again"
        )
    extra = [fold_dir / f for f in LINEAR_OPTIONAL if kind == "linear" and (fold_dir / f).exists()]
    return [fold_dir / f for f in need] + extra


def _fallback(ds: Dataset, paths, trained: dict, own: set[str], rule: dict) -> dict:
    """How ``capfuse infer`` predicts a test row without a usable image: its best caption-only
    model at a global threshold fitted on that model's OOF probabilities, or the class priors."""
    caption_models = [m for m in trained if m in own and not trained[m]["needs_image"]]
    if caption_models:
        name = max(caption_models, key=lambda m: trained[m]["cv_mean_f1"])
        oof = sigmoid(read_logits(paths.model_dir(name) / "oof_logits.csv", ds.train_ids, ds.class_ids))
        t, _ = fit_global_threshold(ds.Y, oof, min_labels=rule["min_labels"], max_labels=rule["max_labels"])
        return {"model": name, "threshold": float(t)}
    return {"model": None, "priors": ds.Y.mean(0).tolist()}


def _model_copies(paths, trained: dict, names: list[str], k: int) -> tuple[dict[str, Path], dict]:
    """The files of every named model (bundle path -> run file) and its entry in bundle.json."""
    models: dict = {}
    copies: dict[str, Path] = {}
    for name in names:
        run = paths.model_dir(name)
        if name not in trained or not (run / "config.yaml").is_file():
            raise ExportError(
                f"{run}: no metrics.json or config.yaml, so {name}'s training did not finish: "
                "run `make train` and `make infer` again, then export"
            )
        model_cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        settings = resolve_model(model_cfg)
        check_exportable(name, settings)
        copies[f"models/{name}/config.yaml"] = run / "config.yaml"
        if "image" in settings.inputs and settings.image_encoder.align != "none":
            if not (run / ALIGNMENT_FILE).is_file():
                raise ExportError(f"{name}: {run / ALIGNMENT_FILE} not found: run `make train` again, then export")
            copies[f"models/{name}/{ALIGNMENT_FILE}"] = run / ALIGNMENT_FILE
        for fold in range(k):
            for f in _model_files(name, settings.kind, run / f"fold{fold}"):
                copies[f"models/{name}/fold{fold}/{f.name}"] = f
        models[name] = {
            "kind": settings.kind,
            "inputs": list(settings.inputs),
            "needs_image": bool(trained[name]["needs_image"]),
            "folds": k,
            "seed": settings.seed,
            "cv_mean_f1": trained[name]["cv_mean_f1"],
            "config": f"models/{name}/config.yaml",
        }
    return copies, models


def _mb(copies: dict[str, Path]) -> float:
    return round(sum(f.stat().st_size for f in copies.values()) / 2**20, 2)


def _with_fallback(names: list[str], fallback: dict) -> list[str]:
    return names + ([fallback["model"]] if fallback["model"] not in (None, *names) else [])


def _fast(ds: Dataset, oof: dict, models: dict, folds, rule: dict) -> dict | None:
    """``predict --fast``: the bundle's caption-only models, one fold each, blended and cut as
    refitted on their OOF. No image is embedded: the image backbone alone runs below the 100
    images/s asked of it on two cores (make bench), so no route that embeds images reaches it.
    A model's OOF rows are each predicted by one fold's model, so the nested score of this
    recipe describes a one-fold predictor."""
    names = [m for m, info in models.items() if not info["needs_image"]]
    if not names:
        return None
    return {"folds": 1, **blend_level(ds.Y, oof, names, folds, rule)}


def export_bundle(paths, cfg: dict, ds: Dataset, out: Path, *, top_k: int | None = None) -> dict:
    """Write the bundle folder ``out`` (which must not exist) and return ``bundle.json``'s content.

    ``top_k`` keeps only the best K of the second level's models by their drop-one nested
    contribution (``capfuse.bundle.prune``), the second level and threshold refitted on them."""
    ens = ensemble_dir(paths)
    for f in (ens / KEPT_DIR / "kept.json", ens / "thresholds.json", ens / "stack.json"):
        if not f.exists():
            raise ExportError(f"{f} not found: run `make infer` first (a stack stage older than bundles lacks kept/)")
    kept = read_json(ens / KEPT_DIR / "kept.json")
    cut = read_json(ens / "thresholds.json")
    stacked = read_json(ens / "stack.json")
    if kept["candidate"] != stacked["chosen"] or cut.get("candidate") != stacked["chosen"]:
        raise ExportError(f"{ens}: kept.json, stack.json and thresholds.json disagree: run `make infer` again")
    stale = stale_second_level(paths, ds)
    if stale:
        raise ExportError(
            f"{stale}: run `make infer` again, then export (a bundle must not pair new models with an old second level)"
        )
    if out.exists():
        raise ExportError(f"{out} exists: choose a new folder (bundles are never overwritten)")
    trained = trained_models(paths)
    own = set(pipeline_models(cfg, trained)) | set(kept["models"])
    rule = dict(cut.get("rule") or threshold_rule(cfg))  # the rule the thresholds were fitted under
    fallback = _fallback(ds, paths, trained, own, rule)
    folds = ds.folds()
    k = int(folds.max()) + 1
    pool = list(kept["models"])
    copies, models = _model_copies(paths, trained, _with_fallback(pool, fallback), k)
    full_mb = _mb(copies)

    second = dict(kept)
    chosen = cut["kind"]
    thresholds = {
        "kind": chosen,
        "values": float(cut["global"]["threshold"])
        if chosen == "global"
        else [float(cut["per_class"]["thresholds"][str(c)]) for c in ds.class_ids],
        **rule,
    }
    cv = {
        "second_level": stacked["candidates"][stacked["chosen"]],
        "thresholds_in_sample_mean_f1": cut[chosen]["in_sample"],
        "thresholds_nested_mean_f1": cut[chosen]["nested"],
    }
    oof = read_oof(paths, ds, sorted({*pool, *models}))
    pruning = None
    if top_k is not None and top_k < len(pool):
        names, steps = prune_models(ds.Y, oof, pool, folds, rule, top_k)
        level = blend_level(ds.Y, oof, names, folds, rule)
        second, thresholds = level["second_level"], level["thresholds"]
        cv = {
            "second_level": {"refitted_from_oof": True, "models": names},
            "thresholds_in_sample_mean_f1": level["in_sample_mean_f1"],
            "thresholds_nested_mean_f1": level["nested_mean_f1"],
        }
        # Rows without a usable image fall back on a kept caption model only: K means K models.
        fallback = _fallback(ds, paths, trained, set(names), rule)
        copies, models = _model_copies(paths, trained, _with_fallback(names, fallback), k)
        pruning = {"top_k": top_k, "from": pool, "kept": names, "steps": steps, "full_mb": full_mb}
        for step in steps:
            log.info(
                "top-k: dropped %s (nested mean F1 %.5f -> %.5f); contributions %s",
                step["dropped"],
                step["nested_before"],
                step["nested_after"],
                step["contribution"],
            )
    elif top_k is not None:
        log.info("top-k %d: the second level has %d models, nothing to drop", top_k, len(pool))
    for fold in second.get("folds", []):
        for part in fold["classes"]:
            if "booster" in part:
                copies[f"second_level/{part['booster']}"] = ens / KEPT_DIR / part["booster"]
    record = {
        "format": FORMAT,
        "capfuse_version": __version__,
        "git_commit": _git_commit(paths.root),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": paths.dataset,
        "classes": [{"id": int(c), "name": n} for c, n in zip(ds.class_ids, ds.val.classes.names)],
        "models": models,
        "second_level": second,
        "thresholds": thresholds,
        "image_fallback": fallback,
        "max_pixels": resolve(cfg).data.max_pixels,
        "cv": cv,
        "fast": _fast(ds, oof, models, folds, rule),
        "pruning": pruning,
    }
    # Written into a temporary folder renamed into place at the end: a failed export leaves no
    # half bundle behind that a later predict could load.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for rel, src in copies.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        write_json(tmp / "second_level" / "kept.json", second)
        record["files"] = {rel: sha256_file(tmp / rel) for rel in sorted([*copies, "second_level/kept.json"])}
        record = seal(record)  # the thresholds, weights and classes are hashed like the files
        write_json(tmp / BUNDLE_FILE, record)
        os.chmod(tmp, 0o777 & ~current_umask())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    record["size_mb"] = round(size / 2**20, 2)
    log.info("bundle %s: %d models x %d folds, %s, %.1f MB", out, len(models), k, second["candidate"], size / 2**20)
    return record
