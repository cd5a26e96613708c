"""Named registries, one convention for all of them, and the plug-in loader that fills them.

nnvtv keeps five registries: adapters (:data:`nnvtv.adapter.ADAPTERS`), catalogue models
(:data:`nnvtv.catalog.MODELS`), tasks (:data:`nnvtv.tasks.TASKS`), search strategies
(:data:`nnvtv.search.STRATEGIES`) and toy-model trainers (:data:`nnvtv.toys.TRAINERS`). Each
is a :class:`Registry` and behaves the same way:

* ``register(item, *, replace=False)`` adds ``item`` under its name. Registering the same
  object again is a no-op; a *different* object under a taken name raises
  :class:`~nnvtv.errors.ConfigError` unless ``replace=True``.
* ``get(name)`` returns it; an unknown name raises the registry's own error class (a
  ``KeyError``) listing what is registered, the closest match, and how to add one.
* ``names()``, ``values()``, ``name in registry``, ``len(registry)``.

Plug-ins. Everything outside the core is added through the entry-point group
``nnvtv.adapters`` (:data:`ENTRY_POINT_GROUP`), nnvtv's own families, shipped models, their
tasks and toy trainers included (declared in nnvtv's ``pyproject.toml``), so the core never
imports :mod:`nnvtv.adapters`. An entry point loads an object or a list/tuple of objects; each
object goes to the registry whose item type it is (an ``AdapterSpec`` to the adapters, a
``ModelEntry`` to the models, a ``Task`` to the tasks, a ``ToyTrainer`` to the trainers). An
entry point that names a module registers whatever the module registers when imported.
Plug-ins load once, lazily, on the first lookup in any registry; nnvtv's own load first, and
a third-party plug-in cannot replace a built-in (it warns and is ignored; use
``register(..., replace=True)`` at run time to override on purpose). A broken plug-in warns
and is skipped: it never breaks nnvtv.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from nnvtv.errors import ConfigError, NnvtvError

__all__ = ["ENTRY_POINT_GROUP", "Registry", "load_plugins", "failed_plugins_note", "deprecated_replace"]

ENTRY_POINT_GROUP = "nnvtv.adapters"
#: the distribution whose entry points count as built-in
BUILTIN_DIST = "nnvtv"

T = TypeVar("T")

_ALL: list[Registry[Any]] = []
_STATE = {"loaded": False, "loading": False}
_FAILED: dict[str, str] = {}  # entry point -> why it could not be loaded


class Registry(Generic[T]):
    """Items of one type by name (see the module docstring for the shared convention).

    Args:
        kind: what the items are, for messages (``"adapter"``, ``"model"`` ...).
        item_type: the type plug-in objects must have to land here (``None``: only explicit
            :meth:`register` calls, e.g. strategy classes).
        error: exception class for unknown names (an :class:`~nnvtv.errors.NnvtvError` and ``KeyError``).
        how_to_add: one sentence telling users how to add an item (ends unknown-name messages).
        check: validates an item before it is registered (raises on a bad one).
        name_of: the name an item is registered under by default (its ``name`` attribute).
    """

    def __init__(
        self,
        kind: str,
        item_type: type | None,
        error: type[NnvtvError],
        *,
        how_to_add: str = "",
        check: Callable[[Any, str], None] | None = None,
        name_of: Callable[[Any], str] = lambda item: item.name,
    ) -> None:
        self.kind = kind
        self.item_type = item_type
        self.error = error
        self.how_to_add = how_to_add
        self._check = check
        self._name_of = name_of
        self._items: dict[str, T] = {}
        self._builtin: set[str] = set()
        _ALL.append(self)

    # ------------------------------------------------------------------ the convention
    def register(self, item: T, *, name: str | None = None, replace: bool = False) -> T:
        """Add ``item`` under ``name`` (default: its own name); returns ``item``."""
        if self.item_type is not None and not isinstance(item, self.item_type):
            raise ConfigError(
                f"only {self.item_type.__name__} objects can be registered as {self.kind}s, "
                f"got {type(item).__name__}"
            )
        key = self._name_of(item) if name is None else name
        if self._check is not None:
            self._check(item, key)
        if not isinstance(key, str) or not key or key != key.strip():
            raise ConfigError(f"a {self.kind} name must be a non-empty string without surrounding spaces, got {key!r}")
        existing = self._items.get(key)
        if existing is not None and existing is not item and existing != item and not replace:
            raise ConfigError(
                f"a {self.kind} named {key!r} is already registered ({_describe(existing)}); "
                f"pass replace=True to replace it, or choose another name"
            )
        self._items[key] = item
        return item

    def register_builtin(self, item: T) -> T:
        """Register one of nnvtv's own items: plug-ins cannot replace it."""
        self.register(item)
        self._builtin.add(self._name_of(item))
        return item

    def get(self, name: str) -> T:
        """The item registered as ``name``; unknown names raise the registry's error."""
        load_plugins()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            pass
        raise self.error(self.unknown_message(name))

    __getitem__ = get

    def unknown_message(self, name: Any) -> str:
        """``unknown <kind> 'x'. Available: ... Did you mean ...? <how to add>``."""
        names = sorted(self._items)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        available = ", ".join(names) if names else (
            "none (no plug-ins were found: is nnvtv installed? `pip install -e .` from a clone)"
        )
        tail = f" {self.how_to_add}" if self.how_to_add else ""
        return f"unknown {self.kind} {name!r}. Available: {available}.{hint}{tail}{failed_plugins_note()}"

    def names(self) -> list[str]:
        load_plugins()
        return list(self._items)

    def values(self) -> list[T]:
        load_plugins()
        return list(self._items.values())

    def items(self) -> list[tuple[str, T]]:
        load_plugins()
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._items

    def __len__(self) -> int:
        load_plugins()
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {len(self._items)} registered)"

    @contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Registrations made inside the ``with`` block are undone at its end (tests, notebooks)."""
        load_plugins()
        saved, builtin = dict(self._items), set(self._builtin)
        try:
            yield self
        finally:
            self._items, self._builtin = saved, builtin

    # ------------------------------------------------------------------ plug-ins
    def _accepts(self, item: Any) -> bool:
        return self.item_type is not None and isinstance(item, self.item_type)

    def _register_plugin(self, item: Any, builtin: bool, source: str) -> None:
        key = self._name_of(item)
        if not builtin and key in self._builtin:
            warnings.warn(
                f"nnvtv: plug-in entry point {source!r} tries to replace the built-in {self.kind} "
                f"{key!r}; ignored (to override on purpose, call register(..., replace=True))",
                stacklevel=4,
            )
            return
        try:
            self.register(item)
        except NnvtvError as exc:
            warnings.warn(f"nnvtv: plug-in entry point {source!r}: {exc}; ignored", stacklevel=4)
            return
        if builtin:
            self._builtin.add(key)


def failed_plugins_note() -> str:
    """`` (Plug-in 'x' failed to load: ...)`` for each entry point that failed, else ``""``."""
    return "".join(f" (Plug-in {ep!r} failed to load: {why}.)" for ep, why in _FAILED.items())


def _describe(item: Any) -> str:
    if isinstance(item, type):
        return f"{item.__module__}.{item.__qualname__}"
    return type(item).__name__


def _dispatch(item: Any, builtin: bool, source: str) -> None:
    # every registry exists by now: `import nnvtv` (run before any nnvtv.* module) creates them all
    for registry in _ALL:
        if registry._accepts(item):
            registry._register_plugin(item, builtin, source)
            return
    kinds = ", ".join(r.item_type.__name__ for r in _ALL if r.item_type is not None)
    warnings.warn(
        f"nnvtv: plug-in entry point {source!r} provides a {type(item).__name__}, which no registry "
        f"takes (expected {kinds}); ignored",
        stacklevel=4,
    )


def load_plugins() -> None:
    """Load every entry point of :data:`ENTRY_POINT_GROUP` once (nnvtv's own first).

    Called by every registry lookup; safe to call again (it does nothing) and while plug-ins
    are loading (a plug-in that looks something up on import sees what has loaded so far).
    """
    if _STATE["loaded"] or _STATE["loading"]:
        return
    _STATE["loading"] = True
    try:
        eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        eps.sort(key=lambda ep: (not _is_builtin(ep), ep.name))
        for ep in eps:
            builtin = _is_builtin(ep)
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in must not break nnvtv
                _FAILED[ep.name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"nnvtv: could not load plug-in entry point {ep.name!r} ({ep.value}): "
                    f"{type(exc).__name__}: {exc}",
                    stacklevel=3,
                )
                continue
            if isinstance(obj, types.ModuleType):
                continue  # a module registers what it holds when imported
            for item in obj if isinstance(obj, list | tuple) else [obj]:
                _dispatch(item, builtin, ep.name)
        _STATE["loaded"] = True
    finally:
        _STATE["loading"] = False


def _is_builtin(ep: importlib.metadata.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and getattr(dist, "name", None) == BUILTIN_DIST


def deprecated_replace(replace: bool, old_name: str, old_value: bool | None, where: str) -> bool:
    """Map a registry's old keyword (``override=`` / ``overwrite=``) to ``replace=`` with a warning."""
    if old_value is None:
        return replace
    warnings.warn(
        f"{where}({old_name}=...) is deprecated; use replace=... (one keyword for every nnvtv registry)",
        DeprecationWarning,
        stacklevel=3,
    )
    return bool(old_value) or replace
