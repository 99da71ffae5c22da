"""Datasets that work offline (no downloads at run time)."""

from .fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist, preprocess

__all__ = ["load_fashion_mnist", "preprocess", "FASHION_MNIST_DIR"]
