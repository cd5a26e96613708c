"""Deprecated location of :mod:`nnvtv.tracing.remote` (remote tracing on NDIF); import from there."""

import warnings

from nnvtv.tracing.remote import *  # noqa: F403
from nnvtv.tracing.remote import __all__  # noqa: F401

warnings.warn("nnvtv.remote moved to nnvtv.tracing.remote", DeprecationWarning, stacklevel=2)
