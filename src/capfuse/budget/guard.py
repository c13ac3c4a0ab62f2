"""The train stage's side of a budget: plan the run, then keep to it against the clock.

``Budget.plan_models`` rehearses the net models on the probe's sample of their features, caches
the features of the models whose encoders fit (in the config's order, at most ``EMBED_SHARE``
of what is left, and only where the model can still train after them), rehearses the linear
models on them, and keeps each model, in the config's order, whose predicted time fits what is
left after the models before it and the second level's reserve; a net model that does not fit with
its epochs is kept with fewer (never under ``MIN_EPOCH_SHARE`` of them). ``before_model``
plans each model again against the clock when its turn comes, with what the models before it
left: a planned model that no longer fits gets fewer epochs or is dropped, and one dropped or
capped at first gets its epochs back when early stopping left the time. A model the clock stops
mid-fold (``OutOfTime``) is dropped whole, a round stopped so keeps the rounds before it. A
replayed plan (``--plan``) sets the same models, epochs and rounds, and opens no deadline.

Each finished model teaches the later predictions where early stopping ends a model and how far
the probe's rates are off (``lessons``). A prediction that proves short costs no fold: each model
trains under an allowance (``allowance``), the deadline less what the planned models after it
are predicted to need, and a fold that would overrun its share of it stops cleanly after an
epoch, keeping its best one (``capfuse.utils.deadline``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from capfuse.budget import probe, reserve
from capfuse.budget.duration import format_duration
from capfuse.budget.lessons import Lessons, epochs_seen, family, fold_records, mean_epochs_run, trained_here
from capfuse.budget.plan import ModelPlan, Plan, study_seconds
from capfuse.budget.reserve import plan_second_level, plan_trials
from capfuse.config import deep_merge
from capfuse.config.schema import resolve, resolve_model
from capfuse.utils.log import log, stage

MIN_EPOCH_SHARE = 0.25  # a capped net model keeps at least this share of its configured epochs
EMBED_SHARE = 0.75  # the encoders' most of what is left before them: models need features before any epoch
RESERVE_MARGIN = 1.25  # the second level's prediction times this, plus RESERVE_FLOOR_S
RESERVE_FLOOR_S = 15.0
ALLOWANCE_SHARE = 0.9  # a model's allowance: this share of the time the plan leaves it before the deadline


class Budget:
    def __init__(
        self, *, limit_s: float | None, started: float, plan_path: Path, replay: Plan | None = None, machine=None
    ):
        self.limit_s = limit_s if replay is None else replay.time_limit_s
        self.started = started  # time.monotonic() when the command began: the folds count too
        self.plan_path = plan_path
        self.replay = replay
        self.machine = machine or {}
        self.plan: Plan | None = None
        self._t0: dict[str, float] = {}
        self._cfgs: dict[str, dict] = {}
        self._model_dir: Callable[[str], Path] | None = None
        self.lessons = Lessons()  # what the finished models taught the later predictions
        self._wall0: dict[str, float] = {}  # time.time() when each model's turn came (its folds' files are newer)
        self.keep_anyway: str | None = None  # the model kept although nothing fitted (no deadline for it)

    # -- the clock -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        """Seconds left for training: the budget less what has run and the second level's reserve."""
        return self.limit_s - self.elapsed() - self._reserve()

    def _reserve(self) -> float:
        return 0.0 if self.plan is None else self.plan.reserve_s * RESERVE_MARGIN + RESERVE_FLOOR_S

    def hard_deadline(self) -> float | None:
        """The instant (monotonic) training must stop by; None when replaying a plan or training
        the one model kept although none fitted (a deadline would leave the run without any)."""
        if self.replay is not None or self.keep_anyway is not None:
            return None
        return self.started + self.limit_s - self._reserve()

    # -- planning --------------------------------------------------------------------------------
    def plan_models(
        self,
        ds,
        cfg: dict,
        models: dict[str, dict],
        features: Callable[[dict], dict],
        inputs: Callable[[dict], dict],
        model_dir: Callable[[str], Path] | None = None,
        sample_inputs: Callable[[dict, dict], dict] | None = None,
    ) -> dict[str, dict]:
        """The models to train, in order, with the plan's changes to their configs. ``inputs``: a
        model's rehearsal inputs on its features; ``sample_inputs``: on the probe's samples of
        them (``probe.embed_costs``), before they exist. ``model_dir``: where a model's folds of
        earlier runs lie, whose epoch counts say how soon early stopping ends it on this dataset."""
        self._model_dir = model_dir
        if self.replay is not None:
            return self._replayed(models)
        self._cfgs = dict(models)
        folds_s = self.elapsed()  # the folds step and loading, before the plan
        with stage("plan", f"time limit {format_duration(self.limit_s)}"):
            t0 = time.monotonic()
            folds = ds.folds()
            k = int(folds.max()) + 1
            n_train, n_test = len(ds.train_ids), len(ds.test_ids)
            n_fit = n_train - n_train // k
            embed, rates, samples = probe.embed_costs(ds, models)
            stack_s, lightgbm_s, study = reserve.second_level_costs(
                cfg, n_train, len(ds.class_ids), len(models), k, workdir=self.plan_path.parent
            )
            candidates, stack_s = plan_second_level(resolve(cfg).ensemble.candidates, stack_s, lightgbm_s, self.limit_s)
            trials = plan_trials(resolve(cfg).threshold.trials, stack_s, study, self.limit_s)
            shift_s = reserve.shift_seconds(n_train, n_test)
            reserve_s = stack_s + study_seconds(study, trials) + shift_s
            self.plan = Plan(
                time_limit_s=self.limit_s,
                reserve_s=round(reserve_s, 1),
                folds_s=round(folds_s, 1),
                probe_s=0.0,
                models=[],
                probe={
                    "rates": rates,
                    "stack_s": round(stack_s, 1),
                    "lightgbm_s": round(lightgbm_s, 1),
                    "threshold_study": study,
                    "shift_s": round(shift_s, 2),
                },
                threshold_trials=trials if trials != resolve(cfg).threshold.trials else None,
                candidates=list(candidates) if candidates is not None else None,
                machine=self.machine,
            )
            self._sizes = (n_fit, k, n_train, n_test)
            for name, model_cfg in models.items():
                m = resolve_model(model_cfg)
                self.plan.models.append(
                    ModelPlan(name=name, kind=m.kind, max_epochs=probe.span(model_cfg, n_fit), rounds=m.pseudo.rounds)
                )
            # The net models on cached features rehearse on a sample of them before any image is
            # decoded for the run (a step costs the same on any values), so that an encoder is
            # paid for only when a model that reads it can train in what is left after it.
            on_cache = {n: c for n, c in models.items() if family(c) in ("net/heads", "net/top-stage")}
            least = self._rehearse(on_cache, partial(sample_inputs, samples)) if sample_inputs else {}
            encoders = probe.keep_encoders(embed, EMBED_SHARE * self.left(), least, self.left())
            for entry in self.plan.models:
                cost, fits = encoders[entry.name]
                entry.embed_s = round(cost, 1) if fits else 0.0  # what it caches in this run
                if not fits:
                    train = (
                        f" with its training ({least[entry.name]:.0f} s at the fewest epochs)"
                        if entry.name in least
                        else ""
                    )
                    entry.status, entry.why = (
                        "dropped",
                        f"its features would take {cost:.0f} s, which{train} would not fit",
                    )
            probe_s = time.monotonic() - t0
            self.write()
        kept = {m.name: models[m.name] for m in self.plan.models if m.status == "planned"}
        with stage("embed", ", ".join(kept)):
            t_embed = time.monotonic()
            for model_cfg in kept.values():
                features(model_cfg)
            self.plan.embed_measured_s = round(time.monotonic() - t_embed, 1)
        with stage("rehearse", ", ".join(n for n in kept if n not in self.plan.probe.get("models", {})) or "none left"):
            t1 = time.monotonic()
            self._rehearse(kept, inputs)
            self.plan.probe_s = round(probe_s + time.monotonic() - t1, 1)
        left = self.left()
        for name, model_cfg in kept.items():
            entry = self.plan.model(name)
            self._fit(entry, model_cfg, left)
            if entry.status == "planned":
                left -= entry.train_s
        self._keep_one(kept)
        self.write()
        log.info("the plan (%s):\n%s", self.plan_path, self.plan.table())
        # The models dropped here for their training time are looked at again when their turn
        # comes: the models before them may finish early (early stopping) and leave the time.
        return kept

    def _rehearse(self, models: dict[str, dict], inputs: Callable[[dict], dict]) -> dict[str, float]:
        """Rehearse each of ``models`` not rehearsed yet on ``inputs`` (a model they cannot serve,
        ``LookupError``, waits for its own features) and keep its rates in the plan. Returns the
        least each rehearsed model may train: its fewest epochs, no pseudo-label round."""
        rates = self.plan.probe.setdefault("models", {})
        least = {}
        for name, model_cfg in models.items():
            if name not in rates:
                try:
                    rate = probe.rehearse(model_cfg, **inputs(model_cfg))
                except LookupError:
                    continue
                seen = epochs_seen(self._model_dir(name)) if self._model_dir is not None else None
                if seen is not None:
                    rate["epochs_seen"] = seen
                rates[name] = {k: float(f"{v:.6g}") for k, v in rate.items()}
            entry = self.plan.model(name)
            fewest = max(1, math.ceil(MIN_EPOCH_SHARE * entry.max_epochs)) if entry.max_epochs else None
            least[name] = self._predict(entry, model_cfg, fewest, 0)
        return least

    def _predict(
        self, entry: ModelPlan, model_cfg: dict, epochs: float | None, rounds: int, learned: bool = True
    ) -> float:
        """Predicted seconds of ``entry`` with an epoch cap (None: its own) and ``rounds``;
        ``learned``: with what the finished models taught (where early stopping ends, how far
        the probe's rates are off), else from the probe alone."""
        n_fit, k, n_train, n_test = self._sizes
        rate = self.plan.probe["models"][entry.name]
        cap = epochs if epochs is not None else entry.max_epochs
        expected = self.lessons.expected_epochs(rate, entry.max_epochs, family(model_cfg)) if learned else None
        if cap is not None and expected is not None:
            cap = min(cap, max(1, math.ceil(expected)))
        fold = probe.fold_seconds(model_cfg, rate, n_fit, n_train - n_fit + n_test, cap)
        # A round also trains on the pseudo-labelled test rows.
        seconds = k * fold * (1 + rounds * (n_train + n_test) / n_train)
        return seconds * (self.lessons.ratio(family(model_cfg)) if learned else 1.0)

    def _learn_ratio(self, entry: ModelPlan, rounds_done: int) -> None:
        """Teach the later predictions how far the probe was off for ``entry`` (``Lessons``)."""
        since = self._wall0.get(entry.name)
        if self._model_dir is None or since is None or not entry.measured_s or entry.stops:
            return
        records = fold_records(self._model_dir(entry.name))
        if not trained_here(records, self._model_dir(entry.name), self._sizes[1], since):
            return
        epochs = mean_epochs_run(records) if entry.kind == "net" else None
        if entry.kind == "net" and epochs is None:
            return
        predicted = self._predict(entry, self._cfgs[entry.name], epochs, rounds_done, learned=False)
        ratio = self.lessons.learn_ratio(family(self._cfgs[entry.name]), entry.measured_s, predicted)
        if ratio is not None:
            self.plan.probe.setdefault("measured_over_predicted", {})[entry.name] = round(ratio, 3)

    def _later(self, entry: ModelPlan) -> float:
        """Predicted seconds of the planned models after ``entry``, refreshed with what is known now."""
        total = 0.0
        for m in self.plan.models[self.plan.models.index(entry) + 1 :]:
            if m.status == "planned":
                m.train_s = round(self._predict(m, self._cfgs[m.name], m.epochs, m.rounds), 1)
                total += m.train_s
        return total

    def _fit(self, entry: ModelPlan, model_cfg: dict, left: float) -> None:
        """Keep ``entry`` as it is, with fewer epochs or rounds, or drop it: whichever fits ``left``."""
        entry.status, entry.why, entry.epochs = "planned", "", None
        entry.rounds = resolve_model(model_cfg).pseudo.rounds

        def total(epochs: int | None, rounds: int) -> float:
            return self._predict(entry, model_cfg, epochs, rounds)

        options: list[tuple[int | None, int]] = [(None, entry.rounds)]
        if entry.rounds:
            options.append((None, 0))
        if entry.kind == "net" and entry.max_epochs:
            low = max(1, math.ceil(MIN_EPOCH_SHARE * entry.max_epochs))
            for rounds in sorted({entry.rounds, 0}, reverse=True):
                per_epoch = total(1, rounds) - total(0, rounds)
                fixed = total(0, rounds)
                fit = int((left - fixed) // per_epoch) if per_epoch > 0 else entry.max_epochs
                if low <= fit < entry.max_epochs:
                    options.append((fit, rounds))
        for epochs, rounds in options:
            need = total(epochs, rounds)
            if need <= left:
                entry.epochs, entry.rounds, entry.train_s = epochs, rounds, round(need, 1)
                if epochs is not None or rounds < (resolve_model(model_cfg).pseudo.rounds):
                    entry.why = "fewer epochs or rounds to fit the budget"
                return
        entry.status, entry.train_s = "dropped", round(total(None, entry.rounds), 1)
        entry.why = f"predicted {entry.train_s:.0f} s, {max(0.0, left):.0f} s left"

    def _keep_one(self, kept: dict[str, dict]) -> None:
        """A submission needs a model: when none fits, the one predicted cheapest is kept anyway,
        with a warning that the run will end past the budget."""
        if not kept or any(m.status == "planned" for m in self.plan.models):
            return
        cheapest = min((self.plan.model(n) for n in kept), key=lambda m: m.train_s)
        cheapest.status = "planned"
        cheapest.why = "no model fits the budget: the cheapest is trained anyway, past the budget"
        self.keep_anyway = cheapest.name
        log.warning(
            "time budget: %s leaves no time for any model; training the cheapest, %s (predicted %.0f s), "
            "so the run will end past the budget",
            format_duration(self.limit_s),
            cheapest.name,
            cheapest.train_s,
        )

    def _replayed(self, models: dict[str, dict]) -> dict[str, dict]:
        plan = self.replay
        unknown = sorted({m.name for m in plan.models} - set(models))
        if unknown:
            raise ValueError(f"the plan names models this config does not train: {unknown}")
        self.plan = plan
        for m in plan.models:
            if m.status == "done":
                m.status = "planned"
            m.measured_s = None
        self.write()
        log.info("replaying the plan: %s", ", ".join(m.name for m in plan.kept()))
        return {m.name: models[m.name] for m in plan.kept()}

    @staticmethod
    def apply(model_cfg: dict, entry: ModelPlan) -> dict:
        out = deep_merge(model_cfg, entry.overrides())
        if entry.rounds != resolve_model(model_cfg).pseudo.rounds:
            out = deep_merge(out, {"pseudo": {"rounds": entry.rounds}})
        return out

    # -- while training --------------------------------------------------------------------------
    def before_model(self, name: str, model_cfg: dict) -> dict | None:
        """``name``'s config as the plan trains it now, or None when it does not fit the clock.

        The time it may take is what is left before the deadline less the predictions of the
        planned models after it: a model the plan kept keeps its place, and one it dropped, or
        capped, gets back what the models before it left unused."""
        entry = self.plan.model(name)
        self._t0[name] = time.monotonic()
        self._wall0[name] = time.time()
        if self.keep_anyway is not None:  # nothing fitted: the cheapest model alone, without a clock
            return self.apply(model_cfg, entry) if name == self.keep_anyway else None
        if self.replay is None:
            left = self.hard_deadline() - time.monotonic() - self._later(entry)
            was = (entry.status, entry.epochs, entry.rounds)
            self._fit(entry, model_cfg, left)
            if (entry.status, entry.epochs, entry.rounds) != was:
                log.info("time budget: %s now %s%s", name, entry.status, f" ({entry.why})" if entry.why else "")
            self.write()
            if entry.status != "planned":
                return None
        return self.apply(model_cfg, entry)

    def allowance(self, name: str) -> tuple[float | None, int]:
        """(the instant ``name`` should end by, the folds it trains): the deadline less the
        predictions of the planned models after it; (None, 1) when replaying a plan."""
        if self.hard_deadline() is None:
            return None, 1
        entry = self.plan.model(name)
        now = time.monotonic()
        # The allowance ends short of the deadline: a fold's last epoch, its predictions and its
        # files come after the check that stops it, and a loaded machine runs an epoch slower.
        room = max(0.0, self.hard_deadline() - self._later(entry) - now)
        return now + ALLOWANCE_SHARE * room, self._sizes[1] * (1 + entry.rounds)

    def stops(self, name: str) -> dict[str, int] | None:
        """A replayed plan's clean stops of ``name``'s folds; None when not replaying."""
        return self.plan.model(name).stops if self.replay is not None else None

    def finished(self, name: str, rounds_done: int) -> None:
        entry = self.plan.model(name)
        entry.status, entry.rounds_done = "done", rounds_done
        entry.measured_s = round(time.monotonic() - self._t0[name], 1)
        self._record_folds(entry, rounds_done)
        if self.replay is None:
            self._learn_ratio(entry, rounds_done)
        self.write()

    def _record_folds(self, entry: ModelPlan, rounds_done: int) -> None:
        """The clean stops of the kept rounds' folds, and the share of its epochs the model's
        own folds ran where early stopping, not the clock, ended them."""
        if self._model_dir is None or self.replay is not None:
            return
        span = entry.epochs or entry.max_epochs
        shares = []
        for r, folder in enumerate([entry.name, *(f"{entry.name}@r{k}" for k in range(1, rounds_done + 1))]):
            for record in fold_records(self._model_dir(folder)):
                if record.get("stopped_by") == "time":
                    entry.stops[f"{folder}/fold{record['fold']}"] = int(record["epochs_run"])
                elif r == 0 and span and "epochs_run" in record:
                    shares.append(int(record["epochs_run"]) / span)
        if entry.kind == "net" and shares:
            self.lessons.shares.setdefault(family(self._cfgs[entry.name]), []).append(sum(shares) / len(shares))

    def cut(self, name: str, rounds_done: int, exc: Exception) -> None:
        """The clock stopped ``name``: the rounds it finished stay (``rounds_done`` from
        ``rounds_trained``); without round 0 it is dropped whole."""
        entry = self.plan.model(name)
        entry.measured_s = round(time.monotonic() - self._t0[name], 1)
        if rounds_done >= 0:
            entry.status, entry.rounds_done, entry.rounds = "done", rounds_done, rounds_done
            entry.why = f"round {rounds_done + 1} stopped by the deadline; the earlier rounds are kept"
            self._record_folds(entry, rounds_done)
        else:
            entry.status = "cut"
            entry.why = "stopped by the deadline; dropped whole (no fold is kept)"
        log.warning("time budget: %s %s", name, entry.why)
        self.write()

    def write(self) -> None:
        if self.plan is not None:
            self.plan.write(self.plan_path)

    def summary(self) -> str:
        return self.plan.table() if self.plan else ""
