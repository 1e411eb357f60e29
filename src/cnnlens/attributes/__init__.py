"""The human-predictable multi-attribute network of paper 003 (Kimura & Tanaka 2020)."""

from .network import AttributeNetwork, DilatedExtractor
from .transform import mask_transform, tone_curve

__all__ = ["AttributeNetwork", "DilatedExtractor", "mask_transform", "tone_curve"]
