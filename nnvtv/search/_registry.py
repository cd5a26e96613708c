"""Name -> strategy class registry :data:`STRATEGIES`: ``register_strategy``, ``get_strategy``, ``list_strategies``.

:data:`STRATEGIES` follows the convention of every nnvtv registry (:mod:`nnvtv.registry`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from nnvtv.errors import ConfigError, UnknownStrategyError
from nnvtv.registry import Registry, deprecated_replace

from ._protocol import Strategy

__all__ = ["STRATEGIES", "get_strategy", "list_strategies", "register_strategy", "strategy_name"]

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


#: every search strategy class, by name
STRATEGIES: Registry[type] = Registry(
    "search strategy",
    None,
    UnknownStrategyError,
    how_to_add="To add one, decorate a class implementing nnvtv.search.Strategy with @nnvtv.search.register_strategy('name').",
    check=lambda cls, name: _validate_class(name, cls),
    name_of=lambda cls: getattr(cls, "name", cls.__name__),
)


@overload
def register_strategy(name: str) -> Callable[[T], T]: ...
@overload
def register_strategy(name: str, cls: T, *, replace: bool = False, overwrite: bool | None = None) -> T: ...


def register_strategy(name: str, cls: Any = None, *, replace: bool = False, overwrite: bool | None = None) -> Any:
    """Register a strategy class under ``name``; use as ``@register_strategy("name")`` or call.

    The class must implement :class:`nnvtv.search.Strategy`, take ``(n_sites, *, seed, ...)``
    and declare all options as keyword arguments (no ``**kwargs``). Re-registering a name for a
    different class raises :class:`~nnvtv.errors.ConfigError` unless ``replace=True``
    (``overwrite=`` is its deprecated name).
    """
    replace = deprecated_replace(replace, "overwrite", overwrite, "register_strategy")
    if cls is None:

        def decorator(klass: T) -> T:
            return register_strategy(name, klass, replace=replace)

        return decorator
    return STRATEGIES.register(cls, name=name, replace=replace)


def list_strategies() -> list[str]:
    """Names of all registered strategies, sorted."""
    return sorted(STRATEGIES.names())


def strategy_name(strategy: Any) -> str:
    """The registered name of a strategy instance (or its class name if unregistered)."""
    for name, cls in STRATEGIES.items():
        if type(strategy) is cls:
            return name
    return type(strategy).__name__


def get_strategy(name: str, n_sites: int, *, seed: int = 0, **options: Any) -> Strategy:
    """Build the strategy registered as ``name`` over ``n_sites`` sites.

    ``options`` are the class's keyword arguments; unknown names raise
    :class:`~nnvtv.errors.ConfigError` listing the valid ones, an unknown ``name`` raises
    :class:`~nnvtv.errors.UnknownStrategyError` listing the registered ones.
    """
    cls = STRATEGIES.get(name)
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
