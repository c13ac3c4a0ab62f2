"""The infer stage: base models' logits → stack or blend → thresholds → checked submission + manifest.

The second level and the thresholds are fitted on out-of-fold predictions only
(``capfuse.ensemble.second_level``). Test rows whose image could not be
read are predicted by the caption models alone (or, with none, by the class priors), so no
test row is ever dropped.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse import __version__
from capfuse.budget import PLAN_FILE, Plan
from capfuse.budget.plan import nested_choice_skipped
from capfuse.config import deep_merge
from capfuse.config.schema import resolve
from capfuse.data.dataset import load_dataset
from capfuse.data.logits import read_logits
from capfuse.data.names import DISCOVERED_FILE
from capfuse.ensemble.decision import apply_threshold, fit_global_threshold
from capfuse.ensemble.second_level import (
    ensemble_dir,
    fit_stack,
    fit_thresholds,
    pipeline_models,
    read_probs,
    threshold_rule,
    thresholds_vector,
    trained_models,
)
from capfuse.ensemble.under_shift import most_test_like
from capfuse.metrics import summary as metric_summary
from capfuse.results.floor import floor_line, held_out
from capfuse.results.held_out_models import MODELS_FILE, model_scores
from capfuse.results.machine import machine_record
from capfuse.results.runs import HELD_OUT_FILE, plain_commit, preset_of, write_run_results
from capfuse.results.tables import command_line, results_dir, write_safely
from capfuse.shift import read_shift, shift_report
from capfuse.shift.confidence import confidence_estimate, estimate_line, line_on_test_like_rows
from capfuse.submission import predictions_to_frame, write_submission
from capfuse.utils.io import read_json, sha256_file, write_csv, write_json
from capfuse.utils.log import log, stage
from capfuse.utils.numeric import sigmoid


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _caption_fallback(
    ds, paths, trained: dict, rows: np.ndarray, binary: np.ndarray, min_labels: int, max_labels
) -> dict:
    """Predict test rows without a usable image from the best caption-only model, in place.

    The model need not be in the blend: the blend's image models saw zeros for these rows, so
    its scores there mean nothing. The caption model gets its own threshold, fitted on its own
    OOF predictions. With no caption model trained, the class priors decide (top class only).
    """
    ids = [ds.test_ids[i] for i in np.flatnonzero(rows)]
    caption_models = [m for m in trained if not trained[m]["needs_image"]]
    if caption_models:
        name = max(caption_models, key=lambda m: trained[m]["cv_mean_f1"])
        oof = sigmoid(read_logits(paths.model_dir(name) / "oof_logits.csv", ds.train_ids, ds.class_ids))
        test = sigmoid(read_logits(paths.model_dir(name) / "test_logits.csv", ds.test_ids, ds.class_ids))
        t, _ = fit_global_threshold(ds.Y, oof, min_labels=min_labels, max_labels=max_labels)
        binary[rows] = apply_threshold(test[rows], t, min_labels=min_labels, max_labels=max_labels)
        info = {"model": name, "threshold": round(float(t), 4)}
    else:
        prior = np.broadcast_to(ds.Y.mean(0), (int(rows.sum()), ds.Y.shape[1]))
        binary[rows] = apply_threshold(prior, 1.0, min_labels=max(1, min_labels), max_labels=max_labels)
        info = {"model": "class priors", "threshold": None}
    log.warning(
        "%d test rows have no usable image; predicted from %s (listed in the manifest)", len(ids), info["model"]
    )
    return dict(info, rows=ids)


# What each figure of the manifest is, and exactly which choices are nested (made without the
# labels of the rows they are scored on) and which are not.
CV_NOTE = {
    "cv": "OOF metrics of the submitted pipeline, thresholds fitted on the same OOF rows (in-sample)",
    "cv_nested_mean_f1": "every row scored by parts fitted without its fold's labels (nested)",
    "nested": [
        "base models: fold k's OOF logits come from a model trained on the other folds; net models stop at "
        "the best epoch on a stratified inner split of those folds' training rows (train.early_stop), never "
        "on fold k",
        "pseudo-label rounds: fold k's student learns from pseudo-labels of the fold-k producer, which never saw "
        "fold k; class cut-offs use the training rows' priors",
        "second level: blend weights and the LightGBM stacker for fold k are fitted on the other folds' OOF rows",
        "second level under a shift warning: the candidate for fold k's rows is chosen on the test-like rows of "
        "the other folds alone (second_level.choice)",
        "thresholds: the global and per-class thresholds scored on fold k are tuned on the other K-1 folds",
    ],
    "not_nested": [
        "the choice among second-level candidates without a shift warning, and between global and per-class "
        "thresholds: the best nested score among a handful of options, so it is slightly optimistic",
        "when pseudo-label rounds stop (pseudo.min_gain compares CV across rounds)",
        "configs and hyperparameters, chosen by people looking at CV figures",
    ],
}


def run_infer(
    paths,
    cfg: dict,
    *,
    quiet: bool | None = None,
    timestamp: str | None = None,
    storage: str | None = None,
    plan: Plan | None = None,
    started: float | None = None,
    replaying: bool = False,
) -> dict:
    """stack → thresholds → the checked submission and its manifest; with a budget's ``plan``,
    the second level stacks the models the plan kept and finished, nothing else."""
    if plan is not None:
        cfg = deep_merge(cfg, {"ensemble": {"models": plan.ensemble_names(resolve(cfg).ensemble.rounds)}})
        if plan.threshold_trials is not None:
            cfg = deep_merge(cfg, {"threshold": {"trials": plan.threshold_trials}})
        if plan.candidates is not None:
            cfg = deep_merge(cfg, {"ensemble": {"candidates": list(plan.candidates)}})
    ds = load_dataset(paths, cfg, quiet=quiet)
    # The shift report first (runs/<dataset>/shift.json; the manifest gets its summary): under a
    # shift the second level chooses on the training rows most like the test.
    shift = shift_report(paths, cfg, ds, quiet=quiet)
    shift_view = read_shift(paths, ds)
    unnested = None if plan is None else _unnested_under_budget(paths, cfg, ds, plan, shift_view, started, replaying)
    stacked = fit_stack(paths, cfg, ds, shift_view, unnested)
    cut = fit_thresholds(paths, cfg, ds, storage=storage)
    with stage("submit", paths.dataset):
        folds = ds.folds()
        # The caption fallback draws from this config's models and those it stacks, never from
        # whatever else another config left in runs/<dataset>/.
        trained = trained_models(paths)
        own = set(pipeline_models(cfg, trained)) | set(stacked["base_models"])
        trained = {m: metrics for m, metrics in trained.items() if m in own}
        class_ids = ds.class_ids
        image_ok = ds.val.test["image_ok"].to_numpy(bool)
        out = ensemble_dir(paths)
        oof_p = read_probs(out / "oof_probs.csv", ds.train_ids, class_ids)
        test_p = read_probs(out / "test_probs.csv", ds.test_ids, class_ids)

        rule = threshold_rule(cfg)
        threshold = thresholds_vector(cut, class_ids)
        oof_pred = apply_threshold(oof_p, threshold, **rule)
        cv = metric_summary(ds.Y, oof_pred, oof_p)
        binary = apply_threshold(test_p, threshold, **rule)
        fallback = None
        if not image_ok.all():
            fallback = _caption_fallback(ds, paths, trained, ~image_ok, binary, rule["min_labels"], rule["max_labels"])
        sub = predictions_to_frame(ds.test_ids, binary, class_ids)

        chosen = cut["kind"]
        manifest = {
            "capfuse_version": __version__,
            "git_commit": git_commit(paths.root),
            "dataset": paths.dataset,
            "data_dir": str(paths.data_dir),
            "data_checksum": {f: sha256_file(paths.data_dir / f) for f in ("train.csv", "test.csv")},
            "folds_file": str(paths.folds_file.relative_to(paths.root))
            if paths.folds_file.is_relative_to(paths.root)
            else str(paths.folds_file),
            "folds_sha256": sha256_file(paths.folds_file),
            "k": int(folds.max()) + 1,
            "models": stacked["base_models"],
            "second_level": {
                "kept": stacked["chosen"],
                "why": stacked["why"],
                "candidates": stacked["candidates"],
                # Which score chose (all rows, or the test-like rows under a shift) and why.
                **({"choice": stacked["choice"]} if "choice" in stacked else {}),
            },
            "threshold": {
                "kind": chosen,
                "why": cut["why"],
                "global": cut["global"]["threshold"],
                "per_class": cut["per_class"]["thresholds"],
                **rule,
                "optuna_trials": cut["trials"],
                "study": cut["study"],
            },
            "cv": {k: round(float(v), 5) for k, v in cv.items()},
            "cv_in_sample_mean_f1": cut[chosen]["in_sample"],
            "cv_nested_mean_f1": cut[chosen]["nested"],
            "cv_note": CV_NOTE,
            # Label-free: the test rows' probabilities and decisions, none of their labels.
            "expected_test": confidence_estimate(cut[chosen]["nested"], oof_p, oof_pred, test_p, binary),
            "test_rows": len(ds.test_ids),
            "test_rows_without_image": int((~image_ok).sum()),
            "image_fallback": fallback,
            "train_rows_quarantined": int(len(ds.val.quarantine)),
            "shift": shift,
        }
        if plan is not None:
            manifest["plan"] = {
                "time_limit_s": plan.time_limit_s,
                # The whole command so far (``started``: when `capfuse all` began), which the budget counts.
                "command_s": None if started is None else round(time.monotonic() - started, 1),
                "threshold_trials": plan.threshold_trials,
                "candidates": plan.candidates,
                "shift_choice": plan.shift_choice,
                "embed": {"predicted_s": round(plan.embed_s(), 1), "measured_s": plan.embed_measured_s},
                "file": str(paths.runs / PLAN_FILE),
                "models": [
                    {
                        "name": m.name,
                        "status": m.status,
                        "epochs": m.epochs,
                        "rounds": m.rounds_done,
                        "predicted_s": m.train_s,  # its training: the encoders have a line of their own
                        "measured_s": m.measured_s,
                        "why": m.why,
                    }
                    for m in plan.models
                ],
            }
        if ds.names is not None and ds.names.source != "file":
            # No classes.csv: say which names the label-reading models and the report used.
            manifest["class_names"] = {
                "source": ds.names.source,
                "names": dict(zip(map(str, class_ids), ds.names.names)),
                "file": str(paths.runs / DISCOVERED_FILE) if ds.names.discovered else None,
            }
        written = write_submission(
            sub, ds.test_ids, class_ids, paths.submissions, paths.dataset, manifest, timestamp=timestamp
        )
        log.info("%s over %d base models, %s thresholds", stacked["chosen"], len(stacked["base_models"]), chosen)
        log.info(
            "CV mean F1 %.4f (nested %.4f) | micro F1 %.4f | macro F1 %.4f | mAP %.4f",
            cv["mean_f1"],
            manifest["cv_nested_mean_f1"],
            cv["micro_f1"],
            cv["macro_f1"],
            cv["map"],
        )
        for path in written.values():
            log.info("wrote %s", path)
        # A demo dataset ships its answers: is the submission right, not only well formed?
        floor = held_out(ds, written["latest_csv"])
        if floor is not None:
            write_json(paths.runs / HELD_OUT_FILE, floor)
            (log.info if floor["passes"] else log.warning)("%s", floor_line(floor))
            scores = None if shift_view is None else shift_view.scores
            like = None if scores is None else most_test_like(scores, resolve(cfg).ensemble.shift.share)
            table = model_scores(ds, paths, list(stacked["base_models"]), like, rule)
            if table is not None:
                write_csv(paths.runs / MODELS_FILE, table)
                log.info("base models on the held-out answers (%s):\n%s", MODELS_FILE, table.to_string(index=False))
        else:
            for stale in (HELD_OUT_FILE, MODELS_FILE):  # an earlier run's, of other answers
                (paths.runs / stale).unlink(missing_ok=True)
        return {"manifest": manifest, "paths": {k: str(v) for k, v in written.items()}}


def _unnested_under_budget(paths, cfg: dict, ds, plan: Plan, shift_view, started, replaying: bool) -> str | None:
    """Why the second level may not nest its choice on the test-like rows in what the budget has
    left (None: it may). Decided on the clock once and kept in the plan; a replay reads it."""
    if replaying:
        return plan.shift_choice
    settings = resolve(cfg).ensemble.shift
    warned = shift_view is not None and shift_view.warned
    active = settings.use == "always" or (settings.use == "auto" and warned)
    why = None
    if active and started is not None:
        left = started + plan.time_limit_s - time.monotonic()
        why = nested_choice_skipped(
            plan, folds=int(ds.folds().max()) + 1, trials=resolve(cfg).threshold.trials, left_s=left
        )
    if why != plan.shift_choice:
        plan.shift_choice = why
        plan.write(paths.runs / PLAN_FILE)
    return why


def summary_table(paths) -> str:
    """The final summary: base models, second-level candidates, thresholds in-sample and nested."""
    parts = []
    board = paths.runs / "leaderboard.csv"
    if board.exists():
        parts.append(
            "Base models (out-of-fold, one global threshold fitted on the OOF rows):\n"
            + pd.read_csv(board).to_string(index=False)
        )
    out = ensemble_dir(paths)
    if (out / "candidates.csv").exists():
        parts.append(
            "Second level (nested_mean_f1: global threshold fitted on the other folds):\n"
            + pd.read_csv(out / "candidates.csv").to_string(index=False)
        )
    if (out / "thresholds.json").exists():
        t = read_json(out / "thresholds.json")
        rows = [
            {
                "thresholds": kind,
                "in_sample": t[kind]["in_sample"],
                "nested": t[kind]["nested"],
                "gap": t[kind]["gap"],
                "used": t["kind"] == kind,
            }
            for kind in ("global", "per_class")
        ]
        parts.append(
            f"Thresholds on {t.get('candidate')} (nested: tuned on K-1 folds, scored on the held-out one):\n"
            + pd.DataFrame(rows).to_string(index=False)
        )
    return "\n\n".join(parts)


def write_results_file(args, paths, cfg: dict, quiet: bool) -> None:
    """The run's ``results/runs/`` file, once the command has ended and its timings are in
    ``runs/<dataset>/timings.csv`` (the CLI calls it then: ``Command.after``). Only where
    ``--results`` or ``$CAPFUSE_RESULTS`` says, and never failing the run it describes."""
    root = results_dir(getattr(args, "results", None))
    if root is None:
        return

    def write():
        manifest = read_json(paths.submissions / f"{paths.dataset}-latest.json")
        config = Path(args.config)
        presets = paths.root / "configs" / "presets"
        # A budgeted run is its preset's even when the plan dropped some of its models.
        planned = [m["name"] for m in (manifest.get("plan") or {}).get("models", [])]
        preset = preset_of(planned or manifest.get("models") or {}, presets, config) or config.stem
        machine = machine_record(paths.root, commit=plain_commit(manifest.get("git_commit"))).fields()
        overrides = list(getattr(args, "overrides", None) or [])
        return write_run_results(
            root, paths.runs, manifest, preset=preset, machine=machine, command=command_line(), overrides=overrides
        )

    write_safely(root / "runs", write)


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    # A budgeted `capfuse all` (--time-limit or --plan): the train step wrote the plan it kept to.
    budgeted = getattr(args, "time_limit", None) is not None or getattr(args, "plan", None) is not None
    plan = Plan.read(paths.runs / PLAN_FILE) if budgeted else None
    result = run_infer(
        paths,
        cfg,
        quiet=quiet,
        storage=args.storage,
        plan=plan,
        started=getattr(args, "started", None),
        replaying=getattr(args, "plan", None) is not None,
    )
    m = result["manifest"]
    print("\n" + summary_table(paths))
    print(
        f"\nSubmission: {result['paths']['latest_csv']}  ({m['second_level']['kept']}, {m['threshold']['kind']} thresholds)"
    )
    print(
        f"CV mean F1 of the submitted pipeline: {m['cv']['mean_f1']:.4f} in-sample, "
        f"{m['cv_nested_mean_f1']:.4f} nested  (mAP {m['cv']['map']:.4f})"
    )
    for line in (line_on_test_like_rows(m), estimate_line(m)):
        if line:
            print(line)
    print(f"Shift: {m['shift']['warning'] or 'none beyond what random splits show'} ({m['shift']['file']})")
    return 0
