"""Model registry: entry-point functions keyed on their own name."""

from __future__ import annotations

from typing import Any, Callable

_MODELS: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: register ``fn`` under ``fn.__name__``.

    Args:
        fn: a callable ``fn(pretrained: bool = ..., **kw) -> nn.Module``.

    Returns:
        ``fn`` unchanged.
    """
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_MODELS)


def get_entry(name: str) -> Callable[..., Any]:
    """The entry function registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None
