"""Model kinds, registered by name; a model config's ``kind`` picks one."""

from capfuse.utils.registry import Registry

MODELS = Registry("model kind")

# Importing the modules registers their kinds.
from capfuse.models import linear, net  # noqa: E402,F401
