"""Sites, site spaces, and the masks that select site sets.

A :class:`Site` is one patchable unit of a model:

* a **head site** ``Site(layer, head, group, stream)`` is the ``head_dim``-wide slice of
  the *input* of the attention output projection of ``layer`` belonging to ``head``, at the
  token positions of ``group`` (shape of its value: ``[positions_in_group, head_dim]``);
* a **layer site** ``Site(layer, None, group, stream)`` is the residual stream (the block
  output) at those positions (value shape ``[positions_in_group, d_model]``).

``stream`` names the stack for encoder-decoder models (``"enc"``/``"dec"``) and is ``""``
otherwise. A :class:`SiteSpace` is an ordered, immutable list of sites; a boolean mask
``[n_sites]`` (or a batch ``[B, n_sites]``) over it selects site sets.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import torch

from nnvtv.errors import ShapeMismatchError, SiteError
from nnvtv.views import SiteSpaceView

__all__ = ["Site", "SiteSpace"]

_SITE_RE = re.compile(
    r"^(?:(?P<stream>[A-Za-z_]\w*)\.)?L(?P<layer>\d+)(?:\.H(?P<head>\d+))?@(?P<group>[\w-]+)$"
)


@dataclass(frozen=True)
class Site:
    """One patchable unit: a head output (``head`` set) or a residual stream (``head=None``).

    Written as text: ``L3.H5@last``, ``enc.L12.H0@query``, ``L7@last`` (layer site); ``str``
    and ``repr`` both give that short form, and :meth:`parse` reads it back.
    """

    layer: int
    head: int | None
    group: str
    stream: str = ""

    @property
    def kind(self) -> str:
        """``"head"`` or ``"layer"``."""
        return "layer" if self.head is None else "head"

    def __str__(self) -> str:
        prefix = f"{self.stream}." if self.stream else ""
        head = "" if self.head is None else f".H{self.head}"
        return f"{prefix}L{self.layer}{head}@{self.group}"

    def __repr__(self) -> str:
        return str(self)

    @classmethod
    def parse(cls, text: str) -> Site:
        """Inverse of ``str(site)``: ``Site.parse("enc.L3.H2@cls")``."""
        m = _SITE_RE.match(text.strip())
        if m is None:
            raise SiteError(
                f"cannot parse site {text!r}; expected e.g. 'L3.H5@last', 'enc.L0.H1@cls' "
                "or 'L7@last' (layer site)"
            )
        head = m.group("head")
        return cls(
            layer=int(m.group("layer")),
            head=None if head is None else int(head),
            group=m.group("group"),
            stream=m.group("stream") or "",
        )


class SiteSpace(SiteSpaceView, Sequence[Site]):
    """An ordered, immutable list of distinct sites; masks index into it.

    Order is stable: streams in model order, then layer, then head, then group (exactly
    the order in which :meth:`nnvtv.Model.sites` builds it), so a mask saved today means
    the same sites tomorrow.
    """

    def __init__(self, sites: Iterable[Site]):
        self._sites: tuple[Site, ...] = tuple(sites)
        self._index = {s: i for i, s in enumerate(self._sites)}
        if len(self._index) != len(self._sites):
            dup = [s for s, c in Counter(self._sites).items() if c > 1][:3]
            raise SiteError(f"a SiteSpace cannot hold duplicate sites; repeated: {dup}")

    # -- sequence protocol ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._sites)

    @overload
    def __getitem__(self, i: int) -> Site: ...
    @overload
    def __getitem__(self, i: slice) -> SiteSpace: ...
    def __getitem__(self, i: int | slice) -> Site | SiteSpace:
        if isinstance(i, slice):
            return SiteSpace(self._sites[i])
        return self._sites[i]

    def __iter__(self) -> Iterator[Site]:
        return iter(self._sites)

    def __contains__(self, site: object) -> bool:
        return site in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SiteSpace) and self._sites == other._sites

    def __hash__(self) -> int:
        return hash(self._sites)

    def index(self, site: Site, start: int = 0, stop: int | None = None) -> int:  # type: ignore[override]
        try:
            return self._index[site]
        except KeyError:
            raise SiteError(f"site {site} is not in this site space ({self.summary()})") from None

    # -- masks ---------------------------------------------------------------------------
    def mask(self, sites: Iterable[Site]) -> torch.Tensor:
        """Boolean mask ``[n_sites]`` selecting ``sites`` (each must be in the space)."""
        m = torch.zeros(len(self), dtype=torch.bool)
        for s in sites:
            m[self.index(s)] = True
        return m

    def select(self, mask: torch.Tensor) -> list[Site]:
        """Sites selected by a boolean mask ``[n_sites]``."""
        mask = self.check_masks(mask.reshape(1, -1) if mask.dim() == 1 else mask)
        if mask.shape[0] != 1:
            raise ShapeMismatchError(f"select() takes one mask [n_sites], got {tuple(mask.shape)}")
        return [s for s, keep in zip(self._sites, mask[0].tolist(), strict=True) if keep]

    def check_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Validate a batch of masks ``[B, n_sites]`` and return it as ``torch.bool``."""
        if not isinstance(masks, torch.Tensor):
            raise ShapeMismatchError(f"masks must be a torch.Tensor [B, {len(self)}], got {type(masks)}")
        if masks.dim() != 2 or masks.shape[1] != len(self):
            raise ShapeMismatchError(
                f"masks must have shape [B, {len(self)}] (one column per site of the space), "
                f"got {tuple(masks.shape)}"
            )
        if masks.dtype != torch.bool:
            if masks.is_floating_point() or not ((masks == 0) | (masks == 1)).all():
                raise ShapeMismatchError(
                    f"masks must be boolean (or 0/1 integers), got dtype {masks.dtype}"
                )
            masks = masks.bool()
        return masks

    # -- views ---------------------------------------------------------------------------
    @property
    def streams(self) -> list[str]:
        return list(dict.fromkeys(s.stream for s in self._sites))

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(s.group for s in self._sites))

    def summary(self) -> str:
        kinds = Counter(s.kind for s in self._sites)
        parts = [f"{n} {k} sites" for k, n in sorted(kinds.items())]
        streams = [s or "main" for s in self.streams]
        return f"{', '.join(parts) or '0 sites'}; streams {streams}; groups {self.groups}"

    def __repr__(self) -> str:
        head = ", ".join(str(s) for s in self._sites[:4])
        more = f", ... (+{len(self) - 4})" if len(self) > 4 else ""
        return f"SiteSpace([{head}{more}]; {self.summary()})"

    def to_list(self) -> list[str]:
        return [str(s) for s in self._sites]

    @classmethod
    def from_list(cls, names: Iterable[str]) -> SiteSpace:
        return cls(Site.parse(n) for n in names)
