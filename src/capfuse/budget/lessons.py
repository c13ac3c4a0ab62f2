"""What a budgeted run learns from its own finished models, for the predictions of the later ones.

The probe cannot know where early stopping will end a model, and its rates come from a short
rehearsal on a few hundred rows, on a machine that may have been busy for that minute. Each
model that finishes says both:

- **where early stopping ended it**: the share of its epochs its folds ran. The later net models
  of its family are predicted with the largest such share (or with their own folds of earlier
  runs on the dataset, which the probe records as ``epochs_seen``): heads on cached vectors may
  stop at half their epochs where a trained top stage at 30,000 rows runs every epoch it is
  given, so a heads model's share would plan a top stage at half the epochs it runs;
- **how far the probe's rates were off**: its measured seconds over its prediction from the probe
  alone at the epochs its folds ran. The later models of its family (``family``: a rehearsal
  errs alike for models trained alike) are predicted with the median ratio, held within
  ``RATE_BOUNDS``. Only a model that trained every fold in this run teaches a ratio: one resumed
  from earlier folds measured nothing, and one stopped by its time share ran what the clock
  allowed, not what it costs.

Both only move predictions; what keeps the budget is the clock (``capfuse.utils.deadline``).
What ran is read from the models' folders (``fold_records``, ``trained_here``, ``rounds_trained``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from capfuse.config.schema import resolve_model

RATE_BOUNDS = (0.25, 4.0)  # the learned measured/predicted ratio is held within these
MIN_LEARN_S = 5.0  # a model predicted under this teaches no ratio: its fixed costs would dominate


class Lessons:
    def __init__(self) -> None:
        self.shares: dict[str, list[float]] = {}  # share of its epochs each finished net model ran, by family
        self.ratios: dict[str, list[float]] = {}  # measured / predicted seconds of finished models, by kind

    def expected_epochs(self, rate: dict, max_epochs: int | None, kind: str) -> float | None:
        """Where early stopping is expected to end a net model's folds: its folds of earlier runs
        on this dataset, else the largest share its family (``kind``) ran times its own span;
        None (every epoch) before either is known."""
        if "epochs_seen" in rate:
            return rate["epochs_seen"]
        seen = self.shares.get(kind)
        if max_epochs and seen:
            return min(1.0, max(seen)) * max_epochs
        return None

    def ratio(self, kind: str) -> float:
        """The median measured/predicted ratio of the finished models of ``kind``, within
        ``RATE_BOUNDS``; 1 before any."""
        seen = sorted(self.ratios.get(kind, []))
        if not seen:
            return 1.0
        mid = len(seen) // 2
        median = seen[mid] if len(seen) % 2 else 0.5 * (seen[mid - 1] + seen[mid])
        return min(RATE_BOUNDS[1], max(RATE_BOUNDS[0], median))

    def learn_ratio(self, kind: str, measured_s: float, predicted_s: float) -> float | None:
        """Record a finished model's ratio; None (nothing learned) when its prediction is too
        small to say anything."""
        if predicted_s < MIN_LEARN_S or measured_s <= 0:
            return None
        ratio = measured_s / predicted_s
        self.ratios.setdefault(kind, []).append(ratio)
        return ratio


def trained_here(records: list[dict], folder: Path, k: int, since: float) -> bool:
    """True when all ``k`` folds in ``folder`` were written after ``since`` (a ``time.time()``):
    the model trained every fold in this run, none resumed from an earlier one."""
    done = [folder / f"fold{r['fold']}" / "done.json" for r in records]
    return len(done) == k and all(d.exists() and d.stat().st_mtime >= since for d in done)


def mean_epochs_run(records: list[dict]) -> float | None:
    """The mean epochs a net model's folds ran; None when a fold's record does not say."""
    runs = [r["epochs_run"] for r in records if isinstance(r.get("epochs_run"), int)]
    return sum(runs) / len(runs) if runs and len(runs) == len(records) else None


def family(model_cfg: dict) -> str:
    """The models whose rehearsals err alike, whose ratios teach each other: linear fits (by solver); net
    heads on cached vectors; net models that train a top stage of the backbone on its cached maps
    (convolutions over maps, whose cost the small sample understates where the heads' is
    overstated: a heads' ratio would shrink a top stage's prediction the wrong way); and
    end-to-end fine-tuning."""
    m = resolve_model(model_cfg)
    if m.kind == "linear":
        # The joint L-BFGS fit over dense vectors and the per-class fits over sparse TF-IDF err
        # apart: at 30k on the capped CPU the caption model took half its prediction and the
        # fusion nearly three times its own, which the caption model's ratio then shrank.
        return f"linear/{m.solver}"
    if m.kind != "net":
        return m.kind
    if m.finetune:
        return "net/finetune"
    return "net/top-stage" if m.image_encoder.train_blocks > 0 else "net/heads"


def fold_records(model_dir: Path) -> list[dict]:
    """The ``done.json`` of each finished fold in ``model_dir`` (unreadable ones left out)."""
    out = []
    for done in sorted(Path(model_dir).glob("fold*/done.json")):
        try:
            record = json.loads(done.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "fold" in record:
            out.append(record)
    return out


def epochs_seen(model_dir: Path) -> float | None:
    """The mean epochs a model's folds ran in earlier runs on this dataset, where early stopping
    (not a time budget) ended them; None when none did: the best guess of where it ends here."""
    runs = [
        int(r["epochs_run"])
        for r in fold_records(model_dir)
        if isinstance(r.get("epochs_run"), int) and r.get("stopped_by") != "time"
    ]
    return sum(runs) / len(runs) if runs else None


def rounds_trained(model_dir: Callable[[str], Path], name: str, rounds: int, since: float) -> int:
    """How many of ``name``'s rounds finished in this run (metrics written after ``since``); -1: not round 0 either."""
    done = -1
    for r, folder in enumerate([name, *(f"{name}@r{k}" for k in range(1, rounds + 1))]):
        metrics = model_dir(folder) / "metrics.json"
        if not (metrics.exists() and metrics.stat().st_mtime >= since):
            break
        done = r
    return done
