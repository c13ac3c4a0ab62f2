"""Figures for the report and the notebooks: each function takes a table from
``capfuse.report.tables`` (or an artefact table) and returns a matplotlib ``Figure``.

Figures are built with the object-oriented API (``Figure``, never ``pyplot``), so no global
figure state builds up across a report and no GUI backend is ever needed; ``figure_png``
renders one with Agg.

Every string that comes from data or a user (captions, class names, ImageIDs, model, variant
and group names, titles that hold them) goes through ``literal`` before matplotlib sees it.

Why this module is long: one short function per figure of the report and the notebooks,
sharing the style helpers at its top; split by figure, the shared style would scatter.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image, ImageOps

from capfuse.data.images import to_rgb

COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


def literal(text) -> str:
    """``text`` as matplotlib draws it letter for letter.

    Two dollar signs make matplotlib parse the text between them as math: a caption such as
    ``$\\frac{1}{$`` then fails the whole report, and ``costs $5 or $6`` loses its dollars. An
    escaped dollar is drawn as a plain one. Escaping (rather than ``parse_math=False``) also
    reaches the texts matplotlib makes itself: tick labels, categorical axes and legend entries.
    """
    return str(text).replace("$", r"\$")


def figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _bar_labels(ax, bars, fmt: str = "{:.3f}") -> None:
    for bar in bars:
        w = bar.get_width()
        if np.isfinite(w):
            ax.text(w, bar.get_y() + bar.get_height() / 2, " " + fmt.format(w), va="center", fontsize=7)


def class_frequency_plot(freq: pd.DataFrame, title: str = "Train rows per class") -> Figure:
    """Horizontal bars of ``class_frequencies``, most frequent on top."""
    fig = figure(7, 0.25 * len(freq) + 1.2)
    ax = fig.add_subplot()
    bars = ax.barh([literal(f"{i} {n}") for i, n in zip(freq["id"], freq["name"])], freq["count"], color=COLOURS[0])
    _bar_labels(ax, bars, "{:.0f}")
    ax.invert_yaxis()
    ax.set_xlabel("rows with the class")
    ax.set_title(literal(title))
    return fig


def heatmap(
    matrix: pd.DataFrame,
    title: str,
    *,
    fmt: str = "{:.0f}",
    cmap: str = "Blues",
    xlabel: str = "",
    ylabel: str = "",
    vmin: float = 0.0,
    vmax: float | None = None,
) -> Figure:
    """A labelled heatmap with each cell's value written in it (NaN cells left blank)."""
    n_rows, n_cols = matrix.shape
    fig = figure(max(0.42 * n_cols + 3.2, 6.0), 0.38 * n_rows + 2.0)
    ax = fig.add_subplot()
    values = matrix.to_numpy(dtype=float)
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n_cols), [literal(c) for c in matrix.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(n_rows), [literal(r) for r in matrix.index], fontsize=7)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if np.isfinite(v) and v != 0:
                r, g, b, _ = im.cmap(im.norm(v))  # white text on dark cells, whatever the colour map
                ax.text(
                    j,
                    i,
                    fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=5.5,
                    color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black",
                )
    ax.set_xlabel(literal(xlabel))
    ax.set_ylabel(literal(ylabel))
    ax.set_title(literal(title))
    fig.colorbar(im, ax=ax, shrink=0.7)
    return fig


def caption_length_plot(lengths: pd.DataFrame) -> Figure:
    """Histogram of words per caption, train and test overlaid (as shares, so sizes compare)."""
    fig = figure(7, 3)
    ax = fig.add_subplot()
    top = int(lengths["words"].max()) if len(lengths) else 1
    bins = np.arange(0, top + 2) - 0.5
    for i, (split, part) in enumerate(lengths.groupby("split", sort=False)):
        ax.hist(
            part["words"],
            bins=bins,
            alpha=0.55,
            density=True,
            color=COLOURS[i],
            label=literal(f"{split} (mean {part['words'].mean():.1f} words)"),
        )
    ax.set_xlabel("words per caption")
    ax.set_ylabel("share of captions")
    ax.set_title("Caption lengths")
    ax.legend()
    return fig


def bar_table_plot(table: pd.DataFrame, label: str, value: str, title: str, xlabel: str = "") -> Figure:
    """Horizontal bars of one column of a table (e.g. the most frequent words)."""
    fig = figure(7, 0.25 * len(table) + 1.2)
    ax = fig.add_subplot()
    bars = ax.barh([literal(v) for v in table[label]], table[value], color=COLOURS[2])
    _bar_labels(ax, bars, "{:.0f}")
    ax.invert_yaxis()
    ax.set_xlabel(literal(xlabel or value))
    ax.set_title(literal(title))
    return fig


def thumbnail(path: Path, side: int = 192) -> np.ndarray | None:
    """An upright RGB thumbnail (aspect kept) of an image, or None if it cannot be read."""

    try:
        with Image.open(path) as im:
            im.draft("RGB", (side, side))
            im = ImageOps.exif_transpose(im)
            # The thumbnail's own size, so that a 16-bit image is shrunk before its float copy.
            scale = min(1.0, side / max(im.width, im.height, 1))
            fit = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = to_rgb(im, shrink_to=fit)
            im.thumbnail((side, side))
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def image_grid(items: Sequence[dict], title: str, columns: int = 4, side: int = 192, wrap: int = 38) -> Figure:
    """Images with text under each: ``items`` are dicts with ``path``, ``title`` and ``text``."""
    rows = max(1, -(-len(items) // columns))
    fig = figure(3.2 * columns, 3.9 * rows)
    for k, item in enumerate(items):
        ax = fig.add_subplot(rows, columns, k + 1)
        img = thumbnail(item["path"], side)
        if img is None:
            ax.text(0.5, 0.5, "image unreadable", ha="center", va="center", transform=ax.transAxes, color="#C44E52")
        else:
            ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(literal(item["title"]), fontsize=8)
        # Each line of the text (caption, truth, prediction) is wrapped on its own.
        lines = [w for part in item["text"].split("\n") for w in (textwrap.wrap(part, wrap) or [""])]
        ax.set_xlabel(literal("\n".join(lines[:8])), fontsize=7, loc="left")
    fig.suptitle(literal(title))
    return fig


def sample_grid(samples: pd.DataFrame, image_path, columns: int = 4) -> Figure:
    """``samples``: ImageID, caption, labels (names); ``image_path`` maps an id to its file."""
    items = [
        {"path": image_path(r.ImageID), "title": r.ImageID, "text": f"{r.caption}\n[{r.labels}]"}
        for r in samples.itertuples(index=False)
    ]
    return image_grid(items, "Sample train images: caption, then [labels]", columns)


def worst_examples_plot(worst: pd.DataFrame, image_path, columns: int = 4) -> Figure:
    """``tables.worst_examples`` with the images: caption, truth and prediction (probabilities)."""
    items = [
        {
            "path": image_path(r.ImageID),
            "title": f"{r.ImageID}  F1 {r.f1:.2f}",
            "text": f"{r.caption}\ntrue: {r.truth}\npred: {r.predicted}",
        }
        for r in worst.itertuples(index=False)
    ]
    return image_grid(items, "Worst out-of-fold rows (lowest sample F1)", columns, wrap=44)


def per_class_f1_plot(table: pd.DataFrame, title: str = "Per-class F1 and AP (out of fold)") -> Figure:
    """``metrics.per_class_table``: F1 and AP per class, best F1 on top, support in the label."""
    t = table.sort_values("f1", na_position="first").reset_index(drop=True)
    fig = figure(7.5, 0.3 * len(t) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(t))
    labels = [literal(f"{i} {n} (n={s})") for i, n, s in zip(t["id"], t["name"], t["support"])]
    bars = ax.barh(y - 0.2, t["f1"], height=0.4, color=COLOURS[0], label="F1")
    ax.barh(y + 0.2, t["ap"], height=0.4, color=COLOURS[1], alpha=0.7, label="AP")
    _bar_labels(ax, bars, "{:.2f}")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("score")
    ax.set_title(literal(title))
    ax.legend(loc="lower right")
    return fig


def threshold_curve_plot(
    curve: pd.DataFrame,
    marks: dict[str, float] | None = None,
    title: str = "Mean F1 over samples vs one global threshold",
) -> Figure:
    fig = figure(7, 3.4)
    ax = fig.add_subplot()
    ax.plot(curve["threshold"], curve["mean_f1"], color=COLOURS[0], lw=2)
    best = curve.loc[curve["mean_f1"].idxmax()]
    ax.scatter(
        [best["threshold"]],
        [best["mean_f1"]],
        color=COLOURS[3],
        zorder=3,
        label=f"best on the grid: {best['threshold']:.2f} → {best['mean_f1']:.4f}",
    )
    for i, (name, t) in enumerate((marks or {}).items()):
        ax.axvline(t, color=COLOURS[(i + 2) % len(COLOURS)], ls="--", lw=1, label=literal(f"{name}: {t:.3f}"))
    ax.set_xlabel("threshold (probability)")
    ax.set_ylabel("mean F1 over samples")
    ax.set_title(literal(title))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def class_threshold_plot(
    curves: pd.DataFrame,
    chosen: Sequence[float] | float | None = None,
    columns: int = 6,
    title: str = "Each class's F1 vs its threshold (dashed: the threshold used)",
) -> Figure:
    """Small multiples of ``tables.class_threshold_curves``, one panel per class."""
    n = curves.shape[1]
    rows = -(-n // columns)
    fig = figure(2.1 * columns, 1.7 * rows + 0.5)
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    x = curves.index.to_numpy(dtype=float)
    cut = np.broadcast_to(np.asarray(chosen, dtype=float), (n,)) if chosen is not None else None
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_visible(False)
            continue
        y = curves.iloc[:, k].to_numpy(dtype=float)
        ax.plot(x, y, color=COLOURS[0], lw=1.3)
        if cut is not None:
            ax.axvline(cut[k], color=COLOURS[3], ls="--", lw=0.9)
        ax.set_title(literal(curves.columns[k]), fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    fig.suptitle(literal(title), fontsize=10)
    return fig


def leaderboard_plot(board: pd.DataFrame) -> Figure:
    """CV mean F1 and mAP of every trained model, best on top."""
    b = board.sort_values("cv_mean_f1").reset_index(drop=True)
    fig = figure(7, 0.35 * len(b) + 1.3)
    ax = fig.add_subplot()
    y = np.arange(len(b))
    bars = ax.barh(y + 0.2, b["cv_mean_f1"], height=0.4, color=COLOURS[0], label="CV mean F1")
    if "cv_map" in b:
        ax.barh(y - 0.2, b["cv_map"], height=0.4, color=COLOURS[1], alpha=0.7, label="CV mAP")
    _bar_labels(ax, bars)
    ax.set_yticks(y, [literal(m) for m in b["model"]], fontsize=8)
    lo = float(np.nanmin(b[[c for c in ("cv_mean_f1", "cv_map") if c in b]].to_numpy(dtype=float)))
    ax.set_xlim(max(0.0, lo - 0.1), 1.0)
    ax.set_xlabel("out-of-fold score")
    ax.set_title("Base models (out of fold, global threshold per model)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def fold_balance_plot(balance: pd.DataFrame) -> Figure:
    """Each fold's share of each class's positives (1/k everywhere is a perfect split)."""
    folds = [c for c in balance.columns if str(c).startswith("fold ")]
    share = balance[folds].div(balance["total"].where(balance["total"] > 0), axis=0)
    share.index = [f"{i} {n}" for i, n in zip(balance.index, balance["name"])]
    ideal = 1 / max(len(folds), 1)
    # Colours centred on the ideal share, so that only the folds that deviate stand out.
    spread = max(float(np.nanmax(np.abs(share.to_numpy(dtype=float) - ideal), initial=0.0)), 0.02)
    # Folds as rows: k is small and the classes many, so the figure stays wide and short.
    return heatmap(
        share.T,
        f"Share of each class's positives per fold (ideal {ideal:.2f}; red: more, blue: fewer)",
        fmt="{:.2f}",
        cmap="RdBu_r",
        vmin=ideal - spread,
        vmax=ideal + spread,
    )


def stacking_plot(table: pd.DataFrame) -> Figure:
    """In-sample and nested mean F1 of each second-level candidate; the kept one is marked."""
    t = table.iloc[::-1].reset_index(drop=True)
    fig = figure(7, 0.45 * len(t) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(t))
    ax.barh(y + 0.2, t["cv_mean_f1"], height=0.4, color=COLOURS[7], label="in-sample")
    bars = ax.barh(y - 0.2, t["nested_mean_f1"], height=0.4, color=COLOURS[0], label="nested (honest)")
    _bar_labels(ax, bars, "{:.4f}")
    ax.set_yticks(y, [literal(f"{c} (kept)" if k else c) for c, k in zip(t["candidate"], t["kept"])], fontsize=8)
    lo = float(np.nanmin(t[["cv_mean_f1", "nested_mean_f1"]].to_numpy(dtype=float)))
    ax.set_xlim(max(0.0, lo - 0.05), 1.0)
    ax.set_xlabel("CV mean F1 over samples")
    ax.set_title("Second level: candidates on the same folds")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def pseudo_rounds_plot(summary: pd.DataFrame) -> Figure:
    """CV mean F1 per pseudo-label round, one line per base model."""
    fig = figure(6, 3.2)
    ax = fig.add_subplot()
    for i, (name, part) in enumerate(summary.groupby("base_model")):
        ax.plot(part["round"], part["cv_mean_f1"], marker="o", color=COLOURS[i % len(COLOURS)], label=literal(name))
    ax.set_xlabel("round (0: labelled data only)")
    ax.set_ylabel("CV mean F1")
    ax.set_title("Pseudo-label rounds")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def label_ratios_plot(ratios: pd.DataFrame) -> Figure:
    """CV mean F1 against the share of labels kept, without and with pseudo-label rounds."""
    fig = figure(6, 3.2)
    ax = fig.add_subplot()
    for i, (name, part) in enumerate(ratios.groupby("model")):
        part = part.sort_values("percent")
        ax.plot(
            part["percent"],
            part["cv_mean_f1_without"],
            marker="o",
            ls="--",
            color=COLOURS[i % len(COLOURS)],
            label=literal(f"{name}: labelled only"),
        )
        if "cv_mean_f1_with" in part:
            ax.plot(
                part["percent"],
                part["cv_mean_f1_with"],
                marker="s",
                color=COLOURS[i % len(COLOURS)],
                label=literal(f"{name}: best pseudo round"),
            )
    ax.set_xscale("log")
    ax.set_xticks(sorted(ratios["percent"].unique()), [f"{p:g} %" for p in sorted(ratios["percent"].unique())])
    ax.set_xlabel("share of train labels kept")
    ax.set_ylabel("CV mean F1")
    ax.set_title("Label-ratio mode")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


ABLATION_METRICS = (("mean_f1", "CV mean F1"), ("map", "CV mAP"), ("gap_at_10", "GAP@10"), ("minutes", "minutes"))


def ablation_plot(table: pd.DataFrame) -> Figure:
    """One panel per metric of ``ablation.csv`` that has values (mean F1, mAP, GAP@10, minutes),
    one bar per variant coloured by its group; a dashed line marks the ``reference`` group's
    score. Columns beyond these are ignored."""
    if "variant" not in table or "mean_f1" not in table:
        raise ValueError(f"an ablation table needs the columns variant and mean_f1, got {list(table.columns)}")
    metrics = [
        (c, label)
        for c, label in ABLATION_METRICS
        if c in table and pd.to_numeric(table[c], errors="coerce").notna().any()
    ]
    groups = list(dict.fromkeys(table["group"].fillna("").astype(str))) if "group" in table else [""]
    colour = {g: COLOURS[i % len(COLOURS)] for i, g in enumerate(groups)}
    t = table.iloc[::-1].reset_index(drop=True)
    fig = figure(3.3 * len(metrics) + 2.2, 0.3 * len(t) + 1.5)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = np.arange(len(t))
    colours = [colour[str(g) if pd.notna(g) else ""] for g in (t["group"] if "group" in t else [""] * len(t))]
    for ax, (col, label) in zip(axes, metrics):
        values = pd.to_numeric(t[col], errors="coerce").to_numpy(dtype=float)
        bars = ax.barh(y, np.nan_to_num(values), color=colours)
        _bar_labels(ax, [b for b, v in zip(bars, values) if np.isfinite(v)], "{:.2f}" if col == "minutes" else "{:.3f}")
        finite = values[np.isfinite(values)]
        ref = t.loc[t["group"].astype(str) == "reference", col] if "group" in t else pd.Series(dtype=float)
        ref = pd.to_numeric(ref, errors="coerce").dropna()
        if col != "minutes" and len(ref):
            ax.axvline(float(ref.iloc[0]), color="black", ls="--", lw=0.8)  # the reference variant's score
        if col != "minutes" and finite.size:
            ax.set_xlim(max(0.0, finite.min() - 0.05), min(1.0, finite.max() + 0.06))
        ax.set_title(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [literal(v) for v in t["variant"]], fontsize=8)
    if len(groups) > 1 or groups != [""]:
        fig.legend(
            handles=[Patch(color=colour[g], label=literal(g or "(none)")) for g in groups],
            loc="outside lower center",
            ncols=min(len(groups), 5),
            fontsize=8,
        )
    fig.suptitle("Ablation")
    return fig


def submission_plot(per_class: pd.DataFrame, sub_rows: pd.Series, train_rows: pd.Series) -> Figure:
    """Left: each class's share of test rows predicted vs its train prior. Right: labels per row."""
    fig = figure(11, 0.25 * len(per_class) + 1.6)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    y = np.arange(len(per_class))
    ax.barh(y - 0.2, per_class["predicted_share"], height=0.4, color=COLOURS[0], label="submission")
    ax.barh(y + 0.2, per_class["train_prior"], height=0.4, color=COLOURS[7], label="train prior")
    ax.set_yticks(y, [literal(f"{i} {n}") for i, n in zip(per_class["id"], per_class["name"])], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of rows with the class")
    ax.set_title("Label frequency: submission vs train")
    ax.legend(fontsize=8)
    counts = (
        pd.concat(
            {"submission": sub_rows / max(sub_rows.sum(), 1), "train": train_rows / max(train_rows.sum(), 1)}, axis=1
        )
        .fillna(0.0)
        .sort_index()
    )
    x = np.arange(len(counts))
    ax2.bar(x - 0.2, counts["submission"], width=0.4, color=COLOURS[0], label="submission")
    ax2.bar(x + 0.2, counts["train"], width=0.4, color=COLOURS[7], label="train")
    ax2.set_xticks(x, [str(i) for i in counts.index])
    ax2.set_xlabel("labels per row")
    ax2.set_ylabel("share of rows")
    ax2.set_title("Labels per row")
    ax2.legend(fontsize=8)
    return fig
