"""ntkscale: Neural Tangent and NNGP kernels at scale."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ntkscale")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from . import stax  # noqa: E402

__all__ = ["__version__", "stax"]
