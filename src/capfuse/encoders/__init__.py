"""Pretrained encoders, resolved offline-first: timm backbones, transformers and GloVe for captions.

``registry`` is the one way the pipeline builds an encoder (``build_image``, ``build_caption``,
``caption_entry``); ``image``, ``text``, ``glove`` and ``weights`` hold the loaders and where the
weights come from; ``cost`` measures parameters and milliseconds per item.
"""
