"""Label-ratio mode (the low-label setting): keep p % of the training labels and treat the rest as unlabelled.

For each p and model, the model trains on the labelled rows of the other folds only and is
scored on every row of the held-out fold, the same rows at every p, so the numbers compare.
Pseudo-label rounds then add the unlabelled rows of the other folds and the test images,
labelled by the previous round's fold-k model (see ``capfuse.training.pseudo``). The result is
``runs/<dataset>/label_ratios.csv``: CV mean F1 per p, without and with the rounds.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from capfuse.config.schema import resolve, resolve_model
from capfuse.data.dataset import load_dataset
from capfuse.features.store import FeatureStore
from capfuse.results.measured import write_measured
from capfuse.results.tables import results_dir
from capfuse.training.cv import model_inputs, train_model
from capfuse.training.pseudo import PseudoSettings, label_subset
from capfuse.training.rounds import pseudo_rounds
from capfuse.training.selection import SECOND_LEVEL_KEYS, model_configs
from capfuse.utils.io import write_csv
from capfuse.utils.log import log, stage


def run_ratios(paths, cfg: dict, config_path: Path, *, quiet: bool | None = None) -> pd.DataFrame:
    top = resolve(cfg)
    rcfg = top.ratios
    percents = list(rcfg.percents)
    names = list(rcfg.models)
    models = model_configs(
        {**{k: v for k, v in cfg.items() if k not in ("models", "ratios")}, "models": names}, config_path
    )
    seed = top.seed
    with stage("ratios", f"{paths.dataset}: {', '.join(names)} at {percents} % of the labels"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        folds = ds.folds()
        store = FeatureStore(ds, quiet, models)
        rows = []
        for name, model_cfg in models.items():
            feats = store.for_model(model_cfg, with_extra=True)  # an unlabelled folder joins the pool
            common = model_inputs(ds, folds, feats)
            settings = PseudoSettings.from_config(
                {**asdict(resolve_model(model_cfg).pseudo), "rounds": rcfg.pseudo_rounds}
            )
            plain = {k: v for k, v in model_cfg.items() if k not in ("pseudo", *SECOND_LEVEL_KEYS)} | {"name": name}
            for p in percents:
                labelled = label_subset(ds.Y, p / 100.0, seed)
                root = paths.runs / "ratios" / f"p{p:g}"
                with stage(f"ratio {p:g} %: {name}", f"{int(labelled.sum())} labelled train rows"):
                    base = train_model(name, plain, out_dir=root / name, labelled=labelled, **common)
                    if not base:
                        continue  # a non-zero torchrun rank
                    _, report = pseudo_rounds(
                        paths,
                        ds,
                        name,
                        plain,
                        base,
                        settings,
                        common,
                        out_root=root,
                        labelled=labelled,
                        report=root / "pseudo_rounds.csv",
                        leaderboard=False,
                    )
                per_round = report[report["class"].astype(str) == "all"].sort_values("round")
                best = per_round.loc[per_round["cv_mean_f1"].idxmax()]
                rows.append(
                    {
                        "percent": p,
                        "model": name,
                        "labelled_rows": int(labelled.sum()),
                        "cv_mean_f1_without": base["cv_mean_f1"],
                        "cv_map_without": base["cv_map"],
                        "cv_mean_f1_round1": _round(per_round, 1),
                        "cv_mean_f1_with": float(best["cv_mean_f1"]),
                        "best_round": int(best["round"]),
                        "rounds_run": int(per_round["round"].max()),
                        "gain": round(float(best["cv_mean_f1"]) - base["cv_mean_f1"], 5),
                        "pseudo_precision_round1": _round(per_round, 1, "precision"),
                    }
                )
                log.info(
                    "%g %% labels, %s: CV mean F1 %.4f without pseudo-labels, %.4f with (round %d)",
                    p,
                    name,
                    base["cv_mean_f1"],
                    best["cv_mean_f1"],
                    best["round"],
                )
        table = pd.DataFrame(rows)
        write_csv(paths.runs / "label_ratios.csv", table)
        log.info("label ratios (%s):\n%s", paths.runs / "label_ratios.csv", table.to_string(index=False))
        return table


def _round(per_round: pd.DataFrame, r: int, column: str = "cv_mean_f1"):
    hit = per_round[per_round["round"] == r]
    if hit.empty or column not in hit or pd.isna(hit[column].iloc[0]):
        return None
    return float(hit[column].iloc[0])


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    table = run_ratios(paths, cfg, Path(args.config), quiet=quiet)
    print(table.to_string(index=False))
    results = results_dir(getattr(args, "results", None))
    if results is not None and not table.empty:
        facts = {"dataset": paths.dataset, "config": args.config, "seed": resolve(cfg).seed}
        write_measured(results, "ratios", table, root=paths.root, name=paths.dataset, facts=facts)
    return 0
