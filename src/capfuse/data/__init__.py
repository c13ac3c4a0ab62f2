"""Dataset loading, validation and the bundled demo dataset generator."""
