"""The second level over a run folder: base models' OOF logits → the best candidate → cut-offs.

``stack`` reads every base model's ``oof_logits.csv`` and ``test_logits.csv`` (never images,
captions or base checkpoints) and builds four candidates on the same folds:

* ``best_single``: the base model with the best OOF mean F1;
* ``mean_blend``: the plain mean of all models' probabilities (nothing fitted);
* ``weighted_blend``: non-negative weights fitted on OOF, judged on its nested OOF (fold k's rows
  use weights fitted on the other folds);
* ``stack``: LightGBM per class over every model's logits for every class, nested the same way.

Each is scored by OOF mean F1 at its own best global threshold; the best is kept and the file
says which and why. When the shift report warns, the training rows most like the test choose
instead, and a base model whose score falls there is capped (``capfuse.ensemble.choice``).
``thresholds`` then tunes per-class cut-offs with Optuna on the kept OOF probabilities,
compares them with one global threshold, and estimates both honestly by nested CV (tune on K-1
folds, score on the held-out one). Per-class thresholds are used only when their nested score
beats the global one's.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.config.check import register_parameters
from capfuse.config.schema import resolve
from capfuse.data.dataset import Dataset
from capfuse.data.logits import logits_frame, read_aligned, read_logits
from capfuse.ensemble.candidates import build_candidates as build_candidates
from capfuse.ensemble.candidates import nested_global_f1 as nested_global_f1
from capfuse.ensemble.choice import choose_candidate
from capfuse.ensemble.stack import DEFAULT_PARAMS
from capfuse.ensemble.thresholds import fit_class_thresholds, nested_threshold_score
from capfuse.ensemble.under_shift import Shift
from capfuse.utils.io import read_json, remove_stale_tmp, sha256_file, write_csv, write_json, write_text
from capfuse.utils.log import log, mask_url, stage

# ``ensemble.stack``: the stacker's LightGBM parameters (defaults: DEFAULT_PARAMS), its number of
# rounds (DEFAULT_ROUNDS) and how it starts (``init``: blend or constant); the config is checked
# against these names. ``ensemble.candidates`` choose among CANDIDATES (capfuse.config.schema).
register_parameters("ensemble.stack", [*DEFAULT_PARAMS, "num_rounds", "init"])

ROUND = re.compile(r"r[1-9][0-9]*")  # the suffix of a pseudo-label round's name, name@r<k>


def ensemble_dir(paths) -> Path:
    return paths.runs / "ensemble"


def trained_models(paths) -> dict[str, dict]:
    """``metrics.json`` of every model trained for this dataset, by name."""
    return {p.parent.name: read_json(p) for p in sorted(paths.runs.glob("*/metrics.json"))}


def config_models(cfg: dict) -> list[str]:
    """The models a config trains: those it lists (``models:``), or the one model a model config is."""
    top = resolve(cfg)
    if "kind" in cfg:
        return [top.name] if top.name else []
    return list(top.models)


def pipeline_models(cfg: dict, trained: dict[str, dict]) -> list[str]:
    """The config's own models found in ``trained``, with the pseudo-label rounds ``name@r<k>``
    the train stage made of them (``ensemble.rounds: last``: only each model's last round, in
    place of the model).

    ``runs/<dataset>/`` also holds whatever other configs trained there before; those are not
    this pipeline's, and a submission must not depend on what happens to lie in the folder.
    """
    names = config_models(cfg)
    rounds = [m for m in trained if m.partition("@")[0] in names and ROUND.fullmatch(m.partition("@")[2])]
    if resolve(cfg).ensemble.rounds == "last":
        # A round learnt from its producer's labels and then some: it stands in for the chain.
        last = {}
        for m in sorted(rounds, key=lambda m: int(m.partition("@")[2][1:])):
            last[m.partition("@")[0]] = m
        return sorted({*(m for m in names if m in trained and m not in last), *last.values()})
    return sorted({*(m for m in names if m in trained), *rounds})


def choose_base_models(cfg: dict, trained: dict[str, dict]) -> list[str]:
    """``ensemble.models``: ``all`` (the config's own models and their pseudo-label rounds) or a
    list of names. Other trained models in the folder are listed in the log and left out."""
    want = resolve(cfg).ensemble.models
    if not trained:
        raise FileNotFoundError("no trained model found: run `make train` first")
    if want == "all":
        listed = config_models(cfg)
        if not listed:
            raise ValueError(
                "the config names no models (`models: [name, ...]`), so `ensemble.models: all` "
                "has nothing to stack; list the models to stack in `ensemble.models`"
            )
        names = pipeline_models(cfg, trained)
        missing = [m for m in listed if m not in trained]
        if not names:
            raise FileNotFoundError(f"none of the config's models {listed} is trained yet: run `make train`")
        if missing:
            # As `train --only` leaves it: the trained part of the pipeline is stacked, and said.
            log.warning("models %s of the config are not trained yet (`make train`); stacking without them", missing)
    elif isinstance(want, (list, tuple)):
        names = list(want)
        missing = [m for m in names if m not in trained]
        if missing:
            raise FileNotFoundError(f"models {missing} are not trained yet: run `make train`")
    else:
        raise ValueError(f"ensemble.models must be `all` or a list of model names, got {want!r}")
    ignored = sorted(set(trained) - set(names))
    if ignored:
        log.info(
            "trained models left out of the second level, not being this config's (name them in "
            "ensemble.models to stack them): %s",
            ", ".join(ignored),
        )
    return names


def load_base_logits(paths, ds: Dataset, names: list[str], folds: np.ndarray) -> tuple[list, list]:
    """Every model's OOF and test logits, aligned to the dataset's ids, checked against the folds."""
    oof, test = [], []
    for name in names:
        oof_file = paths.model_dir(name) / "oof_logits.csv"
        cols = [str(c) for c in ds.class_ids]
        frame = read_aligned(oof_file, ds.train_ids, [*cols, "fold"])
        # A model trained on another fold file would have seen the rows it now predicts.
        if (frame["fold"].to_numpy() != folds).any():
            raise ValueError(f"{oof_file}: its folds differ from {paths.folds_file}; retrain it with `make train`")
        oof.append(frame[cols].to_numpy(np.float32))
        test.append(read_logits(paths.model_dir(name) / "test_logits.csv", ds.test_ids, ds.class_ids))
    return oof, test


def fit_stack(paths, cfg: dict, ds: Dataset, shift: Shift | None = None, unnested: str | None = None) -> dict:
    """Write ``runs/<dataset>/ensemble/``: candidates.csv, oof_probs.csv, test_probs.csv, stack.json.

    ``shift``: the shift report's verdict and test-likeness scores; with a warning (or
    ``ensemble.shift.use: always``) the candidate is chosen on the most test-like training rows
    (``capfuse.ensemble.choice``), else exactly as without it. A choice so made is nested, and
    its OOF probabilities (each fold's rows from the candidate chosen without them) go to
    ``oof_probs_nested.csv``, which the thresholds' nested score reads; ``oof_probs.csv`` stays
    the kept candidate's, which the thresholds are fitted on, as they are applied to its test
    probabilities. ``unnested``: why the choice on the test-like rows is not nested (a time
    budget's), see ``capfuse.ensemble.choice``."""
    with stage("stack", paths.dataset):
        remove_stale_tmp(ensemble_dir(paths))  # what a killed stack or thresholds run left
        folds = ds.folds()
        trained = trained_models(paths)
        names = choose_base_models(cfg, trained)
        oof_logits, test_logits = load_base_logits(paths, ds, names, folds)
        rule = threshold_rule(cfg)
        # A model reading no input the report found shifted is never capped (ensemble.under_shift).
        exposed = None if shift is None else [shift.exposed(bool(trained[n].get("needs_image", True))) for n in names]
        picked = choose_candidate(ds.Y, oof_logits, test_logits, folds, names, cfg, rule, shift, exposed, unnested)
        cands, chosen, why = picked.candidates, picked.chosen, picked.why
        table = pd.DataFrame([{"candidate": c, **v["score"], "chosen": c == chosen} for c, v in cands.items()])
        table = table.sort_values(picked.score, ascending=False).reset_index(drop=True)
        out = ensemble_dir(paths)
        write_csv(out / "candidates.csv", table)
        write_csv(
            out / "oof_probs.csv", logits_frame(ds.train_ids, cands[chosen]["oof"], ds.class_ids, {"fold": folds})
        )
        if picked.oof is cands[chosen]["oof"]:
            (out / NESTED_CHOICE_FILE).unlink(missing_ok=True)  # an earlier choice's, under a shift
        else:
            write_csv(out / NESTED_CHOICE_FILE, logits_frame(ds.train_ids, picked.oof, ds.class_ids, {"fold": folds}))
        write_csv(out / "test_probs.csv", logits_frame(ds.test_ids, cands[chosen]["test"], ds.class_ids))
        summary = {
            "chosen": chosen,
            "why": why,
            "base_models": {n: {k: trained[n].get(k) for k in ("kind", "seed", "cv_mean_f1")} for n in names},
            "candidates": {c: {**v["score"], **v["detail"]} for c, v in cands.items()},
            "inputs_sha256": inputs_hash(oof_logits, test_logits, folds, names),
            # Per model, so that an export after one model was retrained names it (stale_second_level).
            "inputs_sha256_by_model": {
                n: inputs_hash([o], [t], folds, [n]) for n, o, t in zip(names, oof_logits, test_logits)
            },
        }
        if picked.choice is not None:
            summary["choice"] = picked.choice
        write_json(out / "stack.json", summary)
        write_kept(out / KEPT_DIR, chosen, names, cands[chosen])
        log.info("second level (%d base models):\n%s", len(names), table.to_string(index=False))
        log.info("kept %s: %s", chosen, why)
        return summary


KEPT_DIR = "kept"  # the kept candidate as data a bundle can replay (capfuse.bundle)
NESTED_CHOICE_FILE = "oof_probs_nested.csv"  # under a shift: the OOF of the nested choice (fit_stack)


def write_kept(folder: Path, chosen: str, names: list[str], cand: dict) -> None:
    """``kept.json`` (and the stacker's boosters as LightGBM text): what turns the base models'
    test logits into the kept candidate's probabilities, at full precision (stack.json rounds).
    New files beside the stage's others, which keep their bytes."""
    record: dict = {"candidate": chosen, "models": names}
    if chosen == "best_single":
        record["model"] = cand["detail"]["model"]
    elif chosen == "weighted_blend":
        record["weights"] = cand["saved"]["weights"]
    elif chosen == "stack":
        folds = []
        for k, fold in enumerate(cand["saved"]["folds"]):
            classes = []
            for j, part in enumerate(fold["classes"]):
                if "booster" in part:
                    name = f"stack_fold{k}_class{j}.txt"
                    write_text(folder / name, part["booster"])
                    part = {"booster": name}
                classes.append(part)
            folds.append({"weights": fold["weights"], "classes": classes})
        record["folds"] = folds
    write_json(folder / "kept.json", record)  # last: it names the files beside it


def inputs_hash(oof_logits, test_logits, folds, names) -> str:
    """What the second level was fitted on: the models' names, logits and folds (``stack.json``)."""
    h = hashlib.sha256(json.dumps(names).encode())
    for arr in (*oof_logits, *test_logits, folds):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def threshold_rule(cfg: dict) -> dict:
    rules = resolve(cfg).threshold
    return {"min_labels": rules.min_labels, "max_labels": rules.max_labels}


def read_probs(path: Path, ids: list[str], class_ids: list[int]) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `make stack` (or `make infer`) first")
    return read_logits(path, ids, class_ids).astype(np.float64)


def fit_thresholds(paths, cfg: dict, ds: Dataset, *, storage: str | None = None) -> dict:
    """Tune global and per-class thresholds on the kept OOF probabilities; write thresholds.json."""
    with stage("thresholds", paths.dataset):
        remove_stale_tmp(ensemble_dir(paths))
        folds = ds.folds()
        out = ensemble_dir(paths)
        probs = read_probs(out / "oof_probs.csv", ds.train_ids, ds.class_ids)
        rule = threshold_rule(cfg)
        top = resolve(cfg)
        tcfg = top.threshold
        trials, seed = tcfg.trials, top.seed
        storage = storage or tcfg.storage or f"sqlite:///{(out / 'thresholds.db').resolve()}"
        # One study per input: the same OOF probabilities and rule resume it; new ones start another.
        key = hashlib.sha256(probs.tobytes() + ds.Y.tobytes() + json.dumps(rule).encode()).hexdigest()[:16]
        study_name = f"{paths.dataset}-{key}"
        result = fit_class_thresholds(
            ds.Y, probs, **rule, n_trials=trials, seed=seed, storage=storage, study_name=study_name
        )
        # Under a shift the candidate was chosen per fold without that fold's labels: the nested
        # score is that whole procedure's, while the thresholds fit the kept candidate.
        honest = out / NESTED_CHOICE_FILE
        scored = read_probs(honest, ds.train_ids, ds.class_ids) if honest.exists() else probs
        nested = nested_threshold_score(ds.Y, scored, folds, **rule, n_trials=trials, seed=seed, full=result)
        per_class = tcfg.per_class
        use_class = per_class is True or (per_class == "auto" and nested["nested"] > nested["global_nested"])
        summary = {
            "kind": "per_class" if use_class else "global",
            "why": (
                f"nested mean F1 {nested['nested']:.4f} per class vs {nested['global_nested']:.4f} global"
                + ("" if per_class == "auto" else f" (threshold.per_class: {per_class})")
            ),
            "global": {
                "threshold": round(float(result.global_threshold), 4),
                "in_sample": round(float(nested["global_in_sample"]), 5),
                "nested": round(float(nested["global_nested"]), 5),
                "gap": round(float(nested["global_gap"]), 5),
            },
            "per_class": {
                "thresholds": {str(c): round(float(t), 4) for c, t in zip(ds.class_ids, result.thresholds)},
                "in_sample": round(float(result.score), 5),
                "nested": round(float(nested["nested"]), 5),
                "gap": round(float(result.score - nested["nested"]), 5),
            },
            "rule": rule,
            "trials": result.n_trials,
            "seed": seed,
            "study": study_name,
            # A sqlite file is named, not located: the summary holds no path of this machine;
            # another URL is kept without its password.
            "storage": f"sqlite:///{Path(storage.removeprefix('sqlite:///')).name}"
            if storage.startswith("sqlite:///")
            else mask_url(storage),
            "candidate": read_json(out / "stack.json")["chosen"] if (out / "stack.json").exists() else None,
            # What the thresholds were tuned on: an export refuses them beside other probabilities.
            "oof_probs_sha256": sha256_file(out / "oof_probs.csv"),
            **({"nested_on": NESTED_CHOICE_FILE} if honest.exists() else {}),
        }
        write_json(out / "thresholds.json", summary)
        g, c = summary["global"], summary["per_class"]
        log.info(
            "global threshold %.3f: in-sample %.4f, nested %.4f (gap %+.4f)",
            g["threshold"],
            g["in_sample"],
            g["nested"],
            g["gap"],
        )
        log.info(
            "per-class thresholds: in-sample %.4f, nested %.4f (gap %+.4f); %d Optuna trials in %s",
            c["in_sample"],
            c["nested"],
            c["gap"],
            result.n_trials,
            summary["storage"],
        )
        log.info("using %s thresholds: %s", summary["kind"], summary["why"])
        return summary


def thresholds_vector(summary: dict, class_ids: list[int]) -> np.ndarray | float:
    if summary["kind"] == "global":
        return float(summary["global"]["threshold"])
    return np.array([summary["per_class"]["thresholds"][str(c)] for c in class_ids])
