"""Thin stages that speak through files, one module per command: each loads what it needs, calls
the library and prints its summary. A stage never imports another stage (``make lint``)."""
