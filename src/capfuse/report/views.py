"""One function per table or figure a reader looks at: a ``Run`` in, a DataFrame or Figure out.

The HTML report and the notebooks call exactly these, so a notebook cell is one call and the
report and the notebooks can never disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from capfuse.metrics import mean_sample_f1
from capfuse.metrics import per_class_table as _per_class_table
from capfuse.report import plots, tables
from capfuse.report.run import Run
from capfuse.shift.confidence import score_on_test_like_rows


# -- data --------------------------------------------------------------------------------
def data_summary(run: Run) -> pd.DataFrame:
    """The validator's counts as a two-column table."""
    s = run.ds.val.summary
    facts = {
        "train rows": s["train_rows"],
        "train rows usable": s["train_usable"],
        "train rows quarantined": s["train_quarantined"],
        "test rows (all kept)": s["test_rows"],
        "test rows without a usable image": s["test_without_image"],
        "test rows with an empty caption": s["test_empty_caption"],
        "classes": len(s["classes"]),
        "labels per train row (mean)": round(float(run.Y.sum(1).mean()), 3),
    }
    for kind in ("errors", "warnings"):
        facts[kind] = ", ".join(f"{k} {v}" for k, v in sorted(s[kind].items())) or "none"
    return pd.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]})


def findings(run: Run, limit: int = 50) -> pd.DataFrame:
    """The validator's findings (file, line, id, code, message), the first ``limit``."""
    rows = [
        {
            "severity": p.severity,
            "file": p.file,
            "line": p.line,
            "ImageID": p.image_id,
            "code": p.code,
            "message": p.message,
        }
        for p in run.ds.val.problems[:limit]
    ]
    return pd.DataFrame(rows, columns=["severity", "file", "line", "ImageID", "code", "message"])


def class_frequency(run: Run) -> pd.DataFrame:
    return tables.class_frequencies(run.Y, run.class_ids, run.class_names)


def class_frequency_figure(run: Run) -> Figure:
    return plots.class_frequency_plot(class_frequency(run))


def cooccurrence_figure(run: Run, normalise: bool = False) -> Figure:
    m = tables.cooccurrence(run.Y, run.class_ids, run.class_names, normalise=normalise)
    if normalise:
        return plots.heatmap(m, "P(column class | row class) on train rows", fmt="{:.2f}", vmax=1.0)
    return plots.heatmap(m, "Train rows holding both classes (diagonal: the class's rows)")


def caption_length_figure(run: Run) -> Figure:
    return plots.caption_length_plot(tables.caption_lengths(list(run.train["Caption"]), list(run.test["Caption"])))


def vocabulary(run: Run, top: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vocabulary facts as a table, and the ``top`` most frequent words."""
    facts, common = tables.vocabulary(list(run.train["Caption"]), list(run.test["Caption"]), top)
    return pd.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]}), common


def vocabulary_figure(run: Run, top: int = 20) -> Figure:
    return plots.bar_table_plot(vocabulary(run, top)[1], "word", "count", f"The {top} most frequent caption words")


def sample_images_figure(run: Run, n: int = 8, seed: int = 0) -> Figure:
    """``n`` train rows drawn with ``seed``: image, caption and label names."""
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(run.train), size=min(n, len(run.train)), replace=False))
    samples = pd.DataFrame(
        {
            "ImageID": run.train["ImageID"].iloc[picks].to_numpy(),
            "caption": run.train["Caption"].iloc[picks].to_numpy(),
            "labels": [", ".join(run.label_names(run.Y[i])) for i in picks],
        }
    )
    return plots.sample_grid(samples, run.image_path)


# -- folds and models ----------------------------------------------------------------------
def fold_balance(run: Run) -> pd.DataFrame:
    return tables.fold_balance(run.folds()["fold"].to_numpy(), run.Y, run.class_ids, run.class_names)


def fold_balance_figure(run: Run) -> Figure:
    return plots.fold_balance_plot(fold_balance(run))


def leaderboard(run: Run) -> pd.DataFrame:
    return run.leaderboard().sort_values("cv_mean_f1", ascending=False).reset_index(drop=True)


def leaderboard_figure(run: Run) -> Figure:
    return plots.leaderboard_plot(run.leaderboard())


# -- out-of-fold analysis ------------------------------------------------------------------
def per_class(run: Run, model: str | None = None) -> pd.DataFrame:
    """``metrics.per_class_table`` on the kept OOF (or ``model``'s), with the decision the pipeline uses."""
    oof = run.oof(model)
    return _per_class_table(run.Y, oof.pred, oof.probs, run.class_ids, run.class_names)


def per_class_figure(run: Run, model: str | None = None) -> Figure:
    title = "Per-class F1 and AP (out of fold)" if model is None else f"Per-class F1 and AP: {model} (out of fold)"
    return plots.per_class_f1_plot(per_class(run, model), title)


def threshold_curve(run: Run, model: str | None = None) -> pd.DataFrame:
    oof = run.oof(model)
    return tables.threshold_curve(run.Y, oof.probs, **run.rule)


def threshold_curve_figure(run: Run, model: str | None = None) -> Figure:
    """Mean F1 vs one global threshold; the thresholds ``make thresholds`` fitted are marked."""
    oof = run.oof(model)
    marks = {}
    cut = run.thresholds() if model is None else None
    if cut is not None:
        marks["fitted global threshold" + (" (used)" if cut["kind"] == "global" else "")] = cut["global"]["threshold"]
    elif np.ndim(oof.threshold) == 0:
        marks["threshold used"] = float(oof.threshold)
    title = "Mean F1 vs one global threshold (out of fold)" + ("" if model is None else f": {model}")
    return plots.threshold_curve_plot(threshold_curve(run, model), marks, title)


def class_threshold_figure(run: Run, model: str | None = None) -> Figure:
    """Each class's F1 against its own threshold; the dashed line is the cut-off in use."""
    oof = run.oof(model)
    curves = tables.class_threshold_curves(run.Y, oof.probs, run.class_ids, run.class_names)
    return plots.class_threshold_plot(curves, oof.threshold)


def confusions(run: Run, model: str | None = None, top: int = 15) -> pd.DataFrame:
    """The ``top`` most frequent (true class, wrongly predicted class) pairs."""
    oof = run.oof(model)
    return tables.pair_confusions(run.Y, oof.pred, run.class_ids, run.class_names).head(top)


def confusion_figure(run: Run, model: str | None = None) -> Figure:
    oof = run.oof(model)
    pairs = tables.pair_confusions(run.Y, oof.pred, run.class_ids, run.class_names)
    return plots.heatmap(
        tables.confusion_matrix(pairs, run.class_ids, run.class_names),
        "Rate of predicting the column class when only the row class (not it) is true",
        fmt="{:.2f}",
        cmap="Reds",
        xlabel="wrongly predicted",
        ylabel="true",
    )


def worst_examples(run: Run, model: str | None = None, k: int = 12) -> pd.DataFrame:
    oof = run.oof(model)
    return tables.worst_examples(
        run.Y, oof.pred, oof.probs, run.ds.train_ids, list(run.train["Caption"]), run.class_names, k
    )


def worst_examples_figure(run: Run, model: str | None = None, k: int = 8) -> Figure:
    return plots.worst_examples_plot(worst_examples(run, model, k), run.image_path)


# -- second level, rounds, ablation, submission ----------------------------------------------
def stacking(run: Run) -> pd.DataFrame | None:
    stack = run.stack_summary()
    return None if stack is None else tables.stacking_table(stack)


def stacking_figure(run: Run) -> Figure | None:
    table = stacking(run)
    return None if table is None else plots.stacking_plot(table)


def thresholds(run: Run) -> pd.DataFrame | None:
    cut = run.thresholds()
    return None if cut is None else tables.thresholds_table(cut)


def pseudo_rounds(run: Run) -> pd.DataFrame | None:
    rounds = run.table("pseudo_rounds")
    return None if rounds is None or rounds.empty else tables.pseudo_round_summary(rounds)


def ablation(run: Run, required: bool = False) -> pd.DataFrame | None:
    """``ablation.csv``; None when absent, or with ``required`` an error that says `make ablate`."""
    return run.table("ablation", "ablate" if required else None)


def ablation_figure(run: Run, required: bool = False) -> Figure | None:
    table = ablation(run, required)
    return None if table is None or table.empty else plots.ablation_plot(table)


def submission(run: Run) -> tuple[pd.DataFrame, pd.DataFrame, Figure] | None:
    """Facts of the latest submission (with its manifest's), per-class shares vs train priors, and the figure."""
    found = run.submission()
    if found is None:
        return None
    sub, manifest = found
    facts, per_cls, per_row = tables.submission_summary(sub, run.class_ids, run.class_names, run.Y)
    info = {
        "file": manifest.get("file", f"{run.dataset}-latest.csv"),
        "rows": facts["rows"],
        "labels per row (mean)": facts["labels_per_row"],
        "train labels per row (mean)": facts["train_labels_per_row"],
        "rows without a label": facts["empty_rows"],
    }
    for key, label in (("timestamp", "written"), ("git_commit", "git commit")):
        if manifest.get(key):
            info[label] = manifest[key]
    if manifest.get("second_level"):
        info["second level"] = manifest["second_level"].get("kept")
    if manifest.get("threshold"):
        info["thresholds"] = manifest["threshold"].get("kind")
    for key, label in (("cv_in_sample_mean_f1", "CV mean F1, in-sample"), ("cv_nested_mean_f1", "CV mean F1, nested")):
        if manifest.get(key) is not None:
            info[label] = manifest[key]
    if manifest.get("test_rows_without_image"):
        info["test rows predicted without their image"] = manifest["test_rows_without_image"]
    held_out = _held_out_f1(run, sub)
    if held_out is not None:
        info["test mean F1 vs test_labels.csv (demo answer key; never trained on)"] = held_out
    fig = plots.submission_plot(per_cls, per_row, tables.labels_per_row(run.Y))
    return pd.DataFrame({"": list(info), "value": [str(v) for v in info.values()]}), per_cls, fig


def _held_out_f1(run: Run, sub: pd.DataFrame) -> float | None:
    """The submission's mean F1 against the dataset's ``test_labels.csv``; None without one."""
    truth = run.test_truth()
    if truth is None or list(sub["ImageID"]) != run.ds.test_ids:
        return None
    pred = np.zeros_like(truth)
    index = {c: j for j, c in enumerate(run.class_ids)}
    for r, labels in enumerate(sub["Labels"]):
        pred[r, [index[int(x)] for x in str(labels).split()]] = 1
    return round(mean_sample_f1(truth, pred), 5)


# -- train/test shift ------------------------------------------------------------------------
def shift_warning(run: Run) -> str | None:
    """The shift report's one-line verdict; None before the report exists."""
    rep = run.shift_report()
    if rep is None:
        return None
    return (
        rep["warning"]
        or "No input tells test rows from training rows better than random splits of the training rows do."
    )


def shift_inputs(run: Run) -> pd.DataFrame | None:
    """Per input (image, caption, both): the adversarial classifier's out-of-fold AUC, its 95 %
    interval, the highest AUC of random splits of the training rows, and the verdict."""
    rep = run.shift_report()
    if rep is None or not rep["inputs"]:
        return None
    rows = [
        {
            "input": r["input"],
            "vectors": r["source"],
            "rows": r["rows"],
            "AUC": r["auc"],
            "CI low": r["ci95"][0],
            "CI high": r["ci95"][1],
            "null max": r["null_high"],
            "shift": "yes" if r["shifted"] else "no",
        }
        for r in rep["inputs"]
    ]
    return pd.DataFrame(rows)


def shift_estimates(run: Run) -> pd.DataFrame | None:
    """The submission's estimates of its test score (nested CV on all rows, on the test-like rows
    under a warning, from the models' confidence) and, where the dataset ships its answers, the
    held-out score they estimate with each one's distance to it; None before ``make infer``."""
    found = run.submission()
    if found is None:
        return None
    sub, manifest = found
    rows = []
    if manifest.get("cv_nested_mean_f1") is not None:
        rows.append(("nested CV, all rows", manifest["cv_nested_mean_f1"]))
    like = score_on_test_like_rows(manifest)
    if like is not None:
        rows.append((f"nested CV, the {like[0]:,} most test-like training rows", like[1]))
    if manifest.get("expected_test"):
        rows.append(("expected from the models' confidence on the test rows", manifest["expected_test"]["mean_f1"]))
    held_out = _held_out_f1(run, sub)
    table = pd.DataFrame(rows, columns=["estimate", "mean F1"])
    if held_out is not None:
        table["minus held-out"] = (table["mean F1"] - held_out).round(5)
        table.loc[len(table)] = ["held-out: test_labels.csv (never trained on)", held_out, 0.0]
    return table


def held_out_models(run: Run) -> pd.DataFrame | None:
    """Each base model's CV, test-like CV and held-out score (``held_out_models.csv``, written
    where the dataset ships its answers); None elsewhere."""
    return run.table("held_out_models")


def shift_novel_figure(run: Run, k: int = 4) -> Figure | None:
    """The ``k`` test images most unlike any training image, each beside its nearest training image."""
    rep = run.shift_report()
    novel = [] if rep is None else rep["test_most_novel"][:k]
    if not novel:
        return None
    test_captions = dict(zip(run.test["ImageID"], run.test["Caption"].astype(str)))
    train_captions = dict(zip(run.train["ImageID"], run.train["Caption"].astype(str)))
    items = []
    for r in novel:
        test_id, train_id = r["ImageID"], r["nearest_train"]
        items.append(
            {
                "path": run.image_path(test_id),
                "title": f"test {test_id} (distance {r['distance']:.3f})",
                "text": test_captions.get(test_id, ""),
            }
        )
        items.append(
            {
                "path": run.image_path(train_id),
                "title": f"its nearest: train {train_id}",
                "text": train_captions.get(train_id, ""),
            }
        )
    return plots.image_grid(items, "Test images most unlike any training image, each beside its nearest", columns=4)


def shift_like_figure(run: Run, k: int = 8) -> Figure | None:
    """The ``k`` training rows the adversarial classifier finds most like the test."""
    rep = run.shift_report()
    like = [] if rep is None else rep["train_most_test_like"][:k]
    if not like:
        return None
    captions = dict(zip(run.train["ImageID"], run.train["Caption"].astype(str)))
    items = [
        {
            "path": run.image_path(r["ImageID"]),
            "title": f"train {r['ImageID']} (test-likeness {r['test_likeness']:.2f})",
            "text": captions.get(r["ImageID"], ""),
        }
        for r in like
    ]
    return plots.image_grid(items, "Training rows most like the test (out-of-fold)", columns=4)
