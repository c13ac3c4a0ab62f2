"""Helpers every layer shares: atomic writes, logging, locks, run folders, seeding, DDP, registries."""
