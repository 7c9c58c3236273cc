"""Flax models used by jmeta's experiments."""

from jmeta.models.mlp import MLP

__all__ = ["MLP"]
