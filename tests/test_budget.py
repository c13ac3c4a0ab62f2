"""A time budget (``capfuse all --time-limit``): the plan, its replay, and the clock.

- durations parse, and bad ones are one clear error;
- the planner keeps what fits, caps a net model's epochs where that makes it fit, and drops
  the rest, in the config's order;
- a budget large enough trains exactly the config: the submission is byte-identical to an
  unbudgeted run's;
- a probe that predicts far too little still ends inside the budget: a model with early stopping
  stops each fold cleanly at its share of the time and keeps every row, one without is dropped
  whole at the deadline, and ``--plan`` replays the stops byte for byte;
- what a run learns from its finished models (where early stopping ends, how far the probe's
  rates are off) moves the predictions of the later ones.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import capfuse.budget.guard as guard_mod
from capfuse.budget import ModelPlan, Plan, parse_duration
from capfuse.budget.guard import Budget
from capfuse.budget.reserve import plan_second_level, plan_trials
from capfuse.cli import main
from capfuse.data.csvio import read_split
from capfuse.training.fold_state import accepted
from conftest import TINY_RUN_ARGS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60m", 3600), ("1h30m", 5400), ("90s", 90), ("3600", 3600), (" 2h ", 7200), ("1.5m", 90), (45, 45)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "60x", "m", "1h1h", "sixty", "1m30"])
def test_bad_durations_are_one_clear_error(text):
    with pytest.raises(ValueError, match="time limit"):
        parse_duration(text)


def _budget(left: float, rates: dict) -> Budget:
    b = Budget(limit_s=10_000, started=time.monotonic(), plan_path=None)
    b.plan = Plan(time_limit_s=10_000, reserve_s=0, folds_s=0, probe_s=0, models=[], probe={"models": rates})
    b._sizes = (800, 5, 1000, 400)  # rows fitted per fold, folds, train rows, test rows
    return b


NET = {"kind": "net", "inputs": ["caption"], "train": {"epochs": 20}}
LINEAR = {"kind": "linear", "inputs": ["caption"]}


def test_the_planner_keeps_caps_or_drops_what_the_time_allows():
    # A net model: 0.001 s per row and epoch over 800 rows, 0.5 s per epoch more, 1 s a fold to
    # build, 0.001 s per predicted row (200 held out + 400 test) -> 5 * (1 + 20 * 1.3 + 0.6) = 138 s.
    net = {"fold_s": 1.0, "epoch_s": 0.5, "row_epoch_s": 0.001, "predict_row_s": 0.001}
    rates = {"net": net, "lin": {"fold_s": 0.2, "epoch_s": 0.0, "row_epoch_s": 0.001, "predict_row_s": 0.0}}
    b = _budget(0, rates)
    entry = ModelPlan(name="net", kind="net", max_epochs=20)
    b._fit(entry, NET, left=140.0)
    assert (entry.status, entry.epochs, entry.train_s) == ("planned", None, 138.0)
    b._fit(entry, NET, left=80.0)  # 5 * (1.6 + 1.3 E) <= 80 -> E = 11
    assert (entry.status, entry.epochs) == ("planned", 11)
    assert entry.train_s <= 80.0 and "fewer epochs" in entry.why
    b._fit(entry, NET, left=30.0)  # 3 epochs is under a quarter of 20: dropped, not starved
    assert entry.status == "dropped" and "left" in entry.why
    b._fit(entry, NET, left=1000.0)  # more time later: the whole model again
    assert (entry.status, entry.epochs, entry.why) == ("planned", None, "")
    lin = ModelPlan(name="lin", kind="linear")
    b._fit(lin, LINEAR, left=5.0)  # 5 * (0.2 + 0.8) = 5 s
    assert (lin.status, lin.train_s) == ("planned", 5.0)
    b._fit(lin, LINEAR, left=4.0)
    assert lin.status == "dropped"


def test_where_early_stopping_ended_one_model_predicts_the_next(tmp_path):
    # Before any net model ran, a model is predicted with every epoch of its schedule; once one
    # has stopped after half its epochs on every fold, the next is predicted with half of its own.
    net = {"fold_s": 1.0, "epoch_s": 0.5, "row_epoch_s": 0.001, "predict_row_s": 0.001}
    b = _budget(0, {"first": net, "next": net})
    b._cfgs = {"first": NET, "next": NET}
    b.plan_path = tmp_path / "plan.json"
    first = ModelPlan(name="first", kind="net", max_epochs=20)
    nxt = ModelPlan(name="next", kind="net", max_epochs=20)
    b.plan.models = [first, nxt]
    b._fit(nxt, NET, left=1000.0)
    assert nxt.train_s == 138.0  # 5 * (1 + 20 * 1.3 + 0.6)
    for k in range(5):
        fold = tmp_path / "first" / f"fold{k}"
        fold.mkdir(parents=True)
        (fold / "done.json").write_text(json.dumps({"fold": k, "epochs_run": 10}))
    b._model_dir = lambda name: tmp_path / name
    b._t0["first"] = time.monotonic()
    b.finished("first", 0)
    assert b._later(first) == 73.0  # 5 * (1 + 10 * 1.3 + 0.6)
    # A fold its allowance stopped says nothing of early stopping: it is a stop to replay.
    (tmp_path / "first" / "fold0" / "done.json").write_text(
        json.dumps({"fold": 0, "epochs_run": 2, "stopped_by": "time"})
    )
    b.finished("first", 0)
    assert b.plan.model("first").stops == {"first/fold0": 2}


def test_a_model_that_took_twice_its_prediction_doubles_the_later_ones_of_its_kind(tmp_path):
    # The probe's rates were off by 2x for the linear models: a linear model that trained all
    # five folds here in twice its predicted time makes the next linear model's prediction
    # double; a net model's stays the probe's. A resumed model (older folds) teaches nothing.
    lin = {"fold_s": 0.2, "epoch_s": 0.0, "row_epoch_s": 0.001, "predict_row_s": 0.0}
    net = {"fold_s": 1.0, "epoch_s": 0.5, "row_epoch_s": 0.001, "predict_row_s": 0.001}
    b = _budget(0, {"a": {**lin, "fold_s": 1.2}, "b": lin, "n": net})
    b._cfgs = {"a": LINEAR, "b": LINEAR, "n": NET}
    b.plan_path = tmp_path / "plan.json"
    a, nxt, n = ModelPlan("a", "linear"), ModelPlan("b", "linear"), ModelPlan("n", "net", max_epochs=20)
    b.plan.models = [a, nxt, n]
    b._model_dir = lambda name: tmp_path / name
    assert (b._later(a), nxt.train_s, n.train_s) == (143.0, 5.0, 138.0)
    b._wall0["a"] = time.time() - 1
    for k in range(5):
        (tmp_path / "a" / f"fold{k}").mkdir(parents=True)
        (tmp_path / "a" / f"fold{k}" / "done.json").write_text(json.dumps({"fold": k}))
    b._t0["a"] = time.monotonic() - 20.0  # predicted 5 * (1.2 + 0.8) = 10 s, took 20
    b.finished("a", 0)
    assert b.plan.probe["measured_over_predicted"] == {"a": pytest.approx(2.0, abs=0.02)}
    b._later(a)
    assert nxt.train_s == pytest.approx(10.0, abs=0.1) and n.train_s == 138.0
    # A model whose folds are older than its turn (resumed) or too cheap to time teaches nothing.
    b._wall0["a"] = time.time() + 60
    b.finished("a", 0)
    assert len(b.lessons.ratios["linear/joint"]) == 1


def test_a_net_rehearsal_keeps_the_fastest_epoch_after_the_warm_up(monkeypatch):
    # The first epoch pays the warm-up and a burst of other work slows one of the others: the
    # rates come from the fastest epoch after the first, so one busy moment does not drop a model.
    from types import SimpleNamespace

    from capfuse.budget import probe

    seen = {}

    class Rehearsed:
        def fit_fold(self, feats, Y, tr, va, fold_dir):
            seen["epochs"], seen["rows"] = resolved.train.epochs, len(tr)
            info = {"step_seconds": [5.0, 1.0, 3.0], "epoch_seconds": [6.0, 1.5, 3.2], "predict_seconds": 0.0}
            return SimpleNamespace(info=info)

    resolved = None

    def create(kind, cfg, seed):
        nonlocal resolved
        resolved = cfg
        return Rehearsed()

    monkeypatch.setattr(probe, "MODELS", SimpleNamespace(create=create))
    folds = np.arange(1000) % 5
    rate = probe.rehearse(NET, feats={"n_test": 10}, Y=np.zeros((1000, 3)), folds=folds, n_test=10)
    assert seen == {"epochs": probe.REHEARSAL_EPOCHS, "rows": probe.REHEARSAL_ROWS}
    assert rate["row_epoch_s"] == pytest.approx(1.0 / probe.REHEARSAL_ROWS)
    assert rate["epoch_s"] == pytest.approx(0.2)  # 3.2 - 3.0, not the busy or the first epoch's
    assert resolved.train.batch_size == 128  # a small fold trains with the config's own batch

    # A competition-size fold trains with a larger batch (models.settings.for_rows), whose cost
    # per row the rehearsal must see: it trains with that batch, on at least two of them.
    folds = np.arange(30_000) % 5
    probe.rehearse(NET, feats={"n_test": 10}, Y=np.zeros((30_000, 3)), folds=folds, n_test=10)
    assert resolved.train.batch_size == 512 and seen["rows"] == 1024


def test_a_linear_rehearsal_predicts_a_fold_from_the_solvers_iterations(monkeypatch):
    # A fit costs a fixed part plus one pass over the rows per L-BFGS iteration, and larger samples
    # need more iterations: the two rehearsal fits give both rates, and a 24,000-row fold is
    # predicted from them, where the line through the two times alone falls short by half.
    from types import SimpleNamespace

    from capfuse.budget import probe

    clock = {"now": 0.0}

    def iterations(n: int) -> int:
        return round(10 * n**0.3)

    def cost(n: int) -> float:
        return 0.4 + 8e-6 * n * iterations(n)

    class Rehearsed:
        def fit_fold(self, feats, Y, tr, va, fold_dir):
            clock["now"] += cost(len(tr))
            return SimpleNamespace(info={"lbfgs_iterations": iterations(len(tr))})

    monkeypatch.setattr(probe, "MODELS", SimpleNamespace(create=lambda kind, cfg, seed: Rehearsed()))
    monkeypatch.setattr(probe.time, "perf_counter", lambda: clock["now"])
    cfg = {"kind": "linear", "inputs": ["image"], "max_iter": 300}
    folds = np.arange(30_000) % 5
    rate = probe.rehearse(cfg, feats={"n_test": 10}, Y=np.zeros((30_000, 3)), folds=folds, n_test=10)
    assert probe.fold_seconds(cfg, rate, 24_000, 0) == pytest.approx(cost(24_000), rel=0.02)
    straight = cost(probe.LINEAR_ROWS) + (cost(probe.LINEAR_ROWS) - cost(probe.LINEAR_ROWS // 4)) / (
        0.75 * probe.LINEAR_ROWS
    ) * (24_000 - probe.LINEAR_ROWS)
    assert straight < 0.6 * cost(24_000)
    # The solver's own cap bounds the iterations however far the rows are extended.
    capped = probe.fold_seconds({**cfg, "max_iter": 50}, rate, 1_000_000, 0)
    assert capped == pytest.approx(rate["fold_s"] + rate["row_iter_s"] * 1_000_000 * 50)


TOP = {"kind": "net", "inputs": ["image"], "image_encoder": {"train_blocks": 1}, "train": {"epochs": 20}}


def _two_heads_and_a_top_stage(tmp_path):
    """A budget planning two heads models (h, h2) and a top stage (t), alike in their probe's
    rates, with h's later models predicted once: (budget, h, h2, t)."""
    net = {"fold_s": 1.0, "epoch_s": 0.5, "row_epoch_s": 0.001, "predict_row_s": 0.001}
    b = _budget(0, {"h": net, "h2": net, "t": net})
    b._cfgs = {"h": NET, "h2": NET, "t": TOP}
    b.plan_path = tmp_path / "plan.json"
    h, h2 = ModelPlan("h", "net", max_epochs=20), ModelPlan("h2", "net", max_epochs=20)
    t = ModelPlan("t", "net", max_epochs=20)
    b.plan.models = [h, h2, t]
    b._later(h)
    return b, h, h2, t


def test_a_ratio_teaches_only_the_models_of_its_family(tmp_path):
    # Heads on cached vectors are over-predicted by their small rehearsal where a trained top
    # stage is under-predicted: a heads model that took a quarter of its prediction shrinks the
    # next heads model's prediction, and leaves the top stage's as the probe said.
    from capfuse.budget.lessons import family

    assert (family(LINEAR), family(NET), family(TOP)) == ("linear/joint", "net/heads", "net/top-stage")
    assert family({**LINEAR, "solver": "ovr"}) == "linear/ovr"  # the per-class fits teach only their own kind
    b, h, h2, t = _two_heads_and_a_top_stage(tmp_path)
    before = (h2.train_s, t.train_s)
    b.lessons.learn_ratio(family(NET), 10.0, 40.0)
    b._later(h)
    assert h2.train_s == pytest.approx(before[0] / 4, rel=0.01) and t.train_s == before[1]


def test_where_early_stopping_ended_a_model_teaches_only_its_family():
    # Heads on cached vectors stopped at a third of their epochs; a trained top stage is still
    # planned at its whole span until a model of its own family has said where it stops.
    from capfuse.budget.lessons import Lessons

    lessons = Lessons()
    assert lessons.expected_epochs({}, 30, "net/heads") is None  # nothing finished yet: every epoch
    lessons.shares.setdefault("net/heads", []).append(1 / 3)
    assert lessons.expected_epochs({}, 30, "net/heads") == pytest.approx(10)
    assert lessons.expected_epochs({}, 6, "net/top-stage") is None
    lessons.shares.setdefault("net/top-stage", []).append(0.5)
    assert lessons.expected_epochs({}, 6, "net/top-stage") == pytest.approx(3)
    assert lessons.expected_epochs({"epochs_seen": 5.0}, 6, "net/top-stage") == 5.0  # its own earlier folds lead


def test_the_plan_shortens_only_the_family_whose_model_stopped_early(tmp_path):
    from capfuse.budget.lessons import family

    b, h, h2, t = _two_heads_and_a_top_stage(tmp_path)
    before = (h2.train_s, t.train_s)
    b.lessons.shares.setdefault(family(NET), []).append(0.25)  # h stopped at a quarter of its epochs
    b._later(h)
    assert h2.train_s < 0.5 * before[0] and t.train_s == before[1]


def test_learned_ratios_are_medians_held_within_bounds(tmp_path):
    from capfuse.budget.lessons import MIN_LEARN_S, RATE_BOUNDS, Lessons, trained_here

    lessons = Lessons()
    assert lessons.ratio("net") == 1.0
    assert lessons.learn_ratio("net", 100.0, MIN_LEARN_S / 2) is None  # too small to say anything
    for measured in (30.0, 10.0, 20.0):
        lessons.learn_ratio("net", measured, 10.0)
    assert lessons.ratio("net") == 2.0 and lessons.ratio("linear") == 1.0
    lessons.learn_ratio("linear", 1000.0, 10.0)
    assert lessons.ratio("linear") == RATE_BOUNDS[1]
    assert not trained_here([{"fold": 0}], tmp_path, 2, 0.0)  # a fold missing


def test_the_threshold_study_gets_fewer_trials_only_when_the_second_level_would_crowd_the_budget():
    linear = {"fixed_s": 0.0, "trial_s": 0.1, "growth_s": 0.0}
    assert plan_trials(300, stack_s=10, study=linear, limit_s=3600) == 300  # 40 s of 3600
    steep = dict(linear, trial_s=2.0)
    assert plan_trials(300, stack_s=100, study=steep, limit_s=1200) == 110  # 10 + (300 - 100) / 2
    assert plan_trials(300, stack_s=100, study=dict(linear, trial_s=20.0), limit_s=1200) == 50  # never under 50
    assert plan_trials(300, stack_s=100, study=dict(steep, fixed_s=50.0), limit_s=1200) == 85  # 10 + 150 / 2
    free = dict(linear, trial_s=0.0)
    assert plan_trials(300, stack_s=0, study=free, limit_s=60) == 300


def test_a_study_is_predicted_from_its_fixed_part_and_each_further_trial():
    from capfuse.budget.plan import STUDY_TRIALS, study_seconds, trials_within

    cost = {"fixed_s": 5.0, "trial_s": 0.05, "growth_s": 0.0002}
    assert study_seconds(cost, STUDY_TRIALS) == 5.0  # the fixed part is paid once, not per trial
    t300 = study_seconds(cost, 300)
    assert t300 == pytest.approx(5.0 + 0.05 * 290 + 0.0002 * (300**2 - 100) / 2)
    assert trials_within(cost, t300, 300) == 300 and trials_within(cost, t300 - 0.01, 300) == 299
    assert trials_within(cost, 4.0, 300) == 0


def test_the_reserve_probe_predicts_the_threshold_study_within_a_factor(tmp_path):
    """Timed at 200 and 800 rows, the whole study at 3,000 rows and 100 trials (stored, as the
    thresholds stage stores it, and nested) is predicted within a factor of two: scaling the
    10-trial study by its trials predicted five times the real study at 30,000 rows."""
    from capfuse.budget.plan import study_seconds
    from capfuse.budget.reserve import _synthetic, study_cost
    from capfuse.ensemble.thresholds import fit_class_thresholds, nested_threshold_score

    def sample(n, seed=0):
        y, (logits,) = _synthetic(n, 6, 1, seed=seed)
        return y, 1 / (1 + np.exp(-logits.astype(np.float64)))

    n, k, trials = 3000, 5, 100
    # What a probe killed outright left (no cleanup runs on SIGKILL), and a folder of the same
    # prefix that holds something capfuse never writes there.
    (tmp_path / "runs" / "capfuse-probe-killed").mkdir(parents=True)
    (tmp_path / "runs" / "capfuse-probe-killed" / "rows200.db").write_bytes(b"")
    (tmp_path / "runs" / "capfuse-probe-user").mkdir()
    (tmp_path / "runs" / "capfuse-probe-user" / "notes.txt").write_text("mine")
    cost = study_cost(
        [sample(200), sample(800)], {"min_labels": 1, "max_labels": None}, n, k, workdir=tmp_path / "runs"
    )
    # Its stored studies are removed, and so is what the killed probe left; the other folder stays.
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["capfuse-probe-user"]
    Y, probs = sample(n, seed=1)
    t0 = time.perf_counter()
    url = f"sqlite:///{tmp_path / 'real.db'}"
    full = fit_class_thresholds(Y, probs, n_trials=trials, seed=0, storage=url, study_name="real")
    nested_threshold_score(Y, probs, np.arange(n) % k, n_trials=trials, seed=0, full=full)
    real = time.perf_counter() - t0
    assert real / 2 < study_seconds(cost, trials) < real * 2, (cost, real)


def test_the_stacker_is_left_out_only_when_the_second_level_would_crowd_the_budget():
    cands = ("best_single", "weighted_blend", "stack")
    assert plan_second_level(cands, stack_s=100, lightgbm_s=90, limit_s=3600) == (None, 100)
    assert plan_second_level(cands, stack_s=1000, lightgbm_s=900, limit_s=1200) == (
        ("best_single", "weighted_blend"),
        100,
    )
    assert plan_second_level(("stack",), stack_s=1000, lightgbm_s=900, limit_s=1200) == (None, 1000)


def test_when_no_model_fits_the_cheapest_is_trained_without_a_deadline(tmp_path):
    b = _budget(0, {})
    b.plan_path = tmp_path / "plan.json"
    b.plan.models = [
        ModelPlan(name="a", kind="net", status="dropped", train_s=50.0),
        ModelPlan(name="b", kind="linear", status="dropped", train_s=5.0),
    ]
    b._keep_one({"a": NET, "b": LINEAR})
    assert [m.status for m in b.plan.models] == ["dropped", "planned"]
    assert "past the budget" in b.plan.model("b").why
    assert b.hard_deadline() is None and b.allowance("b") == (None, 1)
    b._t0 = {}
    assert b.before_model("a", NET) is None and b.before_model("b", LINEAR) == LINEAR


def test_a_plan_round_trips_and_names_the_second_levels_models(tmp_path):
    plan = Plan(
        time_limit_s=60,
        reserve_s=5,
        folds_s=1,
        probe_s=2,
        models=[
            ModelPlan(name="a", kind="linear", status="done", embed_s=300.0, train_s=40.0, measured_s=42.0),
            ModelPlan(name="b", kind="net", rounds=2, rounds_done=1, status="done"),
            # Dropped for its training time after its features were cached: they count.
            ModelPlan(name="c", kind="net", status="dropped", why="predicted 99 s, 3 s left", embed_s=50.0),
            ModelPlan(name="d", kind="net", status="cut"),
        ],
    )
    plan.write(tmp_path / "plan.json")
    again = Plan.read(tmp_path / "plan.json")
    assert again == plan
    assert again.ensemble_names("all") == ["a", "b", "b@r1"]
    assert again.ensemble_names("last") == ["a", "b@r1"]
    assert "dropped" in again.table() and "predicted 99 s" in again.table()
    # The encoders have their own line, predicted beside measured; a model's line is its training.
    plan.embed_measured_s = 310.0
    lines = {
        line.split()[1] if line.startswith("train") else line.split()[0]: line for line in plan.table().splitlines()
    }
    assert lines["embed"].split()[-2:] == ["350", "310"]
    assert lines["a"].split()[-2:] == ["40", "42"]
    (tmp_path / "bad.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="bad.json: not a capfuse plan"):
        Plan.read(tmp_path / "bad.json")


def _all(project, data, *args) -> int:
    return main(["all", "--data", str(data), "--root", str(project), "--quiet", *TINY_RUN_ARGS, *args])


def _copy_inputs(tiny_run, dest):
    """A fresh project on the tiny run's data, folds and encoder cache: nothing trained yet.

    The data folder is a link to the tiny run's own, so that its images are the same files and
    the copied cache serves them: no test here pays for the encoders again."""
    (dest / "data").mkdir(parents=True)
    (dest / "data" / "tiny").symlink_to(tiny_run.data, target_is_directory=True)
    shutil.copytree(tiny_run.root / "folds", dest / "folds")
    shutil.copytree(tiny_run.root / "runs" / "tiny" / "cache", dest / "runs" / "tiny" / "cache")
    return dest / "data" / "tiny"


def test_a_large_budget_trains_the_config(tiny_run, tmp_path):
    # (A plan's replay, byte for byte, is proven with clean stops in the test below.)
    data = _copy_inputs(tiny_run, tmp_path / "budgeted")
    assert _all(tmp_path / "budgeted", data, "--config", str(tiny_run.config), "--time-limit", "2h") == 0
    runs = tmp_path / "budgeted" / "runs" / "tiny"
    plan = Plan.read(runs / "plan.json")
    assert [m.status for m in plan.models] == ["done", "done"]
    # The reserve holds the shift report's predicted fits beside the second level's.
    assert 0 < plan.probe["shift_s"] and plan.reserve_s >= plan.probe["stack_s"] + plan.probe["shift_s"] - 0.1
    sub = (tmp_path / "budgeted" / "submissions" / "tiny-latest.csv").read_bytes()
    # The same models, epochs and folds as the unbudgeted run: the same submission.
    assert sub == (tiny_run.root / "submissions" / "tiny-latest.csv").read_bytes()
    manifest = json.loads((tmp_path / "budgeted" / "submissions" / "tiny-latest.json").read_text())
    assert [m["status"] for m in manifest["plan"]["models"]] == ["done", "done"]
    assert 0 < manifest["plan"]["command_s"] < 7200  # the whole command, as the budget counts it
    # The cache was warm: nothing to embed, predicted or measured beyond the store's reading.
    assert manifest["plan"]["embed"]["predicted_s"] == 0 and manifest["plan"]["embed"]["measured_s"] is not None


def _probe_says_next_to_nothing(monkeypatch, fold_s: dict | None = None, second_level_s: float = 0.0) -> None:
    """A probe that predicts no time for encoders or epochs; ``fold_s``: a fixed cost per fold
    for the models it names; the second level costs ``second_level_s``."""
    fold_s = fold_s or {}
    monkeypatch.setattr(
        guard_mod.probe,
        "rehearse",
        lambda model_cfg, **k: (
            dict.fromkeys(("epoch_s", "row_epoch_s", "predict_row_s"), 0.0)
            | {"fold_s": fold_s.get(model_cfg["name"], 0.0)}
        ),
    )
    monkeypatch.setattr(
        guard_mod.probe, "embed_costs", lambda ds, models: ({m: {} for m in models}, {}, {"image": {}, "captions": {}})
    )
    free = {"fixed_s": 0.0, "trial_s": 0.0, "growth_s": 0.0}
    monkeypatch.setattr(guard_mod.reserve, "second_level_costs", lambda *a, **k: (second_level_s, 0.0, free))
    monkeypatch.setattr(guard_mod.reserve, "shift_seconds", lambda n_train, n_test: 0.0)


ENDLESS = ("--set", "models=[caption_linear,endless_mlp,unstoppable_mlp]")


def _slow_config(root: Path) -> Path:
    """A pipeline of the caption linear model, a caption MLP that early stopping never ends
    (endless epochs and patience: only its share of the budget can), and one without early
    stopping (no best epoch to keep: only the deadline can stop it, and then it is dropped)."""
    configs = REPO / "configs"
    (root / "configs" / "models").mkdir(parents=True)
    (root / "configs" / "models" / "caption_linear.yaml").write_text(
        f"inherit: {configs / 'models' / 'caption_linear.yaml'}\n"
    )
    (root / "configs" / "models" / "endless_mlp.yaml").write_text(
        f"inherit: {configs / 'models' / 'caption_mlp.yaml'}\n"
        "train: {epochs: 100000, patience: 100000, calibrate: false}\n"
    )
    (root / "configs" / "models" / "unstoppable_mlp.yaml").write_text(
        f"inherit: {configs / 'models' / 'caption_mlp.yaml'}\n"
        "train: {epochs: 100000, early_stop: none, calibrate: false}\n"
    )
    pipeline = root / "configs" / "pipeline.yaml"
    pipeline.write_text(
        f"inherit: {configs / 'pipeline.yaml'}\nmodels: [caption_linear, endless_mlp, unstoppable_mlp]\n"
    )
    return pipeline


def test_a_probe_that_predicts_too_little_still_ends_inside_the_budget(tiny_run, tmp_path, monkeypatch):
    # The probe says training costs (next to) nothing, so the plan keeps both MLPs with every epoch: the
    # endless one's folds must stop at their share of its allowance, keeping their best epoch and
    # every row; the unstoppable one must be stopped by the deadline and dropped whole.
    # The unstoppable MLP is said to cost half a second a fold, which the endless one's allowance leaves it.
    _probe_says_next_to_nothing(monkeypatch, fold_s={"unstoppable_mlp": 0.5}, second_level_s=2.0)
    config = _slow_config(tmp_path / "cfg")
    data = _copy_inputs(tiny_run, tmp_path / "p")
    limit = 40.0
    start = time.monotonic()
    code = _all(tmp_path / "p", data, "--config", str(config), *ENDLESS, "--time-limit", f"{limit:.0f}s")
    took = time.monotonic() - start
    assert code == 0
    assert took <= limit * 1.05, f"the budgeted run took {took:.1f} s for a {limit:.0f} s budget"
    runs = tmp_path / "p" / "runs" / "tiny"
    plan = Plan.read(runs / "plan.json")
    status = {m.name: m.status for m in plan.models}
    assert status["caption_linear"] == status["endless_mlp"] == "done"
    # What the endless one left may be too little to start the unstoppable one: dropped then,
    # else stopped by the deadline mid-fold and dropped whole ("cut"); never half-kept.
    assert status["unstoppable_mlp"] in ("cut", "dropped")
    stops = plan.model("endless_mlp").stops
    assert sorted(stops) == [f"endless_mlp/fold{k}" for k in range(3)]
    for key, epochs in stops.items():
        record = json.loads((runs / key / "done.json").read_text())
        assert record["stopped_by"] == "time" and record["epochs_run"] == epochs >= 1
        assert record["fingerprint"].endswith(f"+stop{epochs}")
    oof = pd.read_csv(runs / "endless_mlp" / "oof_logits.csv")
    rows, _ = read_split(data / "train.csv", "train")
    assert len(oof) == len(rows) and not oof.isna().any().any()
    manifest = json.loads((tmp_path / "p" / "submissions" / "tiny-latest.json").read_text())
    assert sorted(manifest["models"]) == ["caption_linear", "endless_mlp"]  # the second level used what finished
    sub = (tmp_path / "p" / "submissions" / "tiny-latest.csv").read_bytes()

    # Replayed: the same folds stop at the same epochs, without a clock: the same submission.
    data2 = _copy_inputs(tiny_run, tmp_path / "r")
    assert _all(tmp_path / "r", data2, "--config", str(config), *ENDLESS, "--plan", str(runs / "plan.json")) == 0
    assert (tmp_path / "r" / "submissions" / "tiny-latest.csv").read_bytes() == sub
    # A stopped fold is the budget's: a run without one trains it again rather than take it.
    replayed = tmp_path / "r" / "runs" / "tiny" / "endless_mlp"
    fp = json.loads((replayed / "fingerprint.json").read_text())["fingerprint"]
    done = json.loads((replayed / "fold0" / "done.json").read_text())["fingerprint"]
    assert done != fp and accepted(done, fp, replayed / "fold0") == done


def test_a_model_without_early_stopping_is_dropped_whole_at_the_deadline(tiny_run, tmp_path, monkeypatch):
    # Nothing to keep from a fold stopped mid-way when there is no best epoch: the deadline stops
    # the unstoppable MLP at a training step, and the second level sees the models that finished.
    _probe_says_next_to_nothing(monkeypatch)
    config = _slow_config(tmp_path / "cfg")
    data = _copy_inputs(tiny_run, tmp_path / "p")
    limit = 25.0
    start = time.monotonic()
    only = ("--set", "models=[caption_linear,unstoppable_mlp]")
    assert _all(tmp_path / "p", data, "--config", str(config), *only, "--time-limit", f"{limit:.0f}s") == 0
    took = time.monotonic() - start
    assert took <= limit * 1.05, f"the budgeted run took {took:.1f} s for a {limit:.0f} s budget"
    plan = Plan.read(tmp_path / "p" / "runs" / "tiny" / "plan.json")
    assert {m.name: m.status for m in plan.models} == {"caption_linear": "done", "unstoppable_mlp": "cut"}
    assert "deadline" in plan.model("unstoppable_mlp").why
    manifest = json.loads((tmp_path / "p" / "submissions" / "tiny-latest.json").read_text())
    assert list(manifest["models"]) == ["caption_linear"]


def test_features_shared_by_models_are_paid_once_and_never_by_a_dropped_model():
    from capfuse.budget import probe

    orig, flip, caption = ("image", "lite0", 224, "orig"), ("image", "lite0", 224, "hflip"), ("caption", "minilm", 24)
    needs = {"a": {orig: 400.0}, "b": {orig: 400.0, flip: 100.0}, "c": {caption: 50.0}, "d": {}}
    # Room for both views: the second model adds only its flipped view.
    assert probe.keep_encoders(needs, 600) == {"a": (400, True), "b": (100, True), "c": (50, True), "d": (0, True)}
    # No room for the plain view: the first model is dropped, and the second, which reads the same
    # view, pays for it in full and is dropped too (it would otherwise be planned at 100 s and
    # embed 500); the caption model and the one reading nothing new stay.
    assert probe.keep_encoders(needs, 300) == {"a": (400, False), "b": (500, False), "c": (50, True), "d": (0, True)}


def test_an_encoder_is_paid_for_only_when_a_model_reading_it_can_train_after_it():
    """The flipped view fits the encoders' share, but the model that reads it would not train in
    what is left beside it: the view is not embedded, and the caption model after it keeps the time."""
    from capfuse.budget import probe

    orig, flip, caption = ("image", "e", 224, "orig"), ("image", "e", 224, "hflip"), ("caption", "m", 24)
    needs = {"a": {orig: 300.0}, "b": {orig: 300.0, flip: 200.0}, "c": {caption: 100.0}}
    least = {"a": 50.0, "b": 900.0, "c": 20.0}
    assert probe.keep_encoders(needs, 900, least, left_s=1000) == {
        "a": (300, True),
        "b": (200, False),
        "c": (100, True),
    }
    # With room for its training too, it is kept (and without a training estimate, as before).
    assert probe.keep_encoders(needs, 900, least, left_s=2000)["b"] == (200, True)
    assert probe.keep_encoders(needs, 900)["b"] == (200, True)


def test_a_budget_embeds_only_the_views_its_kept_models_read(tiny_run, tmp_path, monkeypatch):
    # The store is built for every model of the config; once the plan drops the flip-TTA model for
    # its encoders' time, the pass must not compute the flipped view for it anyway.
    from types import SimpleNamespace

    import capfuse.stages.train as train_stage
    from capfuse.config import load_config
    from capfuse.data.dataset import load_dataset
    from capfuse.features.store import FeatureStore
    from capfuse.paths import Paths

    ds = load_dataset(Paths(tiny_run.data, tiny_run.root), load_config(tiny_run.config), quiet=True)
    base = load_config(REPO / "configs" / "models" / "image_mlp.yaml")
    plain = {**base, "train": {**base.get("train", {}), "tta": False, "flip_p": 0.0}}
    flipped = {**base, "train": {**base.get("train", {}), "tta": True}}
    configs = {"plain": plain, "flipped": flipped}
    store = FeatureStore(ds, True, configs)
    assert {v for views in store.wanted_views.values() for v in views} == {"orig", "hflip"}
    plan = SimpleNamespace(models=[ModelPlan("plain", "net"), ModelPlan("flipped", "net", status="dropped")])
    monkeypatch.setattr(train_stage, "_features", lambda store, model_cfg: {})
    train_stage._planned_features(store, SimpleNamespace(plan=plan), configs, plain)
    assert {v for views in store.wanted_views.values() for v in views} == {"orig"}


def test_the_shift_reports_prediction_grows_with_the_rows():
    small, large = guard_mod.reserve.shift_seconds(750, 250), guard_mod.reserve.shift_seconds(30_000, 10_000)
    assert 0 <= small < large


def test_the_encoder_probe_times_the_embed_pass_and_leaves_only_its_export(tiny_run, tmp_path):
    """A cold cache: the probe runs the embed step's own pass on a sample (both views of a
    flip-TTA model) and keeps nothing but the exported graph, which the run then reuses, and
    the sample's features, which a rehearsal reads before the run's exist."""
    from capfuse.config import load_config
    from capfuse.data.dataset import load_dataset
    from capfuse.features.sample import SampleStore
    from capfuse.features.store import FeatureStore
    from capfuse.paths import Paths

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tiny").symlink_to(tiny_run.data, target_is_directory=True)
    paths = Paths(tmp_path / "data" / "tiny", tmp_path)
    ds = load_dataset(paths, load_config(tiny_run.config), quiet=True)
    model = load_config(REPO / "configs" / "models" / "image_mlp.yaml") | {"name": "flipped"}
    model["train"] = {**model.get("train", {}), "tta": True}
    costs, rates, samples = guard_mod.probe.embed_costs(ds, {"flipped": model})
    per_view = {k.split()[-2]: v for k, v in rates.items() if k.startswith("image")}
    assert set(per_view) == {"orig", "hflip"} and per_view["orig"] > 0 and per_view["hflip"] >= 0
    n_rows = len(ds.train_ids) + len(ds.test_ids)
    assert sum(costs["flipped"].values()) == pytest.approx(sum(per_view.values()) * n_rows / 1000, rel=0.05)
    cache = paths.cache
    assert sorted(p.name for p in cache.iterdir()) == ["onnx"] and any((cache / "onnx").iterdir())
    # The pass's features stand in for the run's: every row of the dataset reads one of the
    # sample's rows, with the real shapes, and nothing is embedded for them.
    assert {view for _, view in samples["image"]} == {"orig", "hflip"}
    sample = SampleStore(FeatureStore(ds, True, {"flipped": model}), samples["image"], samples["captions"])
    feats = sample.for_model(model)
    for view in ("orig", "hflip"):
        for key, arr in feats["views"][view].items():
            small = next(
                a
                for (_, v), got in samples["image"].items()
                if v == view
                for a in got.values()
                if a.shape[1:] == arr.shape[1:]
            )
            assert arr.shape[0] == n_rows and np.array_equal(arr[[n_rows - 1]], small[[(n_rows - 1) % len(small)]]), key
    # A model that aligns its test rows is rehearsed on the sample as it is: measuring the
    # statistics of a repeated sample would spend the probe's time on nothing.
    aligned = sample.for_model(model | {"image_encoder": {**model.get("image_encoder", {}), "align": "test"}})
    assert "alignment" not in aligned and all(
        type(arr) is type(feats["views"]["orig"][key]) for key, arr in aligned["views"]["orig"].items()
    )
    assert sorted(p.name for p in cache.iterdir()) == ["onnx"]
    with pytest.raises(LookupError):
        SampleStore(sample, {}, {}).for_model(model)


@pytest.mark.parametrize("both_views_ms, later_ms", [(5.0, 2.0), (9.0, 3.0)])
def test_a_later_view_costs_at_most_the_first_views_decode_and_forward(tmp_path, monkeypatch, both_views_ms, later_ms):
    """The flipped view's rate is the difference of two timed passes; where noise makes that
    difference more than the plain view's whole pass (decode and forward), it is bounded by it."""
    from types import SimpleNamespace

    from capfuse.budget import probe

    clock = {"t": 0.0}
    per_image = {1: 3.0, 2: both_views_ms}  # ms a row: the plain pass, and both views at once

    def fake_embed(data_dir, ids, ok, requests, cache, quiet=True):
        clock["t"] += 0.05 + per_image[len(requests)] * len(ids) / 1000  # a fixed cost and a slope
        return {(spec, view): {"pooled": np.zeros((len(ids), 2))} for spec, view, _ in requests}

    monkeypatch.setattr(probe, "embed_image_views", fake_embed)
    monkeypatch.setattr(probe.time, "perf_counter", lambda: clock["t"])
    ds = SimpleNamespace(
        train_ids=[f"{i}.jpg" for i in range(400)],
        image_ok=np.ones(400, bool),
        paths=SimpleNamespace(cache=tmp_path / "cache", data_dir=tmp_path),
    )
    rates, _ = probe.image_pass_ms(ds, "spec", ("pooled",), ("orig", "hflip"))
    assert rates["orig"] == pytest.approx(3.0)
    assert rates["hflip"] == pytest.approx(later_ms)  # 2.0 as timed; 6.0 timed is bounded by 3.0


def test_the_choice_not_to_nest_is_made_on_the_clock_once_and_replayed(tmp_path):
    from types import SimpleNamespace

    from capfuse.paths import Paths
    from capfuse.stages.infer import _unnested_under_budget

    paths = Paths(tmp_path / "data" / "d", tmp_path)
    paths.runs.mkdir(parents=True)
    ds = SimpleNamespace(folds=lambda: np.arange(10) % 5)
    warned = SimpleNamespace(warned=True)
    plan = Plan(time_limit_s=100, reserve_s=0, folds_s=0, probe_s=0, models=[], probe={"stack_s": 30.0})
    started = time.monotonic()
    # A warning, 100 s of budget, 150 s predicted for the nested choice: not nested, and the plan says why.
    why = _unnested_under_budget(paths, {}, ds, plan, warned, started, replaying=False)
    assert why is not None and Plan.read(paths.runs / "plan.json").shift_choice == why
    # No warning: nothing to skip.
    assert _unnested_under_budget(paths, {}, ds, plan, SimpleNamespace(warned=False), started, replaying=False) is None
    # A replay reads the plan's answer, whatever its clock says.
    plan.shift_choice = why
    assert _unnested_under_budget(paths, {}, ds, plan, warned, started - 1e6, replaying=True) == why
