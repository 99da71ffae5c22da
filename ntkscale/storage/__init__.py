"""The only layer that touches zarr/fsspec: store layouts (a tiled-store base; Gram, factor),
fingerprints, chunk ledger, locks, and opening the user's data files (:mod:`.datafiles`)."""

from .gram_store import FORMAT, CorruptTileError, GramStore, StoreMismatchError, fingerprint
from .ownership import UnsafePathError
from .url import StoreAccessError, is_local, is_memory, open_store
from .writer import DiskFullError, StaleLockWarning, StoreLock, StoreLockedError

__all__ = ["FORMAT", "CorruptTileError", "GramStore", "StoreMismatchError", "fingerprint",
           "StoreAccessError", "is_local", "is_memory", "open_store", "DiskFullError", "StaleLockWarning",
           "StoreLock", "StoreLockedError", "UnsafePathError"]
