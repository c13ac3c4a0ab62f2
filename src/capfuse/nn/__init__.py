"""Torch components of the ``net`` models: heads, losses, the fusion model, contexts, pooling.

Heads and losses are registered by name (``HEADS``, ``LOSSES``); ``fusion.build_net`` builds a
model from a config, with every part switchable for ablation.
"""
