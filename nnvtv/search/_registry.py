"""Name -> strategy class registry: ``register_strategy``, ``get_strategy``, ``list_strategies``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from nnvtv.errors import ConfigError, UnknownStrategyError

from ._protocol import Strategy

__all__ = ["get_strategy", "list_strategies", "register_strategy", "strategy_name"]

_REGISTRY: dict[str, type] = {}
_REQUIRED = ("ask", "tell", "should_stop", "result", "n_sites", "population_size", "generation")

T = TypeVar("T", bound=type)


def _option_params(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword options (everything except ``n_sites`` and ``seed``)."""
    params = inspect.signature(cls).parameters
    return {
        name: p
        for name, p in params.items()
        if name not in ("n_sites", "seed")
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def _validate_class(name: str, cls: Any) -> None:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ConfigError(f"strategy name must be a non-empty string without spaces, got {name!r}")
    if not inspect.isclass(cls):
        raise ConfigError(f"register_strategy({name!r}, ...) expects a class, got {cls!r}")
    missing = [attr for attr in _REQUIRED if not hasattr(cls, attr)]
    if missing:
        raise ConfigError(
            f"{cls.__name__} cannot be registered as strategy {name!r}: it lacks "
            f"{', '.join(missing)} (see nnvtv.search.Strategy; subclassing "
            "nnvtv.search.BaseStrategy provides n_sites and generation)"
        )
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ConfigError(
            f"{cls.__name__}.__init__ takes **kwargs; strategies must declare every option as a "
            "keyword argument so that misspelled options are rejected, not swallowed"
        )
    for required in ("n_sites", "seed"):
        if required not in params:
            raise ConfigError(
                f"{cls.__name__}.__init__ must accept `{required}` "
                f"(signature: __init__(self, n_sites, *, seed, ...)); got {inspect.signature(cls)}"
            )


@overload
def register_strategy(name: str) -> Callable[[T], T]: ...
@overload
def register_strategy(name: str, cls: T, *, overwrite: bool = False) -> T: ...


def register_strategy(name: str, cls: Any = None, *, overwrite: bool = False) -> Any:
    """Register a strategy class under ``name``; use as ``@register_strategy("name")`` or call.

    The class must implement :class:`nnvtv.search.Strategy`, take ``(n_sites, *, seed, ...)``
    and declare all options as keyword arguments (no ``**kwargs``). Re-registering a name for a
    different class raises :class:`~nnvtv.errors.ConfigError` unless ``overwrite=True``.
    """
    if cls is None:

        def decorator(klass: T) -> T:
            return register_strategy(name, klass, overwrite=overwrite)

        return decorator
    _validate_class(name, cls)
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls and not overwrite:
        raise ConfigError(
            f"strategy name {name!r} is already registered for "
            f"{existing.__module__}.{existing.__qualname__}; pick another name or pass "
            "overwrite=True"
        )
    _REGISTRY[name] = cls
    return cls


def list_strategies() -> list[str]:
    """Names of all registered strategies, sorted."""
    return sorted(_REGISTRY)


def strategy_name(strategy: Any) -> str:
    """The registered name of a strategy instance (or its class name if unregistered)."""
    for name, cls in _REGISTRY.items():
        if type(strategy) is cls:
            return name
    return type(strategy).__name__


def strategy_options(name: str) -> dict[str, Any]:
    """Option names of strategy ``name`` with their defaults (``inspect.Parameter.empty`` if none)."""
    return {k: p.default for k, p in _option_params(_lookup(name)).items()}


def _lookup(name: str) -> type:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownStrategyError(
        f"unknown search strategy {name!r}; available: {', '.join(list_strategies())}.{hint} "
        "To add one, decorate a class implementing nnvtv.search.Strategy with "
        f"@nnvtv.search.register_strategy({str(name)!r})."
    )


def get_strategy(name: str, n_sites: int, *, seed: int = 0, **options: Any) -> Strategy:
    """Build the strategy registered as ``name`` over ``n_sites`` sites.

    ``options`` are the class's keyword arguments; unknown names raise
    :class:`~nnvtv.errors.ConfigError` listing the valid ones, an unknown ``name`` raises
    :class:`~nnvtv.errors.UnknownStrategyError` listing the registered ones.
    """
    cls = _lookup(name)
    valid = _option_params(cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(valid), n=1)
            if close:
                hints.append(f"{key!r} -> {close[0]!r}?")
        hint = f" Did you mean: {', '.join(hints)}" if hints else ""
        valid_txt = ", ".join(
            f"{k}={p.default!r}" if p.default is not inspect.Parameter.empty else k
            for k, p in valid.items()
        )
        raise ConfigError(
            f"strategy {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {valid_txt or '(none)'}.{hint}"
        )
    return cls(n_sites, seed=seed, **options)
