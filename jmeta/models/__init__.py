"""Flax models used by jmeta's experiments."""

from jmeta.models.conv4 import Conv4
from jmeta.models.mlp import MLP
from jmeta.models.resnet12 import ResNet12

__all__ = ["MLP", "Conv4", "ResNet12"]
