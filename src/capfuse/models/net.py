"""The ``net`` model kind: torch heads and fusion models, trained fold by fold by one loop.

Two modes share the loop (optimiser, schedule, early stopping, checkpoints, resume, flip TTA):

* **cached** (the CPU path, the default): the backbones are frozen and their outputs were
  computed once by the embed step (pooled vectors, token grids, caption tokens, for the
  original and the flipped image). Only the head or fusion module trains, in seconds per
  epoch on two cores. Flip augmentation comes free: each training sample draws one of the two
  cached views; crops of a trained top stage's cached map and mixing of samples are optional
  (``capfuse.models.augment``).
* **finetune** (``finetune: true``, meant for ``device: cuda``): the image backbone and the
  caption encoder are part of the model and train end to end on decoded images, with
  bf16/fp16 autocast, gradient accumulation, a cosine schedule with warm-up, layer-wise
  learning rates, and several GPUs through torchrun/DDP (see ``capfuse.models.finetune``).

Per fold, the stopping point is chosen without the held-out fold's labels (``train.early_stop``):

* ``inner`` (the default): a multilabel-stratified ``inner_frac`` of the fold's labelled
  TRAINING rows is set aside; the epoch with the best mean F1 on those rows is kept as
  ``best.safetensors`` and predicts the held-out fold and the test set.
* ``refit``: the same inner split finds the epoch count, then a fresh model trains on all of
  the fold's training rows for that many epochs (twice the cost).
* ``none``: every epoch of ``train.epochs`` runs and the last one is kept.

The held-out fold is predicted once, at the end, so its labels never steer its own logits (a
test shuffles them and checks the logits do not move). ``last.pt`` holds the state to resume an
interrupted fold; the OOF and test logits are the mean over the original and flipped views.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from capfuse.config.schema import NetModelSettings
from capfuse.data.names import fold_prompt_terms
from capfuse.encoders.cost import time_ms
from capfuse.encoders.image import BackboneTop
from capfuse.encoders.registry import build_caption, build_image, caption_entry
from capfuse.encoders.text import label_text_embeddings
from capfuse.models import MODELS
from capfuse.models.augment import MIX_KEY, Augment, check_augmentation, mix_targets
from capfuse.models.base import FoldOutput
from capfuse.models.cached import CachedViews
from capfuse.models.finetune import amp_dtype_for, fit_fold_finetune
from capfuse.models.loop import train_epochs
from capfuse.models.settings import (  # noqa: F401 (re-exported)
    TrainSettings,
    cosine_with_warmup,
    for_rows,
    inner_split,
    val_score,
)
from capfuse.nn.contexts import cluster_contexts
from capfuse.nn.fusion import TopBlocksNet, build_net, count_parameters, needs_class_text, net_settings, uses_contexts
from capfuse.nn.losses import LOSSES, class_frequencies
from capfuse.utils.io import read_json, write_json
from capfuse.utils.log import log

_WARNED_FP32: set[str] = set()


def _warn_fp32_top_stage(encoder: str) -> None:
    """Once per backbone and process: a top stage about to train in fp32 on the CPU."""
    if encoder in _WARNED_FP32:
        return
    _WARNED_FP32.add(encoder)
    log.warning(
        "%s's top stage trains in fp32 on this CPU (no native bf16, or finetune_options.amp off): "
        "two to three times the time per step of a CPU with AVX512-BF16 or AMX "
        "(`capfuse bench --only top-stage` prints both); at 30,000 rows the default preset does not "
        'hold its hour here (docs/performance.md, "Presets")',
        encoder,
    )


@MODELS.register("net")
class NetModel:
    """Built from ``NetModelSettings`` (capfuse.config.schema): ``inputs``, ``image_head``,
    ``caption_head``, ``fusion``, ``aux``, ``image_encoder``, ``caption_encoder``, ``train``
    (TrainSettings), ``finetune_options``, ``device``, ``finetune``. A config dict (built in
    code) is checked and resolved first."""

    def __init__(self, cfg: dict | NetModelSettings, seed: int) -> None:
        self.config = net_settings(cfg)
        check_augmentation(self.config)
        self.inputs = list(self.config.inputs)
        self.settings = self.config.train
        self.seed = seed
        self.device = torch.device(self.config.device)
        self.finetune = self.config.finetune
        # Cached mode only: the backbone's top stages train from the cached map entering them.
        self.train_blocks = 0 if self.finetune else self.config.image_encoder.train_blocks
        self.light: dict = {}
        # What the label-query parts need to build, set by ``prepare``: the class prompts' text
        # embeddings (once per model) and the fold's class -> context map (once per fold).
        self.build_extras: dict = {}
        self._class_text: np.ndarray | None = None
        self._term_text: dict[tuple, np.ndarray] = {}  # discovered names: per fold's prompt terms
        self._prompt_encoder: tuple | None = None

    @property
    def needs_image(self) -> bool:
        return "image" in self.inputs

    @property
    def supports_ddp(self) -> bool:
        """Only end-to-end fine-tuning shards over ranks; heads on cached features train on rank 0."""
        return self.finetune

    # -- building ---------------------------------------------------------------------------

    def class_text(self, feats: dict, num_classes: int, terms: list[list[str]] | None = None) -> np.ndarray:
        """Embeddings ``[C, D]`` of the prompt "a photo of a {name}." per class, by the caption encoder.

        ``terms``: several terms per class (discovered names, one list per fold), whose prompts
        are averaged, each class's mean scaled back to its prompts' mean length. Computed once
        per model (per fold for discovered names) and handed to the net at build time, never
        per batch. GloVe captions have no sentence encoder: MiniLM embeds the prompts.
        """
        if terms is not None:
            key = tuple(tuple(t) for t in terms)
            if key not in self._term_text:
                vecs = self._prompts([t for ts in terms for t in ts])
                out, i = [], 0
                for ts in terms:
                    part = vecs[i : i + len(ts)]
                    mean = part.mean(0)
                    out.append(mean * np.linalg.norm(part, axis=1).mean() / max(np.linalg.norm(mean), 1e-12))
                    i += len(ts)
                self._term_text[key] = np.stack(out).astype(np.float32)
            return self._term_text[key]
        if self._class_text is None:
            names = feats.get("class_names")
            if names is None or len(names) != num_classes:
                raise ValueError(
                    f"fusion.label_query needs the {num_classes} class names in the features "
                    f"(feats['class_names'], from the dataset's classes.csv); got {names!r}"
                )
            self._class_text = self._prompts(list(names))
        return self._class_text

    def _prompts(self, names: list[str]) -> np.ndarray:
        """One "a photo of a {name}." vector per name, by the prompt encoder (loaded once per model)."""
        if self._prompt_encoder is None:
            enc = self.config.caption_encoder
            # A table encoder (GloVe) has no sentence model for the prompts: MiniLM embeds them.
            prompt_encoder = "minilm" if caption_entry(enc.name).lookup is not None else enc.name
            self._prompt_encoder = build_caption(prompt_encoder, weights=enc.weights)[:2]
        model, tokenizer = self._prompt_encoder
        return label_text_embeddings(names, model, tokenizer).astype(np.float32)

    def fold_terms(self, feats: dict, Y_train: np.ndarray, rows: np.ndarray | None, fold_dir: Path | None):
        """Discovered names: each class's prompt terms from THIS fold's training rows only, so
        that no fold's model reads names made from its own held-out labels. None otherwise."""
        discovery = feats.get("class_discovery")
        if discovery is None or rows is None:
            return None
        found, terms = fold_prompt_terms(
            discovery["captions"], Y_train, rows, feats["class_ids"], discovery["settings"]
        )
        if fold_dir is not None:
            write_json(fold_dir / "class_names.json", {"train_rows": len(rows), "classes": [asdict(f) for f in found]})
        return terms

    def prepare(
        self, feats: dict, Y_train: np.ndarray, fold_dir: Path | None = None, rows: np.ndarray | None = None
    ) -> None:
        """Fill ``build_extras`` for a fold from its TRAINING rows' labels only, before ``build``.

        ``rows``: those training rows (discovered class names are rediscovered from them). The
        class -> context map is written to ``fold_dir/contexts.json`` for the report.
        """
        extras: dict = {}
        if needs_class_text(self.config):
            terms = self.fold_terms(feats, Y_train, rows, fold_dir)
            n = Y_train.shape[1]
            extras["class_text"] = self.class_text(feats, n) if terms is None else self.class_text(feats, n, terms)
        if uses_contexts(self.config):
            n_contexts = self.config.aux.n_contexts
            cmap = cluster_contexts(Y_train, n_contexts, self.seed)
            extras["context_map"] = cmap
            if fold_dir is not None:
                names = feats.get("class_names") or [str(i) for i in range(len(cmap))]
                ids = feats.get("class_ids") or list(range(len(cmap)))
                write_json(
                    fold_dir / "contexts.json",
                    {
                        "n_contexts": n_contexts,
                        "seed": self.seed,
                        "train_rows": int(len(Y_train)),
                        "contexts": [
                            [{"id": ids[c], "name": names[c]} for c in np.flatnonzero(cmap == k)]
                            for k in range(n_contexts)
                        ],
                        "class_context": {str(ids[c]): int(k) for c, k in enumerate(cmap)},
                    },
                )
        self.build_extras = extras

    def build(self, dims: dict, num_classes: int, class_freq: np.ndarray) -> torch.nn.Module:
        extras = self.build_extras
        loss = self.settings.loss_settings
        options = dict(loss.options)
        if loss.name == "weighted_bce":
            options["class_freq"] = class_freq
        loss_fn = LOSSES.create(loss.name, **options)
        if self.train_blocks and "img_mid" in dims:
            enc = self.config.image_encoder
            backbone, _ = build_image(enc.name, weights=enc.weights)
            top = BackboneTop(backbone, self.train_blocks, freeze_bn=enc.freeze_bn)
            width = backbone.num_features
            pooled = TopBlocksNet.pooled_width(width, dims["img_mid"], enc.pooling)
            head = build_net(self.config, dims | {"img_pooled": pooled, "img_tokens": width}, num_classes, **extras)
            head.loss_fn = loss_fn
            # The trained stages' convolutions are what a fold's time goes to: bf16 autocast where
            # the CPU computes it natively (finetune_options.amp); the head stays in fp32.
            amp = amp_dtype_for(self.device, self.config.finetune_options.amp)
            return TopBlocksNet(top, head, grid=enc.grid, pooling=enc.pooling, amp_dtype=amp)
        net = build_net(self.config, dims, num_classes, **extras)
        net.loss_fn = loss_fn
        return net

    def param_groups(self, net: torch.nn.Module) -> list[dict] | None:
        """Pretrained top stages move slower than the fresh head (``finetune_options.encoder_lr_mult``)."""
        if not hasattr(net, "top"):
            return None
        mult = self.config.finetune_options.encoder_lr_mult
        return [
            {"params": list(net.head.parameters()), "lr_mult": 1.0},
            {"params": list(net.top.parameters()), "lr_mult": mult},
        ]

    def head_cost(self, feats: dict, num_classes: int) -> tuple[int, float]:
        """(parameters, ms per image) of the head/fusion module on cached-size inputs."""
        dims = feats.get("dims")
        if dims is None:  # finetune mode: the encoders are counted by light_report
            return 0, 0.0
        if needs_class_text(self.config) and "class_text" not in self.build_extras:
            self.build_extras["class_text"] = self.class_text(feats, num_classes)
        if uses_contexts(self.config) and "context_map" not in self.build_extras:
            # Folds trained earlier (skipped now): any map of the same size costs the same.
            n = self.config.aux.n_contexts
            self.build_extras["context_map"] = np.arange(num_classes) % n
        net = self.build(dims, num_classes, np.full(num_classes, 0.1)).eval()
        batch = CachedViews(feats["views"]).batch(np.arange(min(32, len(next(iter(feats["views"]["orig"].values()))))))
        with torch.inference_mode():
            if hasattr(net, "top"):
                # The top stages belong to the backbone, which light_report counts whole; time
                # and count only what sits on top of it.
                batch, net = net.features(batch), net.head
            ms = time_ms(lambda: net(batch), len(next(iter(batch.values()))))
        return count_parameters(net), ms

    # -- the loop -----------------------------------------------------------------------------

    def fit_fold(
        self,
        feats: dict,
        Y: np.ndarray,
        tr: np.ndarray,
        va: np.ndarray,
        *,
        fold_dir: Path,
        pseudo=None,
        extra_rows: np.ndarray | None = None,
    ) -> FoldOutput:
        """``pseudo`` (``capfuse.training.pseudo.PseudoTargets``) adds unlabelled pool rows with partial targets;
        ``extra_rows`` are predicted too (``extra_logits``): the unlabelled train rows of label-ratio mode."""
        self.prepare(feats, Y[tr], fold_dir, rows=tr)  # from the fold's training rows only, before any build
        if self.finetune:
            if self.settings.early_stop == "refit":
                raise ValueError(
                    f"{self.config.name or 'this model'}: train.early_stop: refit retrains cached "
                    "heads; fine-tuning stops on the inner split (early_stop: inner)"
                )

            return fit_fold_finetune(self, feats, Y, tr, va, fold_dir=fold_dir, pseudo=pseudo, extra_rows=extra_rows)
        views = CachedViews(feats["views"])
        n_train = len(Y)
        test_rows = np.arange(n_train, n_train + feats["n_test"])
        net = self.build(feats["dims"], Y.shape[1], class_frequencies(Y[tr])).to(self.device)
        if isinstance(net, TopBlocksNet) and net.amp_dtype is None and self.device.type == "cpu":
            # Here, not in build(): predict and the cost report build the same net without training it.
            _warn_fp32_top_stage(self.config.image_encoder.name)

        keys = net.input_keys()
        # Crops and mixing of the training batches (train.crop_p, train.mix); off, batches pass untouched.
        augment = Augment.from_settings(self.settings, self.seed)

        def forward_batch(batch: dict) -> dict:
            return net({k: v.to(self.device) for k, v in batch.items()})

        def predict(rows: np.ndarray, key: str = "logits") -> np.ndarray:
            return self.predict_rows(net, views, rows, Y.shape[1], key)

        def train_step(batch: dict, targets: dict) -> float:
            batch.update(mix_targets(targets, batch.pop(MIX_KEY, None)))
            loss = forward_batch(batch)["loss"]
            loss.backward()
            return float(loss.detach())

        loop = dict(
            predict=predict,
            make_batch=lambda rows, flip: augment(views.batch(rows, flip, keys), rows),
            train_step=train_step,
            pseudo=pseudo,
        )
        fixed, inner = None, None
        if self.settings.early_stop == "refit":
            # Pass 1 on the inner split finds the epoch count; its record makes a resumed fold
            # skip it. Pass 2 starts from the fold's seed again, so a resume changes nothing.
            record = fold_dir / "inner" / "stop.json"
            if not record.exists():
                none = np.zeros(0, np.int64)
                first = self.loop(
                    net, Y, tr, none, none, fold_dir / "inner", param_groups=self.param_groups(net), **loop
                )
                write_json(record, first.info)
            inner = read_json(record)
            fixed = int(inner["best_epoch"]) + 1
            torch.manual_seed(torch.initial_seed())
            net = self.build(feats["dims"], Y.shape[1], class_frequencies(Y[tr])).to(self.device)
        result = self.loop(
            net,
            Y,
            tr,
            va,
            test_rows,
            fold_dir,
            param_groups=self.param_groups(net),
            extra_rows=extra_rows,
            fixed_epochs=fixed,
            **loop,
        )
        if inner is not None:
            result.info["inner"] = inner
        if needs_class_text(self.config) and result.test_logits.size:
            # The loop ends on the best checkpoint: its alignment scores of the unlabelled pool
            # are what a later round may rank its pseudo-labels by.
            result.align = {"test": predict(test_rows, "align_scores")}
            if extra_rows is not None and len(extra_rows):
                result.align["extra"] = predict(extra_rows, "align_scores")
        return result

    def predict_rows(
        self, net: torch.nn.Module, views: CachedViews, rows: np.ndarray, num_classes: int, key: str = "logits"
    ) -> np.ndarray:
        """``key`` of ``net`` for ``rows``, the mean over the original and (with TTA) flipped views."""
        net.eval()
        keys = net.input_keys()
        views_used = ("orig", "hflip") if self.settings.tta and "hflip" in views.views else ("orig",)
        out = np.zeros((len(rows), num_classes), np.float32)
        with torch.inference_mode():
            for view in views_used:
                for i in range(0, len(rows), self.settings.eval_batch_size):
                    chunk = rows[i : i + self.settings.eval_batch_size]
                    batch = {k: v.to(self.device) for k, v in views.view_batch(view, chunk, keys).items()}
                    out[i : i + len(chunk)] += net(batch)[key].float().cpu().numpy()
        return out / len(views_used)

    def load_saved(self, fold_dir: Path, dims: dict, num_classes: int) -> torch.nn.Module:
        """The fold's ``best.safetensors`` in a net built as ``fit_fold`` built it.

        What ``prepare`` computes from the training rows (the class prompts' embeddings, the
        class -> context map) lives in the state dict as buffers, so placeholders of the right
        shape build the net and the saved tensors replace them. Trained top stages are in the
        state dict too (``top.``, the head under ``head.``): the pretrained backbone they are
        built from is overwritten.
        """
        if self.finetune:
            raise ValueError(
                f"{self.config.name or 'this model'}: only nets on cached frozen-encoder features "
                "(trained top stages included) can be rebuilt from a fold's safetensors, not finetune: true"
            )
        state = load_file(str(fold_dir / "best.safetensors"))
        extras: dict = {}
        if needs_class_text(self.config):
            key = "head.label_query.class_text" if self.train_blocks else "label_query.class_text"
            extras["class_text"] = np.zeros(tuple(state[key].shape), np.float32)
        if uses_contexts(self.config):
            extras["context_map"] = np.arange(num_classes) % self.config.aux.n_contexts
        self.build_extras = extras
        net = self.build(dims, num_classes, np.full(num_classes, 0.1)).to(self.device)
        net.load_state_dict(state)
        return net.eval()

    def loop(self, net, Y, tr, va, test_rows, fold_dir: Path, **kwargs) -> FoldOutput:
        """The epochs of one fold (``capfuse.models.loop.train_epochs``) under this model's settings;
        cached heads on many rows take larger batches (``for_rows``), fine-tuning keeps its own."""
        settings = self.settings if self.finetune else for_rows(self.settings, len(tr))
        return train_epochs(settings, self.seed, net, Y, tr, va, test_rows, fold_dir, **kwargs)
