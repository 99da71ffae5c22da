"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (IDX files, gzip)."""

from __future__ import annotations

import gzip
import os
from typing import Optional

import numpy as np

__all__ = ["load_fashion_mnist", "preprocess", "FASHION_MNIST_DIR"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def preprocess(X: np.ndarray) -> np.ndarray:
    """Flatten, center each image, scale it to norm √d (so x·x/d = 1): the inputs the
    NTK conditioning numbers in ALGORITHMS.md §2 were measured on."""
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    X = X - X.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms * np.sqrt(X.shape[1])


def load_fashion_mnist(split: str = "train", n: Optional[int] = None, *, path: Optional[str] = None,
                       raw: bool = False, seed: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 784) and labels (n,) of Fashion-MNIST.

    Parameters
    ----------
    split : 'train' (60,000) or 'test' (10,000)
    n : int, optional
        Keep the first n rows (or a random n with ``seed``).
    path : str, optional
        Folder with the IDX files (default ``/usr/share/datasets/fashion-mnist``).
    raw : bool
        uint8 pixels instead of :func:`preprocess` output (float64).
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = path or os.environ.get("NTKSCALE_FASHION_MNIST", FASHION_MNIST_DIR)
    files = [os.path.join(folder, f) for f in _FILES[split]]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found ({missing[0]}). Install Debian's package: "
            "'sudo apt-get install dataset-fashion-mnist' (files land in "
            f"{FASHION_MNIST_DIR}), or point NTKSCALE_FASHION_MNIST at a folder with the IDX files")
    X, y = _read_idx(files[0]), _read_idx(files[1]).astype(np.int64)
    if n is not None:
        if not 1 <= n <= len(X):
            raise ValueError(f"n must be in [1, {len(X)}] for the {split} split, got {n}")
        idx = np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).choice(len(X), n, replace=False))
        X, y = X[idx], y[idx]
    return (X.reshape(len(X), -1).copy() if raw else preprocess(X)), y
