"""The ``runs`` table: what one finished ``make all`` scored and cost, read from its files.

Everything comes from what the run wrote, never from memory, so the same function serves the
end of ``capfuse infer`` and ``capfuse results collect`` on a run made long before:

* ``submissions/<dataset>-latest.json`` (the manifest ``capfuse infer`` writes): the commit the
  run was made at, the kept second-level candidate, its in-sample and nested CV, test rows;
* ``runs/<dataset>/<model>/metrics.json``: each base model's CV mean F1, mAP and minutes;
* ``runs/<dataset>/ensemble/oof_probs.csv``: the training rows scored;
* ``runs/<dataset>/timings.csv``: wall time and peak RSS of every stage (``run_timings`` picks
  the rows of this run out of the file, which every command on the dataset appends to).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from capfuse.config import load_config
from capfuse.results.tables import Written, short_commit, write_results
from capfuse.shift.confidence import score_on_test_like_rows
from capfuse.utils.io import read_json

# The commands a `make all` runs before `infer`; `capfuse all` runs the three in one process.
BEFORE_INFER = ("folds", "embed", "train")
# Commands that may sit between them and `infer` without belonging to the run's time: a
# `make stack` or `make thresholds` is redone by `infer` itself.
REDONE_BY_INFER = ("validate", "stack", "thresholds")
ENDS_A_RUN = ("infer", "all")
HELD_OUT_FILE = "held_out.json"  # runs/<dataset>/: the submission on a demo's answers (capfuse.results.floor)
COLUMNS = ["kind", "name", "detail", "mean_f1", "nested_mean_f1", "map", "minutes", "peak_rss_mb"]


def manifest_path(run_dir: Path) -> Path:
    """``submissions/<dataset>-latest.json`` beside ``runs/<dataset>``."""
    return run_dir.parent.parent / "submissions" / f"{run_dir.name}-latest.json"


def plain_commit(commit: str | None) -> str:
    """The manifest's commit with its dirty mark written as the machine record writes it."""
    if not commit:
        return "unknown"
    return commit[: -len("-dirty")] + "+dirty" if commit.endswith("-dirty") else commit


def _segments(timings: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Consecutive rows of one invocation of a command, in file order (files written before
    the ``invocation`` column split at a change of command name only)."""
    key = timings["command"].astype(str)
    if "invocation" in timings:
        key = key + "|" + timings["invocation"].fillna("").astype(str)
    marks = (key != key.shift()).cumsum()
    return [(str(part["command"].iloc[0]), part) for _, part in timings.groupby(marks, sort=False)]


def run_timings(timings: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last finished run: the last ``infer`` (or ``all``) command and the
    ``folds``/``embed``/``train`` commands right before it. A ``train`` stopped and resumed
    counts twice: both cost the user time. An earlier ``infer``, an ``ablate`` or any other
    command ends the search."""
    if timings.empty:
        return timings
    segments = _segments(timings)
    ends = [i for i, (command, _) in enumerate(segments) if command in ENDS_A_RUN]
    if not ends:
        return timings.iloc[0:0]
    last = ends[-1]
    taken = [segments[last][1]]
    if segments[last][0] == "infer":
        for command, part in reversed(segments[:last]):
            if command in BEFORE_INFER:
                taken.insert(0, part)
            elif command not in REDONE_BY_INFER:
                break
    return pd.concat(taken)


def stage_rows(timings: pd.DataFrame) -> list[dict]:
    """One row per top-level stage (folds, train, stack, thresholds, submit) and one for them
    all: wall minutes and the peak RSS reached."""
    top = timings[timings["depth"] == 0]
    rows = []
    for stage, part in top.groupby("stage", sort=False):
        rows.append(
            {
                "kind": "stage",
                "name": stage,
                "minutes": round(float(part["wall_s"].sum()) / 60, 3),
                "peak_rss_mb": float(part["peak_rss_mb"].max()),
            }
        )
    if rows:
        rows.append(
            {
                "kind": "total",
                "name": "all stages",
                "detail": ", ".join(dict.fromkeys(timings["command"].astype(str))),
                "minutes": round(float(top["wall_s"].sum()) / 60, 3),
                "peak_rss_mb": float(timings["peak_rss_mb"].max()),
            }
        )
    return rows


def _count_rows(csv: Path) -> int | None:
    if not csv.exists():
        return None
    with csv.open("rb") as fh:
        return max(sum(1 for _ in fh) - 1, 0)


def model_rows(run_dir: Path, models: Iterable[str]) -> list[dict]:
    rows = []
    for model in models:
        metrics_file = run_dir / model / "metrics.json"
        m = read_json(metrics_file) if metrics_file.exists() else {}
        rows.append(
            {
                "kind": "model",
                "name": model,
                "detail": m.get("kind"),
                "mean_f1": m.get("cv_mean_f1"),
                "map": m.get("cv_map"),
                "minutes": m.get("train_minutes"),
            }
        )
    return rows


def preset_of(models: Iterable[str], presets_dir: Path, config: Path | None = None) -> str | None:
    """The preset a run was made with: the config's name when it is a preset's file, else the
    preset that trains exactly the run's base models (pseudo-label rounds ``name@rK`` count as
    their model); None when none does."""
    if config is not None and config.parent.name == "presets":
        return config.stem
    want = {m.partition("@")[0] for m in models}
    for path in sorted(presets_dir.glob("*.yaml")):
        try:
            listed = load_config(path, validate=False).get("models")
        except (OSError, ValueError, TypeError, KeyError):
            continue  # a preset this checkout cannot read is not the run's
        if isinstance(listed, list) and set(map(str, listed)) == want:
            return path.stem
    return None


def run_results(run_dir: Path, manifest: dict, preset: str) -> tuple[pd.DataFrame, dict]:
    """The ``runs`` table of the finished run in ``run_dir`` and the facts of its header."""
    dataset = run_dir.name
    if manifest.get("dataset") not in (None, dataset):
        raise ValueError(f"the manifest is of dataset {manifest.get('dataset')!r}, the run folder of {dataset!r}")
    models = list(manifest.get("models") or {})
    rows = model_rows(run_dir, models)
    cv = manifest.get("cv") or {}
    second = manifest.get("second_level") or {}
    threshold = (manifest.get("threshold") or {}).get("kind")
    rows.append(
        {
            "kind": "second_level",
            "name": second.get("kept"),
            "detail": f"{threshold} thresholds" if threshold else None,
            "mean_f1": cv.get("mean_f1"),
            "nested_mean_f1": manifest.get("cv_nested_mean_f1"),
            "map": cv.get("map"),
        }
    )
    like = score_on_test_like_rows(manifest)
    if like is not None:
        rows.append(
            {
                "kind": "test_like",
                "name": second.get("kept"),
                "detail": f"the {like[0]:,} training rows most like the test (shift warned)",
                "nested_mean_f1": like[1],
            }
        )
    expected = manifest.get("expected_test")
    if expected:
        rows.append(
            {
                "kind": "expected_test",
                "name": second.get("kept"),
                "detail": f"nested CV less the fall in the models' confidence, {expected['confidence_oof']:.4f} on the "
                f"OOF rows to {expected['confidence_test']:.4f} on the test rows (no test label read)",
                "nested_mean_f1": expected["mean_f1"],
            }
        )
    held = run_dir / HELD_OUT_FILE
    if held.exists():
        r = read_json(held)
        rows.append(
            {
                "kind": "held_out",
                "name": "submission",
                "detail": f"on {dataset}'s test_labels.csv; class prior {r['class_prior']:.4f}, "
                f"caption TF-IDF {r['caption_tfidf']:.4f}",
                "mean_f1": r["submission"],
            }
        )
    plan = manifest.get("plan") or {}
    embed = plan.get("embed") or {}
    if embed.get("predicted_s"):
        rows.append(
            {
                "kind": "plan",
                "name": "embed",
                "detail": f"the kept models' features; predicted {embed['predicted_s'] / 60:.2f} min",
                "minutes": round(embed["measured_s"] / 60, 3) if embed.get("measured_s") is not None else None,
            }
        )
    for m in plan.get("models") or []:
        # A budgeted run: each model's fate in the plan, its predicted and measured minutes.
        epochs = f", {m['epochs']} epochs" if m.get("epochs") else ""
        predicted = m.get("predicted_s")
        rows.append(
            {
                "kind": "plan",
                "name": m["name"],
                "detail": f"{m['status']}{epochs}"
                + (f"; predicted {predicted / 60:.2f} min" if predicted is not None else "")
                + (f"; {m['why']}" if m.get("why") else ""),
                "minutes": round(m["measured_s"] / 60, 3) if m.get("measured_s") is not None else None,
            }
        )
    timings_csv = run_dir / "timings.csv"
    if timings_csv.exists():
        rows += stage_rows(run_timings(pd.read_csv(timings_csv)))
    if plan.get("command_s") is not None:
        # What a budget counts: the whole command, start-up and the steps between stages included.
        rows.append(
            {
                "kind": "total",
                "name": "command",
                "detail": "capfuse all, from its start to the manifest",
                "minutes": round(plan["command_s"] / 60, 3),
            }
        )
    facts = {
        "dataset": dataset,
        "preset": preset,
        "train_rows": _count_rows(run_dir / "ensemble" / "oof_probs.csv"),
        "test_rows": manifest.get("test_rows"),
        "folds": manifest.get("k"),
        "submission": manifest.get("timestamp"),
    }
    if plan:
        facts["time_limit_s"] = plan.get("time_limit_s")
    return pd.DataFrame(rows, columns=COLUMNS), facts


NOTES = (
    "Scores are out-of-fold on the training rows: `mean_f1` with thresholds fitted on those rows "
    "(in-sample), `nested_mean_f1` with every part fitted without the scored fold's labels. "
    "`minutes` of a model: its training; of a stage: wall time from `runs/<dataset>/timings.csv` "
    "(commands of this run only; start-up and data loading between stages are not in it).",
)


def variant_slug(overrides: list[str]) -> str:
    """A file-name part that says a run's ``--set`` values: ``folds.groups=auto`` ->
    ``folds.groups-auto``; past 60 characters, their start and a checksum of them all."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(overrides)).strip("-")
    if len(slug) <= 60:
        return slug
    return f"{slug[:51].rstrip('-')}-{hashlib.sha256(slug.encode()).hexdigest()[:8]}"


def run_date(manifest: dict) -> str | None:
    """The submission's UTC time (``20261122-143015``) as ISO 8601, the date a collected run is filed under."""
    stamp = str(manifest.get("timestamp") or "")
    if len(stamp) != 15 or stamp[8] != "-" or not (stamp[:8] + stamp[9:]).isdigit():
        return None
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"


def write_run_results(
    results_root: Path,
    run_dir: Path,
    manifest: dict,
    *,
    preset: str,
    machine: dict,
    command: str,
    collected: bool = False,
    overrides: list[str] | None = None,
) -> Written:
    """``results/runs/<date>_<dataset>-<preset>_<machine>_<commit7>.{csv,md}`` of a finished run.

    ``machine``: this host's record (fields and slug). Its commit is replaced by the manifest's,
    the commit the run was made at. ``collected``: written after the fact (``capfuse results
    collect``): the file is dated by the run's submission and says that the machine fields were
    read on the collecting host, which need not be the one that ran it. ``overrides``: the run's
    ``--set`` values; such a run is a variant of its preset, filed apart under a name that says
    them and left out of the presets table.
    """
    frame, facts = run_results(run_dir, manifest, preset)
    if overrides:
        facts["overrides"] = " ".join(overrides)
    machine = {**machine, "commit": plain_commit(manifest.get("git_commit"))}
    if collected:
        facts["machine_fields"] = f"read when collected on this host at {machine['date']}, not by the run itself"
        machine["date"] = run_date(manifest) or machine["date"]
    else:
        facts["machine_fields"] = "read at the end of the run"
    dataset = facts["dataset"]
    title = f"runs: {dataset}, preset {preset}, {machine['slug']}, {machine['date'][:10]} ({short_commit(machine['commit'])})"
    return write_results(
        results_root,
        "runs",
        frame,
        machine,
        # A budgeted run is filed apart from the preset's own: "large-default-budget3600s".
        name=f"{dataset}-{preset}"
        + (f"-budget{facts['time_limit_s']:.0f}s" if facts.get("time_limit_s") else "")
        + (f"-{variant_slug(overrides)}" if overrides else ""),
        command=command,
        facts=facts,
        title=title,
        notes=NOTES,
    )
