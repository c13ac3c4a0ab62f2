"""Open-vocabulary labels (paper c, MKT's light analogue): image features in the caption space.

No CLIP weights can be installed here, so the vision-language teacher is the competition's own
captions: a small projector maps a frozen backbone's cached image features into the MiniLM
sentence-embedding space (mean-pooled, L2-normalised) and is trained with a symmetric InfoNCE
loss (CLIP's) against each image's own caption embedding, with a learned temperature. Captions
name objects, so afterwards any label name can be scored by the cosine between the image's
embedding and the embedding of a prompt built from the name ("a photo of a {name}."), including
names that were never training targets.

Optional parts, each a config switch (``zeroshot.projector`` and ``zeroshot.loss``):

* ``projector.kind``: ``linear`` or ``mlp`` (one hidden layer);
* ``projector.tokens``: MKT's local stream beside the global one: a learned query attends over
  the cached token grid and its output joins the pooled vector;
* ``loss.label_weight``: a multi-label term, MuMIC's (paper d) tempered, hardness-aware sigmoid
  BCE on ``scale * cos(image, prompt_c) + bias``, for the SEEN classes only: it pulls images
  towards the prompts of the labels they carry. The unseen classes' columns are never passed in.

Evaluation follows MKT: ZSL ranks only the unseen classes on the images that carry at least one
of them; GZSL ranks every class on every evaluation image; both with mAP, F1@3, F1@5 and GAP@10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from capfuse import metrics
from capfuse.nn.losses import LOSSES
from capfuse.utils.io import atomic_path, read_json, write_json

# CLIP's prompt plus a few paraphrases, averaged: one template's wording matters less. Chosen
# before any score was seen, not tuned on the evaluation images.
PROMPTS = ("a photo of a {name}.", "a picture of a {name}.", "there is a {name} in the scene.", "a {name}.")
PROJECTOR_KINDS = ("linear", "mlp")
SETTINGS = ("zsl", "gzsl")
F1_KS = (3, 5)
GAP_K = 10


@dataclass(frozen=True)
class ZeroShotSettings:
    """The ``zeroshot:`` block of a config; defaults documented in ``configs/zeroshot.yaml``."""

    image_encoder: dict = field(default_factory=lambda: {"name": "tf_efficientnet_lite0"})
    caption_encoder: dict = field(default_factory=lambda: {"name": "minilm", "max_len": 24})
    unseen: int | list = 6
    min_positives: int = 20
    prompts: tuple[str, ...] = PROMPTS
    kind: str = "linear"
    hidden: int = 512
    dropout: float = 0.1
    tokens: bool = False
    temperature: float = 0.07
    learn_temperature: bool = True
    label_weight: float = 0.5
    label_loss: dict = field(default_factory=lambda: {"name": "tempered_bce", "temperature": 1.0, "gamma": 1.0})
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    flip: bool = True
    tta: bool = True
    eval_folds: str | list = "all"
    random_seeds: int = 10

    @classmethod
    def from_config(cls, cfg: dict) -> ZeroShotSettings:
        """Flatten ``zeroshot: {projector: {...}, loss: {...}, train: {...}, eval: {...}}``."""
        block = dict(cfg.get("zeroshot") or {})
        flat: dict = {}
        for group in ("projector", "loss", "train", "eval"):
            sub = block.pop(group, None) or {}
            if not isinstance(sub, dict):
                raise ValueError(f"zeroshot.{group} must be a mapping, got {sub!r}")
            flat.update(sub)
        flat.update(block)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ValueError(f"unknown zeroshot keys {unknown}; known: {sorted(known)}")
        if "prompts" in flat:
            flat["prompts"] = tuple(flat["prompts"])
        settings = cls(**flat)
        settings.check()
        return settings

    def check(self) -> None:
        if self.kind not in PROJECTOR_KINDS:
            raise ValueError(f"zeroshot.projector.kind must be one of {PROJECTOR_KINDS}, got {self.kind!r}")
        if not self.prompts or any("{name}" not in p for p in self.prompts):
            raise ValueError(f"zeroshot.prompts must be templates holding {{name}}, got {list(self.prompts)}")
        if self.temperature <= 0 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError("zeroshot: temperature > 0, epochs >= 1 and batch_size >= 2 are required")
        if self.label_weight < 0:
            raise ValueError(f"zeroshot.loss.label_weight must be >= 0, got {self.label_weight}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["prompts"] = list(self.prompts)
        return out


class AttnPool(nn.Module):
    """A learned query attends over the image tokens: MKT's local stream, on the cached grid.

    Dot-product attention of one query against the (normalised) tokens, without key/value
    projections: at 1280 channels those would cost ~30x the rest of the projector on a CPU,
    and the MLP after the pool already mixes channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))  # zeros: starts as the mean over tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(tokens @ self.query * tokens.shape[-1] ** -0.5, dim=1)  # [B, T]
        return (weights.unsqueeze(-1) * tokens).sum(1)


class ImageProjector(nn.Module):
    """Cached image features ``pooled [B, D]`` (and ``tokens [B, T, D]``) to unit vectors ``[B, E]``."""

    def __init__(self, img_dim: int, text_dim: int, *, kind: str = "mlp", hidden: int = 512, dropout: float = 0.1,
                 tokens: bool = False) -> None:
        super().__init__()
        if kind not in PROJECTOR_KINDS:
            raise ValueError(f"projector kind must be one of {PROJECTOR_KINDS}, got {kind!r}")
        self.uses_tokens = bool(tokens)
        # The backbone's features are post-activation and unnormalised; LayerNorm puts pooled
        # and attended vectors on one scale before they are joined.
        self.norm = nn.LayerNorm(img_dim)
        self.local = AttnPool(img_dim) if tokens else None
        in_dim = img_dim * (2 if tokens else 1)
        if kind == "linear":
            self.body: nn.Module = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, text_dim))
        else:
            self.body = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                                      nn.Dropout(dropout), nn.Linear(hidden, text_dim))

    def forward(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(pooled.float())
        if self.local is not None:
            if tokens is None:
                raise ValueError("this projector has a local stream: pass the image tokens too")
            x = torch.cat([x, self.local(self.norm(tokens.float()))], dim=-1)
        return F.normalize(self.body(x), dim=-1)


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between unit vectors ``image [B, E]`` and ``text [B, E]``: row i's pair is i.

    Identical captions in a batch ("A stop sign.") need no special case: their logit columns are
    equal, so the loss and its gradients are the same however the target is split among them.
    """
    logits = scale * image @ text.T
    target = torch.arange(len(image), device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ZeroShotNet(nn.Module):
    """Projector, learned contrastive temperature and the optional seen-label term.

    ``forward(batch)`` returns ``embedding`` and, when the batch holds ``caption`` vectors,
    ``loss`` (and its parts). ``label_text [S, E]`` are the SEEN classes' prompt embeddings;
    ``batch["labels"] [B, S]`` their targets and ``batch["labelled"] [B]`` which rows have labels.
    """

    def __init__(self, img_dim: int, text_dim: int, settings: ZeroShotSettings,
                 label_text: torch.Tensor | None = None) -> None:
        super().__init__()
        s = settings
        self.projector = ImageProjector(img_dim, text_dim, kind=s.kind, hidden=s.hidden, dropout=s.dropout,
                                        tokens=s.tokens)
        log_scale = torch.tensor(math.log(1.0 / s.temperature))
        self.log_scale = nn.Parameter(log_scale) if s.learn_temperature else None
        self.register_buffer("fixed_log_scale", log_scale.clone())  # its own storage: safetensors refuses shared ones
        self.label_weight = float(s.label_weight)
        if self.label_weight > 0 and label_text is not None and len(label_text):
            self.register_buffer("label_text", F.normalize(label_text.float(), dim=-1))
            # A cosine lies in [-1, 1]: an affine map (shared by every class, so that it carries
            # over to classes it never saw) turns it into a usable logit.
            self.label_scale = nn.Parameter(torch.tensor(10.0))
            self.label_bias = nn.Parameter(torch.tensor(-5.0))
            self.label_loss = LOSSES.create(**s.label_loss)
        else:
            self.label_text = None

    @property
    def scale(self) -> torch.Tensor:
        # CLIP clamps the learned scale at 100 so the softmax cannot collapse onto one pair.
        log_scale = self.log_scale if self.log_scale is not None else self.fixed_log_scale
        return log_scale.exp().clamp(max=100.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.projector(batch["img_pooled"], batch.get("img_tokens"))
        out = {"embedding": z}
        if "caption" not in batch:
            return out
        text = F.normalize(batch["caption"].float(), dim=-1)
        loss = clip_loss(z, text, self.scale)
        out["contrastive"] = loss.detach()
        if self.label_text is not None and "labels" in batch:
            logits = self.label_scale * z @ self.label_text.T + self.label_bias
            mask = batch["labelled"].float().unsqueeze(1).expand_as(logits)
            label_loss = self.label_loss(logits, batch["labels"].float(), mask=mask)
            out["label"] = label_loss.detach()
            loss = loss + self.label_weight * label_loss
        out["loss"] = loss
        return out


@dataclass
class ImageFeatures:
    """Cached image features per view (float16, possibly memory-mapped) and caption vectors.

    ``pooled[view] [N, D]``, ``tokens[view] [N, T, D]`` (or None), ``caption [N, E]`` (or None
    where only images are embedded). Rows are whatever the caller indexes by.
    """

    pooled: dict[str, np.ndarray]
    tokens: dict[str, np.ndarray] | None = None
    caption: np.ndarray | None = None

    def batch(self, rows: np.ndarray, views: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Rows' features; ``views[i]`` names the view row i is read from (default: orig)."""
        rows = np.asarray(rows)
        if views is None:
            views = np.full(len(rows), "orig")
        pooled = np.empty((len(rows), next(iter(self.pooled.values())).shape[1]), np.float32)
        tokens = None
        if self.tokens is not None:
            t = next(iter(self.tokens.values()))
            tokens = np.empty((len(rows), *t.shape[1:]), np.float32)
        for view in np.unique(views):
            sel = np.flatnonzero(views == view)
            pooled[sel] = self.pooled[view][rows[sel]]
            if tokens is not None:
                tokens[sel] = self.tokens[view][rows[sel]]
        out = {"img_pooled": torch.from_numpy(pooled)}
        if tokens is not None:
            out["img_tokens"] = torch.from_numpy(tokens)
        return out


def train_projection(feats: ImageFeatures, rows: np.ndarray, settings: ZeroShotSettings, *, seed: int,
                     labels: np.ndarray | None = None, labelled: np.ndarray | None = None,
                     label_text: np.ndarray | None = None) -> tuple[ZeroShotNet, list[dict]]:
    """Train a ``ZeroShotNet`` on ``rows`` of ``feats``; returns it (eval mode) and per-epoch logs.

    ``labels [len(rows), S]`` and ``labelled [len(rows)]`` feed the label term with the columns
    the caller passes, i.e. the seen classes only; ``label_text [S, E]`` are their prompts.
    """
    if feats.caption is None:
        raise ValueError("training needs caption vectors")
    rows = np.asarray(rows)
    if len(rows) < 2:
        raise ValueError(f"need at least 2 training rows, got {len(rows)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lt = torch.from_numpy(np.asarray(label_text, np.float32)) if label_text is not None else None
    img_dim = next(iter(feats.pooled.values())).shape[1]
    net = ZeroShotNet(img_dim, feats.caption.shape[1], settings, lt)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    caption = np.asarray(feats.caption, np.float32)
    views = tuple(v for v in ("orig", "hflip") if v in feats.pooled) if settings.flip else ("orig",)
    use_labels = labels is not None and net.label_text is not None
    history = []
    for epoch in range(settings.epochs):
        net.train()
        order = torch.randperm(len(rows), generator=gen).numpy()
        sums: dict[str, float] = {}
        for start in range(0, len(order), settings.batch_size):
            pos = order[start : start + settings.batch_size]
            if len(pos) < 2:  # one row has no negatives to contrast with
                continue
            r = rows[pos]
            batch = feats.batch(r, rng.choice(views, size=len(r)))
            batch["caption"] = torch.from_numpy(caption[r])
            if use_labels:
                batch["labels"] = torch.from_numpy(np.asarray(labels[pos], np.float32))
                batch["labelled"] = torch.from_numpy(np.asarray(labelled[pos], bool))
            out = net(batch)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            sched.step()
            for key in ("loss", "contrastive", "label"):
                if key in out:
                    sums[key] = sums.get(key, 0.0) + float(out[key].detach()) * len(r)
        history.append({"epoch": epoch + 1, **{k: v / len(rows) for k, v in sums.items()},
                        "temperature": float(1.0 / net.scale.detach())})
    return net.eval(), history


@torch.inference_mode()
def embed_rows(net: ZeroShotNet, feats: ImageFeatures, rows: np.ndarray, *, tta: bool = True,
               batch_size: int = 512) -> np.ndarray:
    """Unit image embeddings ``[len(rows), E]``; with ``tta``, the mean over the cached views."""
    net.eval()
    views = [v for v in ("orig", "hflip") if v in feats.pooled] if tta else ["orig"]
    rows = np.asarray(rows)
    out = np.zeros((len(rows), net.projector.body[-1].out_features), np.float32)
    for start in range(0, len(rows), batch_size):
        r = rows[start : start + batch_size]
        z = sum(net(feats.batch(r, np.full(len(r), v)))["embedding"] for v in views)
        out[start : start + len(r)] = F.normalize(z, dim=-1).numpy()
    return out


def prompt_embeddings(names: Sequence[str], prompts: Sequence[str], encode_texts) -> np.ndarray:
    """Unit vectors ``[C, E]``: each name's prompts embedded by ``encode_texts`` and averaged."""
    names = [str(n).replace("_", " ").strip() for n in names]
    if any(not n for n in names):
        raise ValueError(f"label names must be non-empty, got {list(names)}")
    texts = [p.format(name=n) for n in names for p in prompts]
    vecs = np.asarray(encode_texts(texts), np.float32).reshape(len(names), len(prompts), -1)
    vecs = vecs / np.linalg.norm(vecs, axis=-1, keepdims=True).clip(min=1e-12)
    mean = vecs.mean(1)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True).clip(min=1e-12)


def text_encoder(spec_cfg: dict):
    """``encode_texts(list[str]) -> [N, E]`` pooled vectors with the caption cache's encoder."""
    from capfuse.encoders.text import TextEncoderSpec, create_text_encoder, encode

    spec = TextEncoderSpec(**spec_cfg)
    model, tokenizer, _ = create_text_encoder(spec.name, weights=spec.weights)

    def encode_texts(texts: list[str]) -> np.ndarray:
        return np.concatenate([encode(model, tokenizer, texts[i : i + spec.batch_size], spec.max_len)[2]
                               for i in range(0, len(texts), spec.batch_size)]) if texts else np.zeros((0, 0))

    return encode_texts


def pick_unseen(Y: np.ndarray, names: Sequence[str], unseen: int | Sequence, *, min_positives: int, seed: int
                ) -> list[int]:
    """Column indices of the unseen classes: ``unseen`` names (or ids), or N drawn by ``seed``.

    Drawn classes need ``min_positives`` training positives so that their evaluation has
    something to rank; they are never all the classes, so something stays seen.
    """
    names = list(names)
    if isinstance(unseen, (list, tuple)):
        cols = []
        for item in unseen:
            matches = [i for i, n in enumerate(names) if n == str(item)]
            if not matches:
                raise ValueError(f"zeroshot.unseen: {item!r} is not a class name; names: {names}")
            cols.append(matches[0])
        cols = sorted(set(cols))
    else:
        n = int(unseen)
        eligible = np.flatnonzero(np.asarray(Y).sum(0) >= min_positives)
        if not 1 <= n < len(names) or n > len(eligible):
            raise ValueError(f"zeroshot.unseen={n}: need 1 <= N < {len(names)} classes and N <= "
                             f"{len(eligible)} classes with >= {min_positives} positives")
        cols = sorted(np.random.default_rng(seed).choice(eligible, size=n, replace=False).tolist())
    if len(cols) >= len(names):
        raise ValueError("zeroshot.unseen holds every class: nothing would be left to train on")
    return [int(c) for c in cols]


def zeroshot_metrics(Y: np.ndarray, scores: np.ndarray, unseen: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{"zsl": {...}, "gzsl": {...}}`` with map, f1@3, f1@5, gap@10, n_images, n_classes.

    ZSL: only the unseen columns, on images holding at least one unseen label. GZSL: every
    column on every image. F1@k is NaN where k exceeds the classes ranked.
    """
    Y, scores = np.asarray(Y), np.asarray(scores, np.float64)
    unseen = list(unseen)
    zsl_rows = np.flatnonzero(Y[:, unseen].any(1))
    parts = {"zsl": (Y[np.ix_(zsl_rows, unseen)], scores[np.ix_(zsl_rows, unseen)]), "gzsl": (Y, scores)}
    out = {}
    for setting, (y, s) in parts.items():
        row = {"map": metrics.mean_average_precision(y, s) if len(y) else float("nan")}
        for k in F1_KS:
            row[f"f1@{k}"] = metrics.f1_at_k(y, s, k) if len(y) and k <= y.shape[1] else float("nan")
        row[f"gap@{GAP_K}"] = metrics.gap_at_k(y, s, GAP_K) if len(y) else float("nan")
        row.update(n_images=int(len(y)), n_classes=int(y.shape[1]))
        out[setting] = row
    return out


def random_metrics(Y: np.ndarray, unseen: Sequence[int], seeds: int, seed: int) -> dict[str, dict[str, float]]:
    """The random scorer's metrics, averaged over ``seeds`` draws of uniform scores."""
    rng = np.random.default_rng(seed)
    runs = [zeroshot_metrics(Y, rng.random(Y.shape), unseen) for _ in range(max(1, seeds))]
    return {s: {k: float(np.mean([r[s][k] for r in runs])) if k not in ("n_images", "n_classes") else runs[0][s][k]
                for k in runs[0][s]} for s in SETTINGS}


def results_table(results: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """One row per scorer x setting: the columns of ``runs/<dataset>/zeroshot.csv``."""
    rows = [{"scorer": scorer, "setting": setting, **vals}
            for scorer, by_setting in results.items() for setting, vals in by_setting.items()]
    cols = ["scorer", "setting", "map", *(f"f1@{k}" for k in F1_KS), f"gap@{GAP_K}", "n_images", "n_classes"]
    return pd.DataFrame(rows, columns=cols)


# -- the deployed model: weights + a JSON sidecar that says how to feed it --------------------

MODEL_FILE, META_FILE = "model.safetensors", "meta.json"


def save_model(folder: Path, net: ZeroShotNet, meta: dict) -> None:
    """``model.safetensors`` then ``meta.json`` (written last: it vouches for the weights)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / META_FILE).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(folder / MODEL_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(folder / META_FILE, meta)


def load_model(folder: Path) -> tuple[ZeroShotNet, dict]:
    """The projector saved by ``save_model`` (eval mode) and its sidecar."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_file = folder / META_FILE
    if not meta_file.exists() or not (folder / MODEL_FILE).exists():
        raise FileNotFoundError(f"no zero-shot model in {folder} (need {MODEL_FILE} and {META_FILE}): "
                                "run `make zeroshot` (capfuse zeroshot) first")
    meta = read_json(meta_file)
    settings = ZeroShotSettings.from_config({"zeroshot": meta["settings"]})
    state = load_file(str(folder / MODEL_FILE))
    label_text = state.get("label_text")
    net = ZeroShotNet(meta["img_dim"], meta["text_dim"], settings, label_text)
    net.load_state_dict(state)
    return net.eval(), meta


# -- images outside the feature cache ---------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@torch.inference_mode()
def embed_image_files(files: Sequence[Path], spec_cfg: dict, *, views: Sequence[str] = ("orig",),
                      batch_size: int = 16) -> tuple[ImageFeatures, list[int], list[str]]:
    """Pooled vectors and token grids of image files, as the feature cache computes them.

    Same backbone, weights, input size, normalisation and pooling as ``capfuse.features.image`` (eager
    torch instead of ONNX Runtime: the same numbers to float16 precision). Returns the features
    of the files that decode, their positions in ``files`` and a list of problems
    (``file: reason``) for those that do not.
    """
    from capfuse.data.images import DEFAULT_MAX_PIXELS, load_array
    from capfuse.encoders.image import create_backbone, preprocess_for
    from capfuse.features.image import FeatureMap, ImageEncoderSpec, pool_outputs

    spec = ImageEncoderSpec.from_config(spec_cfg)
    model, _ = create_backbone(spec.name, weights=spec.weights, num_classes=0)
    pre = preprocess_for(model.eval(), spec.size)
    fmap = FeatureMap(model, pre).eval()
    dim, n_tokens = model.num_features, spec.grid * spec.grid
    pooled_parts: dict[str, list] = {v: [] for v in views}
    tokens_parts: dict[str, list] = {v: [] for v in views}
    ok, problems = [], []
    for start in range(0, len(files), batch_size):  # decoded batch by batch: a big folder never sits in RAM
        arrays = []
        for i in range(start, min(start + batch_size, len(files))):
            try:
                # Files of any folder, never validated: a bomb is refused from its header here.
                arrays.append(load_array(files[i], pre.size, max_pixels=DEFAULT_MAX_PIXELS))
                ok.append(i)
            except Exception as exc:  # undecodable, truncated, not an image: reported, not fatal
                problems.append(f"{files[i]}: {type(exc).__name__}: {exc}")
        if not arrays:
            continue
        x = np.stack(arrays)
        for view in views:
            xv = np.ascontiguousarray(x[:, :, ::-1]) if view == "hflip" else x
            out = pool_outputs(fmap(torch.from_numpy(xv)).float().numpy(), ("pooled", "tokens"), spec.grid)
            # Rounded as the cache stores them, so that both paths feed the projector identical inputs.
            pooled_parts[view].append(out["pooled"].astype(np.float16))
            tokens_parts[view].append(out["tokens"].astype(np.float16))

    def join(parts: list, shape: tuple) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, *shape), np.float16)

    return ImageFeatures(pooled={v: join(pooled_parts[v], (dim,)) for v in views},
                         tokens={v: join(tokens_parts[v], (n_tokens, dim)) for v in views}), ok, problems
