"""The run report's sections, in reading order, each built from ``views`` on a ``Run``.

Section ids are fixed (``SECTION_IDS``): links and the browser test rely on them. An optional
artefact that is absent gives its section a "not run yet: `make X`" line instead of a body.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from capfuse.data.names import names_frame
from capfuse.report import html as H
from capfuse.report import plots, views
from capfuse.report.run import Run
from capfuse.report.shift import shift_section

SECTION_IDS = (
    "data",
    "folds",
    "shift",
    "models",
    "per-class",
    "thresholds",
    "stacking",
    "pseudo",
    "label-ratios",
    "ablation",
    "submission",
)


def check_required(run: Run) -> None:
    """Fail before any work when the run has no trained model or no fold file (names the file and the command)."""
    run.folds()
    run.leaderboard()


def data_section(run: Run) -> H.Section:
    s = H.Section("data", "Data and validation")
    s.add(
        H.rich(
            f"Dataset `{run.dataset}`: what the validator found in train.csv, test.csv and the images "
            f"(`runs/{run.dataset}/validation.txt` lists every finding)."
        ),
        H.table(views.data_summary(run)),
    )
    found = views.findings(run)
    if found.empty:
        s.add(H.text("No problems found."))
    else:
        s.add(H.heading(f"Findings (first {len(found)} of {len(run.ds.val.problems)})"), H.table(found))
    names = run.ds.names
    if names is not None and names.discovered:
        # No classes.csv: the names every table here shows were read off the captions.
        s.add(
            H.heading("Class names discovered from the captions"),
            H.rich(
                f"The dataset has no `classes.csv`: each class is named by the caption terms most specific "
                f"to it in the training rows (smoothed log-odds of a term with the label against without "
                f"it). Copy `runs/{run.dataset}/classes_discovered.csv` to the dataset's `classes.csv` and "
                "edit it to fix a name; inside cross-validation each fold's model read names discovered "
                "from its own training rows."
            ),
            H.table(names_frame(names.found)),
        )
    facts, _ = views.vocabulary(run)
    s.add(
        H.figure(views.class_frequency_figure(run), "train rows per class"),
        H.figure(views.cooccurrence_figure(run), "class co-occurrence"),
        H.figure(views.caption_length_figure(run), "caption lengths"),
        H.heading("Caption vocabulary"),
        H.table(facts),
    )
    return s


def folds_section(run: Run) -> H.Section:
    balance = views.fold_balance(run)
    k = sum(str(c).startswith("fold ") for c in balance.columns)
    worst = balance["spread"].idxmax() if balance["spread"].notna().any() else None
    s = H.Section("folds", "Fold balance")
    s.add(
        H.rich(
            f"{k} multilabel-stratified folds from `folds/{run.dataset}.csv`. `spread` = (largest − smallest "
            "fold count) / mean fold count; rare classes cannot split evenly."
            + (
                f" Largest spread: class {worst} {balance.loc[worst, 'name']} ({balance.loc[worst, 'spread']:.2f})."
                if worst is not None
                else ""
            )
        ),
        H.figure(views.fold_balance_figure(run), "fold balance"),
        H.table(balance, digits=3, index=True),
    )
    return s


def models_section(run: Run) -> H.Section:
    s = H.Section("models", "Base models: cross-validated scores")
    s.add(
        H.rich(
            f"From `runs/{run.dataset}/leaderboard.csv`: out-of-fold scores at each model's own global "
            "threshold; params, size and ms/image are the whole predictor, frozen encoders included."
        ),
        H.table(views.leaderboard(run)),
        H.figure(views.leaderboard_figure(run), "leaderboard"),
    )
    return s


def per_class_section(run: Run) -> H.Section:
    oof = run.kept_oof()
    s = H.Section("per-class", "Per-class scores")
    table = views.per_class(run)
    s.add(
        H.text(
            f"Out-of-fold predictions of the {oof.source}: support, predictions, precision, recall, F1 and AP "
            "per class (capfuse.metrics.per_class_table)."
        ),
        H.table(table, digits=3),
        H.figure(views.per_class_figure(run), "per-class F1"),
        H.heading("Most frequent confusions between classes"),
        H.text(
            "rows: OOF rows where the true class is present and the predicted class is not, yet predicted; "
            "rate: share of the rows with the true class and without the predicted one; together: rows where "
            "both are true (co-occurring classes are the usual suspects)."
        ),
        H.table(views.confusions(run, top=10), digits=3),
    )
    return s


def thresholds_section(run: Run) -> H.Section:
    s = H.Section("thresholds", "Thresholds")
    s.add(H.text(f"Curves on the out-of-fold predictions of the {run.kept_oof().source}."))
    cut = run.thresholds()
    if cut is None:
        s.add(H.missing("threshold search", run.make_hint("thresholds")))
    else:
        s.add(
            H.text(
                f"Used: {cut['kind'].replace('_', '-')} thresholds ({cut['why']}). In-sample: tuned and scored on "
                "the same OOF rows; nested: tuned on K−1 folds, scored on the held-out one."
            ),
            H.table(views.thresholds(run)),
        )
    s.add(
        H.figure(views.threshold_curve_figure(run), "mean F1 vs global threshold"),
        H.figure(views.class_threshold_figure(run), "per-class F1 vs threshold"),
    )
    return s


def stacking_section(run: Run) -> H.Section:
    s = H.Section("stacking", "Stacking gain")
    stack = run.stack_summary()
    if stack is None:
        return s.add(H.missing("second level", run.make_hint("stack")))
    table = views.stacking(run)
    kept = table.loc[table["kept"]].iloc[0]
    s.add(
        H.text(
            f"Kept: {stack['chosen']}; its nested mean F1 is {kept['nested_gain']:+.4f} over the best single "
            f"model. {stack['why']}."
        ),
        H.table(table),
        H.figure(views.stacking_figure(run), "stacking candidates"),
    )
    weights = stack["candidates"].get("weighted_blend", {}).get("weights")
    if weights:
        s.add(
            H.heading("Weighted blend: weight of each model"),
            H.table(pd.DataFrame({"model": list(weights), "weight": list(weights.values())}), digits=3),
        )
    return s


def pseudo_section(run: Run) -> H.Section:
    s = H.Section("pseudo", "Pseudo-label rounds")
    rounds = views.pseudo_rounds(run)
    if rounds is None:
        return s.add(
            H.rich(
                'No pseudo-label rounds in this run (`pseudo.rounds: 0`; `make train ARGS="--set '
                'pseudo.rounds=2"` runs them for the net models).'
            )
        )
    s.add(
        H.rich(
            f"From `runs/{run.dataset}/pseudo_rounds.csv`: CV per round and the pseudo-labels' counts (mean per "
            "fold); precision and recall against the answer key where the data has one."
        ),
        H.table(rounds),
        H.figure(plots.pseudo_rounds_plot(rounds), "pseudo-label rounds"),
    )
    return s


def label_ratios_section(run: Run) -> H.Section:
    s = H.Section("label-ratios", "Label ratios")
    ratios = run.table("label_ratios")
    if ratios is None or ratios.empty:
        return s.add(H.missing("label-ratio mode", run.make_hint("ratios")))
    s.add(
        H.rich(
            f"From `runs/{run.dataset}/label_ratios.csv`: the same held-out rows scored at every share of kept "
            "labels, without and with pseudo-label rounds."
        ),
        H.table(ratios),
        H.figure(plots.label_ratios_plot(ratios), "label ratios"),
    )
    return s


def ablation_section(run: Run) -> H.Section:
    s = H.Section("ablation", "Ablation")
    table = views.ablation(run)
    if table is None or table.empty:
        return s.add(H.missing("ablation", run.make_hint("ablate")))
    s.add(
        H.rich(f"From `runs/{run.dataset}/ablation.csv`: one row per variant."),
        H.table(table),
        H.figure(views.ablation_figure(run), "ablation"),
    )
    return s


def submission_section(run: Run) -> H.Section:
    s = H.Section("submission", "Submission")
    found = views.submission(run)
    if found is None:
        return s.add(H.missing("submission", run.make_hint("infer")))
    facts, per_class, fig = found
    s.add(
        H.rich(
            f"`submissions/{run.dataset}-latest.csv` and its manifest. A class predicted far more or less often "
            "than its train prior is where a threshold or a model is most likely off."
        ),
        H.table(facts),
        H.figure(fig, "submission label frequencies"),
        H.table(per_class, digits=3),
    )
    return s


BUILDERS = (
    data_section,
    folds_section,
    shift_section,
    models_section,
    per_class_section,
    thresholds_section,
    stacking_section,
    pseudo_section,
    label_ratios_section,
    ablation_section,
    submission_section,
)


def build_html(run: Run) -> str:
    check_required(run)
    sections = [build(run) for build in BUILDERS]
    assert tuple(s.id for s in sections) == SECTION_IDS, "SECTION_IDS and BUILDERS must agree"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_models = len(run.leaderboard())
    subtitle = (
        f"dataset {run.dataset}: {len(run.train)} train rows, {len(run.test)} test rows, "
        f"{len(run.class_ids)} classes, {n_models} trained models; generated {when}"
    )
    return H.page(f"capfuse run report: {run.dataset}", subtitle, sections)
