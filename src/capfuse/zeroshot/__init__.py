"""Open-vocabulary labels (a light analogue of MKT) and an embedding space to search (as in MuMIC).

No CLIP weights can be installed here, so the vision-language teacher is the competition's own
captions: a small projector maps a frozen backbone's cached image features into the MiniLM
sentence-embedding space (mean-pooled, L2-normalised) and is trained with a symmetric InfoNCE
loss (CLIP's) against each image's own caption embedding, with a learned temperature. Captions
name objects, so afterwards any label name can be scored by the cosine between the image's
embedding and the embedding of prompts built from the name ("a photo of a {name}.", ...),
including names that were never training targets.

Optional parts, each a config switch (``zeroshot.projector`` and ``zeroshot.loss``):

* ``projector.kind``: ``linear`` or ``mlp`` (one hidden layer);
* ``projector.tokens``: MKT's local stream beside the global one: a learned query attends over
  the cached token grid and its output joins the pooled vector;
* ``loss.label_weight``: a multi-label term, MuMIC's tempered, hardness-aware sigmoid
  BCE on ``scale * cos(image, prompt_c) + bias``, for the SEEN classes only: it pulls images
  towards the prompts of the labels they carry. The unseen classes' columns are never passed in.

Evaluation follows MKT: ZSL ranks only the unseen classes on the images that carry at least one
of them; GZSL ranks every class on every evaluation image; both with mAP, F1@3, F1@5 and GAP@10.
The trained space is also exported and searched by text or by image (MuMIC's retrieval).

Modules:

* ``settings``: ``ZeroShotSettings``, the ``zeroshot:`` config block (no torch: the config
  schema loads it);
* ``model``: ``AttnPool``, ``ImageProjector``, ``clip_loss``, ``ZeroShotNet``;
* ``inputs``: ``ImageFeatures`` and how they are read, from the feature store
  (``load_features``) or from image files (``list_images``, ``embed_image_files``);
* ``text``: ``CaptionSpace``, label prompts and free-text queries in the caption space;
* ``train``: ``train_projection``, ``embed_rows``;
* ``evaluate``: ``pick_unseen``, ``zeroshot_metrics``, ``random_metrics``, ``results_table``,
  ``per_class_ap``;
* ``io``: the deployed projector's folder (``model_dir``, ``save_model``, ``load_model``);
* ``search``: exported embeddings and nearest neighbours (``write_embeddings``,
  ``read_embeddings``, ``nearest``, ``SPACES``).

The stages ``capfuse.stages.zeroshot`` and ``capfuse.stages.embeddings`` run them.
"""

from capfuse.zeroshot.settings import ZeroShotSettings

__all__ = ["ZeroShotSettings"]
