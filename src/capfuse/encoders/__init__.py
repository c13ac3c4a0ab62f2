"""Pretrained encoders: timm image backbones and caption encoders, resolved offline-first."""
