"""The plan of a budgeted run: which models, how many epochs, what each is predicted to cost,
and, as the run goes, what each cost and what was dropped and why.

Written to ``runs/<dataset>/plan.json`` before training starts and after every model; the
submission manifest carries it. ``--plan FILE`` replays a finished plan without the clock: the
same models with the same epochs and rounds, the dropped ones left out, so the submission is
the same bytes on the same machine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from capfuse.budget.duration import format_duration
from capfuse.utils.io import write_json

STUDY_TRIALS = 10  # the threshold study's trials timed whole by the probe: its fixed part

PLAN_FILE = "plan.json"
FORMAT = 1


@dataclass
class ModelPlan:
    name: str
    kind: str
    epochs: int | None = None  # the epoch cap the plan sets; None: the config's own
    max_epochs: int | None = None  # the schedule's span at this size: train.epochs, or fewer under train.max_steps
    rounds: int = 0  # pseudo-label rounds the plan allows (at most the config's)
    embed_s: float = 0.0  # predicted: caching the features no earlier model caches (0: dropped for them)
    train_s: float = 0.0  # predicted: every fold, and the rounds
    status: str = "planned"  # planned | dropped | cut | done
    why: str = ""
    rounds_done: int = 0  # rounds the run trained (a round stops early when CV stops rising)
    measured_s: float | None = None
    # Folds the model's allowance stopped cleanly, and after how many epochs:
    # {"<model folder>/fold<k>": epochs}; a replay stops them there.
    stops: dict[str, int] = field(default_factory=dict)

    @property
    def predicted_s(self) -> float:
        """Its features and its training together: what the plan sets aside for it."""
        return self.embed_s + self.train_s

    def overrides(self) -> dict:
        """What the plan changes in the model's config."""
        out: dict = {}
        if self.epochs is not None:
            out["train"] = {"epochs": self.epochs}
        return out


@dataclass
class Plan:
    time_limit_s: float
    reserve_s: float  # predicted: the shift report, the second level, thresholds and the submission
    folds_s: float  # measured: the folds step before the plan
    probe_s: float  # measured: the probe itself
    models: list[ModelPlan]
    probe: dict = field(default_factory=dict)  # the measured rates the predictions come from
    threshold_trials: int | None = None  # fewer threshold-study trials than the config's, to fit
    candidates: list[str] | None = None  # the second level's candidates, when the plan leaves the stacker out
    # Why the second level did not nest its choice on the test-like rows under a shift (None: it
    # did, or no shift asked it to); infer writes it, and a replay makes the same choice.
    shift_choice: str | None = None
    embed_measured_s: float | None = None  # measured: caching the kept models' features, all at once
    machine: dict = field(default_factory=dict)
    format: int = FORMAT

    def embed_s(self) -> float:
        """Predicted: caching the features of the models not dropped for them (a model dropped
        later, for its training time, had its features cached all the same)."""
        return sum(m.embed_s for m in self.models)

    def kept(self) -> list[ModelPlan]:
        return [m for m in self.models if m.status in ("planned", "done")]

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)

    def ensemble_names(self, rounds_rule: str) -> list[str]:
        """The second level's base models: each kept model, or its last round (``rounds: last``),
        or it and every round it trained (``rounds: all``)."""
        names: list[str] = []
        for m in self.kept():
            chain = [m.name, *(f"{m.name}@r{r}" for r in range(1, m.rounds_done + 1))]
            names += chain[-1:] if rounds_rule == "last" else chain
        return sorted(names)

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> Plan:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, this capfuse reads {FORMAT}")
            known = {f.name for f in fields(ModelPlan)}
            models = [ModelPlan(**{k: v for k, v in m.items() if k in known}) for m in raw["models"]]
            top = {f.name for f in fields(cls)} - {"models"}
            return cls(models=models, **{k: v for k, v in raw.items() if k in top})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a capfuse plan ({exc})") from exc

    def table(self) -> str:
        """Predicted (and, once run, measured) seconds per stage and model."""
        lines = [f"{'step':<44} {'plan':>8} {'epochs':>7} {'predicted':>10} {'measured':>9}  note"]

        def line(step, status, epochs, pred, meas, note=""):
            p = f"{pred:10.0f}" if pred is not None else f"{'':>10}"
            m = f"{meas:9.0f}" if meas is not None else f"{'':>9}"
            lines.append(f"{step[:44]:<44} {status:>8} {epochs:>7} {p} {m}  {note}".rstrip())

        line("folds", "done", "", None, self.folds_s)
        line("probe", "done", "", None, self.probe_s)
        # The encoders run once for every kept model, before any trains: one line for them, and
        # each model's line its training alone, so that each prediction meets its own measurement.
        line("embed (the kept models' features)", "", "", self.embed_s(), self.embed_measured_s)
        for m in self.models:
            epochs = "" if m.kind != "net" else f"{m.epochs or m.max_epochs}" + ("*" if m.epochs else "")
            rounds = f" +{m.rounds} round" + ("s" if m.rounds > 1 else "") if m.rounds else ""
            note = m.why
            if m.stops:
                n = len(m.stops)
                note = "; ".join(filter(None, [note, f"{n} fold{'s' if n > 1 else ''} stopped by its time share"]))
            line(f"train {m.name}{rounds}", m.status, epochs, m.train_s, m.measured_s, note)
        notes = [f"{self.threshold_trials} threshold trials" if self.threshold_trials else ""]
        notes.append(f"candidates {', '.join(self.candidates)} (no stacker)" if self.candidates else "")
        line("second level and submission", "", "", self.reserve_s, None, "; ".join(filter(None, notes)))
        planned = self.folds_s + self.probe_s + self.embed_s() + sum(m.train_s for m in self.kept()) + self.reserve_s
        lines.append(
            f"{'total planned':<44} {'':>8} {'':>7} {planned:10.0f} {'':>9}  "
            f"budget {format_duration(self.time_limit_s)} ({self.time_limit_s:.0f} s); * epochs capped by the plan"
        )
        return "\n".join(lines)


def study_seconds(cost: dict, trials: int) -> float:
    """Seconds of the threshold study (on every row and nested) with ``trials`` trials, from the
    probe's ``cost``: its fixed part, a cost per trial and the growth of that cost per trial."""
    extra = max(0, trials - STUDY_TRIALS)
    grown = (trials**2 - STUDY_TRIALS**2) / 2 if extra else 0.0
    return cost["fixed_s"] + cost["trial_s"] * extra + cost["growth_s"] * grown


def trials_within(cost: dict, room_s: float, trials: int) -> int:
    """The most trials, up to ``trials``, whose study fits in ``room_s`` seconds (0: none does)."""
    lo, hi = 0, trials
    while lo < hi:  # the study's seconds grow with its trials
        mid = (lo + hi + 1) // 2
        if study_seconds(cost, mid) <= room_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


def nested_choice_skipped(plan: Plan, *, folds: int, trials: int, left_s: float) -> str | None:
    """Why a choice on the test-like rows, nested, would not fit the ``left_s`` seconds the budget
    has left (None: it fits). Nesting builds the candidates once more per fold, on the other
    folds' rows: about ``folds`` times the stack stage the probe predicted, then the thresholds."""
    study = plan.probe.get("threshold_study")
    need = float(plan.probe.get("stack_s", 0.0)) * folds + (study_seconds(study, trials) if study else 0.0)
    if need <= left_s:
        return None
    return (
        f"the choice on the test-like rows, nested, was predicted at {need:.0f} s and the budget had "
        f"{max(0.0, left_s):.0f} s left: chosen on all rows (the caps stay)"
    )
