"""Datasets that work offline (no downloads at run time) and the ``[data]`` job section.

:func:`validate_data` checks a ``[data]`` table into a :class:`DataSpec` without reading
data; :func:`load_dataset` turns it into a :class:`Dataset` (seeded subsets, hold-out split,
augmentation, preprocessing with training statistics, and a report of all of it).
"""

from .validate import DataError, TaskWarning
from .dataset import FASHION_MNIST_CLASSES, Dataset, load_dataset, preprocess_new, preprocess_split
from .fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist, preprocess
from .spec import SKLEARN_BUNDLED, SOURCES, DataSpec, validate_data

__all__ = ["load_fashion_mnist", "preprocess", "FASHION_MNIST_DIR",
           "DataSpec", "Dataset", "DataError", "TaskWarning", "validate_data", "load_dataset", "preprocess_split",
           "preprocess_new",
           "SOURCES", "SKLEARN_BUNDLED", "FASHION_MNIST_CLASSES"]
