"""ntkscale: Neural Tangent and NNGP kernels at scale.

A neural-tangents script ports by its imports: ``import ntkscale as nt`` gives ``nt.stax``,
``nt.batch``, ``nt.predict`` and ``nt.Kernel``; ``from ntkscale import stax`` the layers.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("ntkscale")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from . import stax  # noqa: E402
from .kernels.api import Kernel  # noqa: E402
from .kernels.batching import batch  # noqa: E402

__all__ = ["__version__", "stax", "batch", "Kernel", "predict"]


def __getattr__(name: str) -> Any:
    """``ntkscale.predict`` on first use (it imports the tiling and store layers)."""
    if name == "predict":
        import importlib

        return importlib.import_module(".predict", __name__)
    raise AttributeError(f"module 'ntkscale' has no attribute {name!r}")
