"""Thin stages that speak through files: folds → train → infer. Each is one function."""
