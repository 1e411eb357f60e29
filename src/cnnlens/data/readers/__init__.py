"""Readers for data sets on disk, one module per format.

Importing this package registers ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``,
``folder``, ``celeba`` and ``imagenet-val`` with :func:`cnnlens.data.load`, e.g.
``load("cifar10:/data/cifar-10-batches-bin", split="test")``. No reader unpickles anything.
"""

from __future__ import annotations

from . import celeba, cifar, folder, imagenet_val, mnist
from .files import FileDataset

__all__ = ["FileDataset", "celeba", "cifar", "folder", "imagenet_val", "mnist"]
