"""The train stage: every configured model over every fold, on features the embed stage cached.

Serially by default; with ``--jobs N`` or ``--scheduler tcp://host:8786`` the (model, fold) jobs
run first on N local processes or a Dask cluster (``capfuse.training.jobs``), and the same loop
then finds every fold done and assembles each model's OOF and test logits.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pandas as pd

from capfuse.budget import PLAN_FILE, Budget, Plan, parse_duration
from capfuse.budget.lessons import rounds_trained
from capfuse.config.schema import resolve_model
from capfuse.data.dataset import load_dataset
from capfuse.features.sample import SampleStore
from capfuse.features.store import FeatureStore
from capfuse.results.machine import machine_record
from capfuse.training.cv import model_inputs, train_model
from capfuse.training.jobs import Engine, fold_threads, open_jobs, run_jobs
from capfuse.training.leaderboard import update_leaderboard
from capfuse.training.rounds import pseudo_rounds
from capfuse.training.selection import select_models
from capfuse.utils.deadline import OutOfTime, allowance, deadline, stops
from capfuse.utils.dist import init_distributed, rank_world
from capfuse.utils.log import log, stage


def run_train(
    paths,
    cfg: dict,
    config_path: Path,
    *,
    only: list[str] | None = None,
    quiet: bool | None = None,
    engine: Engine | None = None,
    budget: Budget | None = None,
) -> pd.DataFrame:
    engine = engine or Engine()
    models = select_models(cfg, config_path, only)
    with stage("train", f"{paths.dataset}: {', '.join(models)}"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        folds = ds.folds()
        store = FeatureStore(ds, quiet, models)
        job_quiet = quiet is not False  # a worker's log has no use for progress bars
        if budget is not None:
            # The plan's models, in order, with its epochs and rounds; the others are not trained.
            models = budget.plan_models(
                ds,
                cfg,
                models,
                features=partial(_planned_features, store, budget, dict(models)),
                inputs=lambda m: _rehearsal_inputs(ds, folds, _features(store, m)),
                model_dir=paths.model_dir,
                sample_inputs=lambda samples, m: _rehearsal_inputs(
                    ds, folds, SampleStore(store, samples["image"], samples["captions"]).for_model(m)
                ),
            )
        if engine.parallel:
            # Every model's features are cached before any job starts: jobs read them, never
            # compute them. The loop below then finds them in the store and the folds done.
            jobs = []
            for name, model_cfg in models.items():
                common = model_inputs(ds, folds, _features(store, model_cfg))
                out_dir, extra = paths.model_dir(name), _with_extra(model_cfg)
                jobs += open_jobs(
                    paths, cfg, name, _plain(model_cfg), common, out_dir=out_dir, with_extra=extra, quiet=job_quiet
                )
            run_jobs(jobs, engine)
        # A serial run's folds train here; with --threads at that count (torch's own otherwise).
        serial_threads = None if engine.parallel else engine.threads
        board = None
        for name, model_cfg in models.items():
            if budget is not None:
                model_cfg = budget.before_model(name, model_cfg)  # the plan's epochs and rounds, re-checked
                if model_cfg is None:
                    continue
            since = time.time()
            settings = resolve_model(model_cfg)
            at, folds_to_train = budget.allowance(name) if budget else (None, 1)
            try:
                with (
                    deadline(budget.hard_deadline() if budget else None),
                    allowance(at, folds_to_train),
                    stops(budget.stops(name) if budget else None),
                ):
                    board = _train_one(
                        paths, ds, folds, store, name, model_cfg, cfg, engine, serial_threads, job_quiet, board
                    )
            except OutOfTime as exc:
                if budget is None:
                    raise
                budget.cut(name, rounds_trained(paths.model_dir, name, settings.pseudo.rounds, since), exc)
                continue
            if budget is not None:
                budget.finished(name, max(0, rounds_trained(paths.model_dir, name, settings.pseudo.rounds, since)))
        if budget is not None:
            log.info("the plan and what it cost (%s):\n%s", budget.plan_path, budget.summary())
        if board is not None:
            log.info("leaderboard (%s):\n%s", paths.runs / "leaderboard.csv", board.to_string(index=False))
        return board


def _train_one(paths, ds, folds, store, name, model_cfg, cfg, engine, serial_threads, job_quiet, board):
    """One model over every fold, and its pseudo-label rounds; the updated leaderboard."""
    with stage(f"train {name}", model_cfg["kind"]):
        settings = resolve_model(model_cfg).pseudo
        common = model_inputs(ds, folds, _features(store, model_cfg))
        # Round 0 is the plain model: its pseudo settings concern later rounds only and
        # must not change its fingerprint.
        plain = _plain(model_cfg)
        with fold_threads(serial_threads):
            metrics = train_model(name, plain, out_dir=paths.model_dir(name), **common)
        if not metrics:
            return board  # a non-zero torchrun rank: rank 0 writes the artefacts
        board = update_leaderboard(paths.runs / "leaderboard.csv", metrics)
        log.info(
            "%s: CV mean F1 %.4f (threshold %.2f), mAP %.4f",
            name,
            metrics["cv_mean_f1"],
            metrics["threshold"],
            metrics["cv_map"],
        )
        if settings.rounds:
            # Each round's folds run as jobs too, once the round before it is assembled.
            with fold_threads(serial_threads):
                rounds_board, _ = pseudo_rounds(
                    paths,
                    ds,
                    name,
                    model_cfg,
                    metrics,
                    settings,
                    common,
                    before_round=partial(_round_jobs, paths, cfg, common, engine, job_quiet)
                    if engine.parallel
                    else None,
                )
            board = rounds_board if rounds_board is not None else board
    return board


def _rehearsal_inputs(ds, folds, feats: dict) -> dict:
    return {"feats": feats, "Y": ds.Y, "folds": folds, "n_test": len(ds.test_ids)}


def _plain(model_cfg: dict) -> dict:
    return {k: v for k, v in model_cfg.items() if k != "pseudo"}


def _planned_features(store: FeatureStore, budget: Budget, configs: dict, model_cfg: dict) -> dict:
    """A budgeted run's features: the store embeds what the plan's kept models read, not what the
    models it dropped for their encoders' time would have read."""
    store.want({m.name: configs[m.name] for m in budget.plan.models if m.status == "planned"})
    return _features(store, model_cfg)


def _features(store: FeatureStore, model_cfg: dict) -> dict:
    # The unlabelled folder's rows join only models with rounds: the others never use them.
    return store.for_model(model_cfg, with_extra=_with_extra(model_cfg))


def _with_extra(model_cfg: dict) -> bool:
    return resolve_model(model_cfg).pseudo.rounds > 0


def _round_jobs(
    paths, cfg: dict, common: dict, engine: Engine, quiet: bool, name: str, round_cfg: dict, out_dir: Path, src
) -> None:
    """A pseudo-label round's folds as jobs, once the round before it is assembled."""
    jobs = open_jobs(
        paths, cfg, name, round_cfg, common, out_dir=out_dir, with_extra=True, pseudo_from=src, quiet=quiet
    )
    run_jobs(jobs, engine)


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    init_distributed()  # a no-op unless launched by torchrun with several processes
    engine = Engine(
        jobs=getattr(args, "jobs", 1),
        scheduler=getattr(args, "scheduler", None),
        threads=getattr(args, "threads", None),
    )
    if engine.parallel and rank_world()[1] > 1:
        raise ValueError(
            f"--jobs {engine.jobs} / --scheduler cannot run under torchrun (GPUS>1): DDP already "
            "spreads each fold over the GPUs; use GPUS=1 with JOBS or SCHEDULER, or GPUS>1 alone"
        )
    budget = _budget(args, paths, engine)
    run_train(
        paths, cfg, Path(args.config), only=getattr(args, "only", None), quiet=quiet, engine=engine, budget=budget
    )
    return 0


def _budget(args, paths, engine: Engine) -> Budget | None:
    """``--time-limit`` (plan and keep to it) or ``--plan`` (replay one), for ``capfuse all``."""
    limit, plan = getattr(args, "time_limit", None), getattr(args, "plan", None)
    if limit is None and plan is None:
        return None
    if limit is not None and (engine.parallel or rank_world()[1] > 1):
        raise ValueError(
            "--time-limit plans one process's training against its clock; with --jobs, --scheduler or "
            "GPUS>1 run without it (or replay a plan with --plan, which needs no clock)"
        )
    replay = Plan.read(Path(plan)) if plan is not None else None
    machine = asdict(machine_record(paths.root))
    return Budget(
        limit_s=parse_duration(limit) if limit is not None else None,
        started=getattr(args, "started", time.monotonic()),
        plan_path=paths.runs / PLAN_FILE,
        replay=replay,
        machine={k: machine[k] for k in ("cpu", "isa", "isa_cap", "threads", "gpu", "bf16_native") if k in machine},
    )
