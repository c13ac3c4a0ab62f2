"""Torch components of the ``net`` models: losses, heads and the fusion model, in registries."""
