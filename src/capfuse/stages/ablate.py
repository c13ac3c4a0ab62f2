"""The ablation stage: what each component is worth, on the same data and folds, in one table.

A variant is a model config (a registered one, or one derived from it by ``set`` overrides)
trained over the same folds on the same cached features, or a pseudo-label round of one. The
second-level rows (blends, the stacker, per-class thresholds) are computed on the pipeline's
trained models exactly as ``make infer`` computes them, in memory, so the ablation never
rewrites what a submission was made from.

Variants identical to one of the pipeline's models train (or are found already trained) in that
model's own folder, so ``make all`` followed by ``make ablate`` trains only what is new; every
other variant lives in ``runs/<dataset>/ablation/``, where ``make stack`` does not look.

Writes ``runs/<dataset>/ablation.csv`` and ``runs/<dataset>/ablation.md`` (``ablation.output``
renames them for a side study such as ``configs/early_stop.yaml``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from capfuse import config as cfglib
from capfuse.data.dataset import load_dataset
from capfuse.ensemble.second_level import (
    build_candidates,
    choose_base_models,
    load_base_logits,
    threshold_rule,
    trained_models,
)
from capfuse.ensemble.thresholds import fit_class_thresholds, nested_threshold_score
from capfuse.features.store import FeatureStore
from capfuse.metrics import gap_at_k
from capfuse.report.tables import markdown
from capfuse.results.held_out_models import model_scores
from capfuse.results.measured import write_measured
from capfuse.results.tables import results_dir
from capfuse.training.cv import model_inputs, train_model
from capfuse.training.pseudo import PseudoSettings
from capfuse.training.rounds import pseudo_rounds
from capfuse.training.selection import SECOND_LEVEL_KEYS
from capfuse.utils.io import read_json, write_csv, write_text
from capfuse.utils.log import log, stage
from capfuse.utils.runs import check_name

COLUMNS = ["variant", "group", "change", "score", "mean_f1", "map", "gap_at_10", "delta", "minutes"]


def variant_configs(cfg: dict, config_path: Path) -> list[dict]:
    """The ``ablation.variants`` list, each with its resolved model config (``model``).

    A derived variant's model (its base's file with the variant's ``set`` merged in) is checked
    as a whole against its kind: an unknown key names the base's file or the variant's ``set``.
    (Keys of the variant itself were checked when the ablation config loaded.)
    """
    top = cfglib.resolve(cfg)
    variants = top.ablation.variants
    if not variants:
        raise ValueError(f"{config_path}: `ablation.variants` lists no variant")
    inherited = {k: v for k, v in cfg.items() if k not in SECOND_LEVEL_KEYS}
    pipeline_models = set(top.models)
    out, seen = [], set()
    for i, v in enumerate(variants):
        where = f"{config_path}: ablation.variants[{i}]"
        if not v.name:
            raise ValueError(f"{where}: each variant needs a `name`")
        if v.name in seen:
            raise ValueError(f"{where}: variant {v.name!r} is listed twice")
        seen.add(v.name)
        base = v.base or v.name
        path = cfglib.resolve_config_path(f"models/{base}", relative_to=config_path)
        base_cfg, sources = cfglib.load_with_sources(path)
        derived = bool(v.set)
        if derived:
            base_cfg = cfglib.deep_merge(base_cfg, v.set)
            for key, value in v.set.items():
                cfglib.record_sources(value, (key,), f"{where}.set", sources)
        cfglib.validate(base_cfg, sources, source=str(path))
        model = cfglib.deep_merge(inherited, base_cfg)
        # A variant that is exactly one of the pipeline's models shares its run folder (trained
        # once); any other lives under ablation/, out of the stack stage's `models: all`.
        shared = not derived and base in pipeline_models
        name = v.name if derived else base
        # ``pseudo``: settings of pseudo-label rounds on top of the (base) model; the rounds are the variant.
        pseudo = None
        if v.pseudo:
            pseudo = PseudoSettings.from_config({**asdict(cfglib.resolve_model(model).pseudo), **v.pseudo})
            if not pseudo.rounds:
                raise ValueError(f"{where}: `pseudo` needs rounds >= 1")
        out.append(
            {
                "name": v.name,
                "group": v.group,
                "change": v.change,
                "model": {**model, "name": name},
                "shared": shared,
                "pseudo": pseudo,
            }
        )
    return out


def run_ablate(paths, cfg: dict, config_path: Path, *, quiet: bool | None = None) -> pd.DataFrame:
    variants = variant_configs(cfg, config_path)
    spec = cfglib.resolve(cfg).ablation
    reference = spec.reference
    with stage("ablate", f"{paths.dataset}: {len(variants)} variants"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        folds = ds.folds()
        store = FeatureStore(ds, quiet, {v["name"]: v["model"] for v in variants})
        root = paths.runs / "ablation"
        rows, trained, dirs, runs_of = [], {}, {}, {}
        for v in variants:
            model_cfg = {k: val for k, val in v["model"].items() if k != "pseudo"}
            feats = store.for_model(model_cfg)
            common = model_inputs(ds, folds, feats)
            runs = []
            for seed in seeds_of(model_cfg, spec.seeds):
                metrics, run_dir = train_variant(paths, ds, v, model_cfg, seed, common, trained, root)
                dirs[f"{v['name']}@{seed}"] = run_dir
                runs_of.setdefault(v["name"], []).append(f"{v['name']}@{seed}")
                runs.append(metrics)
            rows.append(
                {
                    "variant": v["name"],
                    "group": v["group"],
                    "change": v["change"],
                    "score": "CV",
                    "mean_f1": mean_of(runs, "cv_mean_f1"),
                    "sd": sd_of([m["cv_mean_f1"] for m in runs]),
                    "map": mean_of(runs, "cv_map"),
                    "gap_at_10": mean_of(runs, "cv_gap_at_10"),
                    "minutes": mean_of(runs, "train_minutes"),
                    "seeds": len(runs),
                }
            )
        table = pd.DataFrame(rows)
        ref = table.loc[table["variant"] == reference, "mean_f1"]
        table["delta"] = (table["mean_f1"] - ref.iloc[0]).round(5) if len(ref) else np.nan
        held = held_out_scores(ds, dirs, threshold_rule(cfg))
        if held:  # the dataset ships its answers: each variant scored on them as well
            per_variant = {name: [held[key] for key in keys] for name, keys in runs_of.items()}
            table["held_out"] = table["variant"].map(lambda n: round(float(np.mean(per_variant[n])), 5))
            table["held_out_sd"] = table["variant"].map(lambda n: sd_of(per_variant[n]))
        if spec.second_level:
            table = pd.concat([table, second_level_rows(paths, ds, cfg)], ignore_index=True)
        spread = ["sd", "seeds"] if spec.seeds > 1 else []
        held_cols = (["held_out"] + (["held_out_sd"] if spec.seeds > 1 else [])) if held else []
        table = table[COLUMNS + spread + held_cols]
        # ``ablation.output`` names the table, so a side study (configs/early_stop.yaml) keeps
        # the main ablation table intact.
        out = check_name(spec.output, f"{config_path}: ablation.output")
        write_csv(paths.runs / f"{out}.csv", table)
        write_text(paths.runs / f"{out}.md", markdown_table(table))
        log.info("%s (%s):\n%s", out, paths.runs / f"{out}.csv", table.to_string(index=False))
        return table


SEED_STEP = 1000  # fold k trains with seed + k: seeds this far apart never share a fold's seed


def seeds_of(model_cfg: dict, n: int) -> list[int]:
    """The seeds a variant trains with: its own, then ``n - 1`` more ``SEED_STEP`` apart."""
    first = cfglib.resolve_model(model_cfg).seed
    return [first + i * SEED_STEP for i in range(n)]


def train_variant(paths, ds, v: dict, model_cfg: dict, seed: int, common: dict, trained: dict, root: Path):
    """One variant at one seed, trained or found trained: (its metrics, its run folder).

    The first seed is the variant as configured (a pipeline model's own folder where it is one);
    every further seed trains apart, in ``ablation/<model>@s<seed>``, so no seed of an ablation
    ever replaces a model the submission was made from.
    """
    base_name = model_cfg["name"]
    extra = seed != cfglib.resolve_model(model_cfg).seed
    if extra:
        base_name = f"{base_name}@s{seed}"
        model_cfg = {**model_cfg, "name": base_name, "seed": seed}
    base_dir = paths.model_dir(base_name) if v["shared"] and not extra else root / base_name
    with stage(f"ablate {v['name']}" + (f" (seed {seed})" if extra else ""), v["change"]):
        metrics = trained.get(base_name) or train_model(base_name, model_cfg, out_dir=base_dir, **common)
        trained[base_name] = metrics
        if v["pseudo"] is None:
            return metrics, base_dir
        # The rounds' producer is the variant's base model wherever it was trained; the rounds
        # themselves stay out of the pipeline's folders. The variant scores its last round: a
        # round that did not help is part of its cost.
        _, report = pseudo_rounds(
            paths,
            ds,
            base_name,
            model_cfg,
            metrics,
            v["pseudo"],
            common,
            out_root=root,
            producer_root=base_dir.parent,
            report=root / f"{v['name']}{'@s' + str(seed) if extra else ''}_rounds.csv",
            leaderboard=False,
        )
        last = report[report["class"].astype(str) == "all"].sort_values("round").iloc[-1]
        return read_json(root / str(last["model"]) / "metrics.json"), root / str(last["model"])


def mean_of(runs: list[dict], key: str) -> float | None:
    values = [m[key] for m in runs if m.get(key) is not None]
    return round(float(np.mean(values)), 5) if values else None


def sd_of(values: list[float]) -> float:
    """The seeds' sample standard deviation (0 for one seed: no spread is measured)."""
    return round(float(np.std(values, ddof=1)), 5) if len(values) > 1 else 0.0


def second_level_rows(paths, ds, cfg: dict) -> pd.DataFrame:
    """Blends, the stacker and per-class thresholds on the pipeline's trained models (nested CV).

    The same functions as ``make stack`` and ``make thresholds``, run in memory: each row's
    score is nested (every fitted part, the global threshold included, fitted on other folds).
    """
    folds = ds.folds()
    names = choose_base_models(cfg, trained_models(paths))
    oof, test = load_base_logits(paths, ds, names, folds)
    rule = threshold_rule(cfg)
    t0 = time.perf_counter()
    cands = build_candidates(ds.Y, oof, test, folds, names, cfg, rule)
    minutes = (time.perf_counter() - t0) / 60
    labels = {
        "best_single": "best single model",
        "mean_blend": "mean of the models' probabilities",
        "weighted_blend": "log-loss weighted blend",
        "stack": "LightGBM stacker on every model's logits",
    }
    rows = []
    for cand, c in cands.items():
        detail = f" ({c['detail']['model']})" if cand == "best_single" else ""
        rows.append(
            {
                "variant": cand,
                "group": "second level",
                "change": labels[cand] + detail,
                "score": "nested CV",
                "mean_f1": c["score"]["nested_mean_f1"],
                "map": c["score"]["cv_map"],
                "gap_at_10": round(float(gap_at_k(ds.Y, c["oof"], 10)), 5),
                "minutes": round(minutes, 3),
            }
        )
    kept = max(cands, key=lambda k: (cands[k]["score"]["nested_mean_f1"], cands[k]["score"]["cv_mean_f1"]))
    top = cfglib.resolve(cfg)
    trials, seed = top.threshold.trials, top.seed
    t0 = time.perf_counter()
    full = fit_class_thresholds(ds.Y, cands[kept]["oof"], **rule, n_trials=trials, seed=seed)
    nested = nested_threshold_score(ds.Y, cands[kept]["oof"], folds, **rule, n_trials=trials, seed=seed, full=full)
    minutes = (time.perf_counter() - t0) / 60
    for kind, score in (("global_threshold", nested["global_nested"]), ("per_class_thresholds", nested["nested"])):
        rows.append(
            {
                "variant": kind,
                "group": "thresholds",
                "change": f"{kind.replace('_', ' ')} on the kept second level ({kept})",
                "score": "nested CV",
                "mean_f1": round(float(score), 5),
                "map": None,
                "gap_at_10": None,
                "minutes": round(minutes, 3),
            }
        )
    out = pd.DataFrame(rows)
    single = out.loc[out["variant"] == "best_single", "mean_f1"]
    out["delta"] = (out["mean_f1"] - single.iloc[0]).round(5) if len(single) else np.nan
    return out


def held_out_scores(ds, dirs: dict[str, Path], rule: dict) -> dict[str, float]:
    """Each variant's held-out mean F1 on the dataset's answers (``test_labels.csv``) from its test
    logits, at the global threshold its OOF logits choose (never one tuned on the answers); empty
    when the dataset ships no answers. ``dirs``: each variant's run folder."""
    where = SimpleNamespace(model_dir=dirs.__getitem__)
    scores = model_scores(ds, where, list(dirs), None, rule)
    return {} if scores is None else dict(zip(scores["model"], scores["held_out_mean_f1"], strict=True))


def markdown_table(table: pd.DataFrame) -> str:
    """The table as GitHub markdown, for the README and the report."""
    cols = ["variant", "group", "change", "score", "mean_f1", "sd", "delta", "map", "gap_at_10", "minutes", "seeds"]
    cols += ["held_out", "held_out_sd"]
    return markdown(table[[c for c in cols if c in table]], floatfmt=".3f")


ABLATION_NOTE = (
    "`score`: CV is a variant's out-of-fold mean F1 at its own global threshold; nested CV "
    "(second level, thresholds) fits every part without the scored fold's labels. `delta`: "
    "against the reference variant (second-level rows: against the best single model). "
    "`held_out` (a dataset that ships test_labels.csv): the variant's mean F1 on the test answers, "
    "at the global threshold chosen on its OOF rows. With `ablation.seeds` above 1, each variant "
    "row is the mean over its seeds, `sd` and `held_out_sd` their standard deviation."
)


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    table = run_ablate(paths, cfg, Path(args.config), quiet=quiet)
    print(table.to_string(index=False))
    results = results_dir(getattr(args, "results", None))
    if results is not None:
        spec = cfglib.resolve(cfg).ablation
        facts = {"dataset": paths.dataset, "config": args.config, "reference": spec.reference}
        name = f"{spec.output}-{paths.dataset}"
        write_measured(results, "ablation", table, root=paths.root, name=name, facts=facts, notes=[ABLATION_NOTE])
    return 0
