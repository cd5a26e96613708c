"""Tracing: how nnvtv runs forwards, locally or on NDIF, through nnsight.

Every forward nnvtv makes (mean collection, batched candidate masks, held-out scoring,
wrap-time validation, gradients) is a list of *jobs*: ``(ModelInputs, [Visit, ...])``. A
:class:`~nnvtv.tracing.edits.Visit` says what to do at one module (apply
:class:`~nnvtv.tracing.edits.Edit` s, call a reader); :func:`~nnvtv.tracing.local.run_jobs`
runs the jobs as nnsight traces, visiting modules in forward order. A *backend* decides where:

* :class:`~nnvtv.tracing.local.LocalBackend` — here, one trace per job;
* :class:`~nnvtv.tracing.remote.RemoteBackend` — all jobs of one call in ONE nnsight session
  request on NDIF (``remote=True``) or through nnsight's local emulation (``remote="local"``).

:meth:`nnvtv.Model.trace_jobs` is the entry point; patching and mean collection build the visits.
"""

from nnvtv.tracing.edits import (
    ATTN_OUT,
    BLOCK,
    Edit,
    ModuleKey,
    Reader,
    Visit,
    apply_edits,
    group_sites,
    head_index,
    read_heads,
    where_of,
)
from nnvtv.tracing.local import Job, LocalBackend, Result, envoy_at, run_jobs, walk

__all__ = [
    "ATTN_OUT",
    "BLOCK",
    "Edit",
    "Job",
    "LocalBackend",
    "ModuleKey",
    "Reader",
    "Result",
    "Visit",
    "apply_edits",
    "envoy_at",
    "group_sites",
    "head_index",
    "read_heads",
    "run_jobs",
    "walk",
    "where_of",
]
