"""A run's fingerprint: what a model's run folder was trained from, so that a change retrains it.

A run folder (``runs/<dataset>/<model>/``) records the fingerprint of its config, data and folds
in ``fingerprint.json`` and in every finished fold's ``done.json``; the trainer
(``capfuse.training.cv``) skips a fold only under the same fingerprint, and starts a folder of
another one over. What the config part hashes is the resolved, typed settings, so stating a
default in a YAML file or leaving it to the schema is the same run.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from capfuse import config as cfglib
from capfuse.config.show import settings_dict


def _plain(value):
    """Settings as JSON-ready data (``capfuse.config.show.settings_dict``) with every number as a
    float, so ``5`` and ``5.0`` in a YAML file hash alike."""
    return _floats(settings_dict(value))


def _floats(value):
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def fingerprint_config(model_cfg: dict) -> dict:
    """What a run's fingerprint hashes of its config: the model's resolved, typed settings (every
    default written out; a component's option mapping, such as ``train.loss``, as given) and the
    ``data`` and ``folds`` blocks it trains under.

    Resolved, so that stating a default in a YAML file or leaving it to the schema trains the
    same run. Left out: the unlabelled folder's path, whose rows are in the data fingerprint for
    the models that read them (a model without pseudo-label rounds must not retrain because a
    folder was named), and the class names' source, whose names reach the models that read them
    the same way. Settings of the stages after training never reach a model's config
    (``capfuse.training.selection.SECOND_LEVEL_KEYS``).
    """
    top = cfglib.resolve({key: model_cfg[key] for key in ("data", "folds") if key in model_cfg})
    data = {k: v for k, v in _plain(top.data).items() if k not in ("unlabelled", "class_names")}
    return {"model": _plain(cfglib.resolve_model(model_cfg)), "data": data, "folds": _plain(top.folds)}


def run_fingerprint(model_cfg: dict, data_fp: str, folds: np.ndarray) -> str:
    """A run's fingerprint: its config (``fingerprint_config``), its data and its folds."""
    h = hashlib.sha256(json.dumps(fingerprint_config(model_cfg), sort_keys=True, default=str).encode())
    h.update(data_fp.encode())
    h.update(np.asarray(folds, dtype=np.int64).tobytes())
    return h.hexdigest()
