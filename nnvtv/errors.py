"""One exception hierarchy for nnvtv.

Every error subclasses :class:`NnvtvError` *and* the builtin a caller would
naturally catch (``KeyError``, ``ValueError``, ``TypeError`` ...), so both
``except nnvtv.errors.NnvtvError`` and ``except ValueError`` work. Messages say
what was given, what was expected, and how to fix it.
"""

from __future__ import annotations


class NnvtvError(Exception):
    """Base class of every error nnvtv raises on purpose."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


class UnknownModelError(NnvtvError, KeyError):
    """No adapter (or no shipped model) matches what was given."""


class OfflineError(UnknownModelError):
    """A Hub model is not in the local cache and nnvtv may not download (offline mode)."""


class UnknownTaskError(NnvtvError, KeyError):
    """No task is registered under the requested name."""


class UnknownStrategyError(NnvtvError, KeyError):
    """No search strategy is registered under the requested name."""


class SiteError(NnvtvError, KeyError):
    """A site does not exist in the model (layer/head out of range, unknown group or stream)."""


class ShapeMismatchError(NnvtvError, ValueError):
    """A tensor has the wrong shape for the site or the API it was given to."""


class DTypeMismatchError(NnvtvError, TypeError):
    """A tensor has a dtype that cannot be used where it was given."""


class EmptyDataError(NnvtvError, ValueError):
    """An iterable of batches or examples turned out to be empty."""


class ConfigError(NnvtvError, ValueError):
    """An option or configuration value is invalid (budget, batch size, mode ...)."""


class CheckpointError(NnvtvError, ValueError):
    """A file on disk is corrupt, foreign, or does not match the model it is loaded into."""


class FingerprintMismatchError(NnvtvError, ValueError):
    """A task vector or a set of means was made for a different model."""


class AdapterError(NnvtvError, ValueError):
    """An adapter table does not fit the model it was applied to."""


class MissingDependencyError(NnvtvError, ImportError):
    """An optional package is needed; the message gives the install command."""


class RemoteError(NnvtvError, RuntimeError):
    """Remote (NDIF) execution cannot run: missing key, no network, or a local-only model."""


class StrategyStateError(NnvtvError, RuntimeError):
    """``ask``/``tell`` were called out of order, or ``tell`` got masks that were never asked."""


class ObjectiveError(NnvtvError, ValueError):
    """The search objective returned something a strategy cannot use (wrong shape, NaN ...)."""
