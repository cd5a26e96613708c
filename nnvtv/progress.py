"""Progress reports for long steps (conversions, downloads, mean collection, search).

Library code reports through :func:`status`; it writes one line to stderr when a long step
starts and one when it ends, so a user never stares at a silent prompt. ``NNVTV_PROGRESS=0`` (or
``nnvtv.progress.enabled = False``) silences it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["status", "enabled"]

#: report long steps on stderr (``NNVTV_PROGRESS=0`` turns it off)
enabled: bool = os.environ.get("NNVTV_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def status(message: str) -> Iterator[None]:
    """``nnvtv: <message> ...`` on stderr now, ``nnvtv: <message>: done in X s`` when the block ends."""
    if not enabled:
        yield
        return
    t0 = time.perf_counter()
    print(f"nnvtv: {message} ...", file=sys.stderr, flush=True)
    yield
    print(f"nnvtv: {message}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
