"""Whether ``runs/<dataset>/ensemble/`` still describes the run's base models.

The second level is fitted on its base models' OOF logits and the thresholds on its OOF
probabilities; a base model retrained since (an edited config, another seed) leaves both fitted
on logits that no longer exist while every file still names the same candidate. ``stack.json``
hashes the logits the stack read (``inputs_sha256``, and per model) and ``thresholds.json`` the
probabilities the thresholds read, so that anything that reuses them (``make export``) can ask.
"""

from __future__ import annotations

from capfuse.data.dataset import Dataset
from capfuse.ensemble.second_level import ensemble_dir, inputs_hash, load_base_logits
from capfuse.utils.io import read_json, sha256_file


def stale_second_level(paths, ds: Dataset) -> str | None:
    """Why ``ensemble/`` no longer describes the run's models, or None when it does.

    The second level is fitted on its base models' OOF logits and the thresholds on its OOF
    probabilities; a base model retrained since (an edited config, another seed) leaves both
    fitted on logits that no longer exist, while every file still names the same candidate. So
    the logits the stack read are hashed into ``stack.json`` and the probabilities the thresholds
    read into ``thresholds.json``, and both are compared with what the run folder holds now."""
    ens = ensemble_dir(paths)
    stacked, cut = read_json(ens / "stack.json"), read_json(ens / "thresholds.json")
    names = list(stacked["base_models"])
    folds = ds.folds()
    try:
        oof, test = load_base_logits(paths, ds, names, folds)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        return f"a base model of the second level cannot be read as it was stacked ({exc})"
    if inputs_hash(oof, test, folds, names) != stacked.get("inputs_sha256"):
        by_model = stacked.get("inputs_sha256_by_model") or {}
        changed = [n for n, o, t in zip(names, oof, test) if by_model.get(n) != inputs_hash([o], [t], folds, [n])]
        return (
            f"{', '.join(changed) or 'a base model'} changed since the second level was fitted on "
            f"its logits ({ens / 'stack.json'})"
        )
    if cut.get("oof_probs_sha256") != sha256_file(ens / "oof_probs.csv"):
        return f"{ens / 'thresholds.json'} was tuned on other probabilities than {ens / 'oof_probs.csv'}"
    return None
