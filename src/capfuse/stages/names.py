"""The names stage: class names discovered from the captions, and what they are worth.

``capfuse names`` discovers each class's name and top terms from every training row (whatever
``data.class_names`` says), writes ``runs/<dataset>/classes_discovered.csv`` and prints the table,
beside the names of ``classes.csv`` when there is one.

``capfuse names --ablation`` (``make names-ablation``) measures them. One label-query model
(``--model``, default the pipeline's first) is trained over the same folds three ways: with the
names of ``classes.csv``, with discovered names (each fold's from its training rows only) and
with "class N"; the zero-shot evaluation (``configs/zeroshot.yaml``) likewise. The table gives
the share of the true names' gain over "class N" that discovered names recover and, on data the
demo generator wrote, how many display names are the true name or one of the generator's
synonyms for it. Writes ``runs/<dataset>/names/ablation.{csv,md}``; the true-name model is the
pipeline's own run when it is trained already (same fingerprint), the others train under
``runs/<dataset>/names/<mode>/``.

The names' worth to a supervised model is small beside one seed's spread (a few tenths of a
point on the demo), so ``--seeds 42,43,44`` trains every naming once per seed (the pipeline's
``seed``, which also draws each fold's inner stopping split): the shares come from the means
over seeds, and the table gives each naming's spread and each seed's share. Other seeds than
the pipeline's train under ``runs/<dataset>/names/<mode>/seed<S>/``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from capfuse import config as cfglib
from capfuse.data.dataset import load_dataset
from capfuse.data.demo.captions import NOUNS
from capfuse.data.names import DISCOVERED_FILE, names_frame
from capfuse.features.store import FeatureStore
from capfuse.nn.fusion import needs_class_text
from capfuse.report.tables import markdown
from capfuse.training.cv import model_inputs, train_model
from capfuse.training.selection import select_models
from capfuse.utils.io import write_csv, write_text
from capfuse.utils.log import log, stage
from capfuse.utils.runs import child_dir
from capfuse.zeroshot.cv import cross_fitted, evaluation_setup, label_text
from capfuse.zeroshot.evaluate import pick_unseen
from capfuse.zeroshot.inputs import load_features
from capfuse.zeroshot.settings import ZeroShotSettings
from capfuse.zeroshot.text import CaptionSpace

# How each row of the comparison gets its names (``data.class_names``), and what it is called.
MODES = {"classes.csv": "auto", "discovered": "discover", "class N": "numbers"}


def _with_mode(cfg: dict, mode: str) -> dict:
    return cfglib.deep_merge(cfg, {"data": {"class_names": mode}})


def synonyms_of(name: str) -> set[str] | None:
    """The demo generator's words for a class (singular and plural), or None for a class it lacks."""
    if name not in NOUNS:
        return None
    return {name} | {w for pair in NOUNS[name] for w in pair}


def discovered_table(paths, cfg: dict, quiet: bool | None) -> pd.DataFrame:
    """Names discovered from every training row, with the true name and whether it matches."""
    ds = load_dataset(paths, _with_mode(cfg, "discover"), quiet=quiet)
    table = names_frame(ds.names.found)
    if (paths.data_dir / "classes.csv").is_file():
        true = list(load_dataset(paths, _with_mode(cfg, "auto"), quiet=quiet).val.classes.names)
        table.insert(2, "classes.csv", true)
        words = [synonyms_of(n) for n in true]
        if all(w is not None for w in words):
            table.insert(3, "match", [name in w for name, w in zip(table["name"], words)])
    return table


def _pipeline_seed(cfg: dict) -> int:
    return int(cfg.get("seed", 42))  # the schema's default seed


def _reads_names(model_cfg: dict) -> bool:
    settings = cfglib.resolve_model(model_cfg)
    return settings.kind == "net" and needs_class_text(settings)


def _train(
    paths, cfg: dict, config_path: Path, model: str, label: str, quiet: bool | None, seed: int | None = None
) -> dict:
    mode = MODES[label]
    base_seed = _pipeline_seed(cfg)
    seed = base_seed if seed is None else seed
    mcfg = cfglib.deep_merge(_with_mode(cfg, mode), {"seed": seed})
    name, model_cfg = next(iter(select_models(mcfg, config_path, [model]).items()))
    if not _reads_names(model_cfg):
        raise ValueError(f"--model {model} reads no class names (no label-query head): nothing to compare")
    ds = load_dataset(paths, mcfg, quiet=quiet)
    plain = {k: v for k, v in model_cfg.items() if k != "pseudo"}
    feats = FeatureStore(ds, quiet, {name: model_cfg}).for_model(model_cfg)
    # The true names' run at the pipeline's seed is the pipeline's own folder: the same
    # fingerprint as `make train`.
    parent = paths.runs / "names" / mode / ("" if seed == base_seed else f"seed{seed}")
    own = mode == "auto" and seed == base_seed
    out_dir = paths.model_dir(name) if own else child_dir(parent, name, "model")
    with stage(f"names: {name} with {label}, seed {seed}", str(out_dir)):
        return train_model(name, plain, out_dir=out_dir, **model_inputs(ds, ds.folds(), feats))


def _zeroshot(paths, cfg: dict, zs_cfg: dict, label: str, quiet: bool | None, eval_folds: list[int] | None) -> dict:
    ds = load_dataset(paths, _with_mode(cfg, MODES[label]), quiet=quiet)
    settings = ZeroShotSettings.from_config(zs_cfg)
    if eval_folds is not None:
        settings = replace(settings, eval_folds=eval_folds)
    seed = int(zs_cfg.get("seed", 42))
    names, Y, folds = list(ds.val.classes.names), ds.Y, ds.folds()
    if not isinstance(settings.unseen, int):
        raise ValueError("zeroshot.unseen must be a number here: names differ between the rows of the comparison")
    feats, _ = load_features(ds, settings, quiet=quiet)
    # Drawn by seed from the label counts only: the same unseen classes under every naming.
    unseen = pick_unseen(Y, names, settings.unseen, min_positives=settings.min_positives, seed=seed)
    space = CaptionSpace.load(settings.caption_encoder)
    discovery, test_rows, eval_folds = evaluation_setup(ds, folds, settings)
    text = None if discovery else label_text(space, settings.prompts, names, None)
    with stage(f"names: zero-shot with {label}", paths.dataset):
        fitted = cross_fitted(
            feats,
            Y,
            folds,
            eval_folds,
            test_rows,
            unseen,
            settings,
            seed,
            space,
            names,
            discovery,
            list(ds.val.train["Caption"]),
            text=text,
        )
    t = fitted.table.set_index(["scorer", "setting"])
    return {
        "zsl_map_image": t.loc[("image", "zsl"), "map"],
        "gzsl_map_image": t.loc[("image", "gzsl"), "map"],
        "zsl_map_caption": t.loc[("caption", "zsl"), "map"],
        "zsl_map_random": t.loc[("random", "zsl"), "map"],
    }


def recovered(table: pd.DataFrame, column: str) -> float:
    """(discovered - "class N") / (classes.csv - "class N") for one column of the table."""
    row = table.set_index("names")[column]
    gain = row["classes.csv"] - row["class N"]
    return float((row["discovered"] - row["class N"]) / gain) if gain else float("nan")


def run_names_ablation(
    paths,
    cfg: dict,
    config_path: Path,
    zs_cfg: dict,
    *,
    model: str | None,
    quiet: bool | None,
    zeroshot_folds: list[int] | None = None,
    seeds: list[int] | None = None,
) -> pd.DataFrame:
    """The comparison table (see the module); ``zeroshot_folds`` evaluates zero-shot on those
    held-out folds only (default: the zero-shot config's ``eval_folds``); ``seeds``: the model's
    seeds (default: the pipeline's one)."""
    if not (paths.data_dir / "classes.csv").is_file():
        raise FileNotFoundError(f"{paths.data_dir}/classes.csv: the comparison needs the true names")
    model = model or next(
        (n for n, m in select_models(cfg, config_path, None).items() if _reads_names(m)),
        None,
    )
    if model is None:
        raise ValueError(f"{config_path} lists no label-query model: name one with --model")
    # Every model first, then every zero-shot evaluation: the headline column comes in first.
    seeds = list(seeds) if seeds else [_pipeline_seed(cfg)]
    runs = []
    for label in MODES:
        for seed in seeds:
            metrics = _train(paths, cfg, config_path, model, label, quiet, seed)
            runs.append(
                {"names": label, "seed": seed, "cv_mean_f1": metrics["cv_mean_f1"], "cv_map": metrics["cv_map"]}
            )
    runs = pd.DataFrame(runs)
    # One row per naming: the models' means over seeds (and their spread), then zero-shot,
    # which trains no seeded model.
    by = runs.groupby("names", sort=False)
    table = by[["cv_mean_f1", "cv_map"]].mean().reset_index()
    table.insert(1, "model", model)
    table.insert(2, "seeds", len(seeds))
    if len(seeds) > 1:
        table["cv_mean_f1_sd"] = by["cv_mean_f1"].std(ddof=1).to_numpy()
    rows = table.to_dict("records")
    for row in rows:
        row.update(_zeroshot(paths, cfg, zs_cfg, row["names"], quiet, zeroshot_folds))
    table = pd.DataFrame(rows)
    shares = {col: recovered(table, col) for col in ("cv_mean_f1", "cv_map", "zsl_map_image", "gzsl_map_image")}
    per_seed = [recovered(runs[runs["seed"] == seed], "cv_mean_f1") for seed in seeds]
    names = discovered_table(paths, cfg, quiet)
    matched = int(names["match"].sum()) if "match" in names else None
    out = paths.runs / "names"
    write_csv(out / "ablation.csv", table, float_format="%.5f")
    write_csv(out / "ablation_seeds.csv", runs, float_format="%.5f")
    lines = [
        markdown(table),
        "",
        'Share of the true names\' gain over "class N" that discovered names recover'
        + (f" (means over {len(seeds)} seeds)" if len(seeds) > 1 else "")
        + ": "
        + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()),
    ]
    if len(seeds) > 1:
        lines += [
            "Per seed, cv_mean_f1: " + ", ".join(f"seed {s} {v:.0%}" for s, v in zip(seeds, per_seed)),
            "",
            markdown(runs.pivot(index="seed", columns="names", values="cv_mean_f1")[list(MODES)].reset_index()),
        ]
    if matched is not None:
        lines.append(f"Display names that are the true name or a generator synonym: {matched} of {len(names)}")
    lines += ["", markdown(names)]
    text = "\n".join(lines) + "\n"
    write_text(out / "ablation.md", text)
    print(text)
    log.info("wrote %s and %s", out / "ablation.csv", out / "ablation.md")
    return table


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    if args.ablation:
        zs_cfg = cfglib.load_config(args.zeroshot_config)
        run_names_ablation(
            paths,
            cfg,
            Path(args.config),
            zs_cfg,
            model=args.model,
            quiet=quiet,
            zeroshot_folds=args.zeroshot_folds,
            seeds=args.seeds,
        )
        return 0
    table = discovered_table(paths, cfg, quiet)
    print(table.to_string(index=False))
    if "match" in table:
        print(f"\n{int(table['match'].sum())} of {len(table)} display names are the true name or a generator synonym")
    print(f"\nwritten to {paths.runs / DISCOVERED_FILE}; copy it to {paths.data_dir}/classes.csv to use (and edit) it")
    return 0
