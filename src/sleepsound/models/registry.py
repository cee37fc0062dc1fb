"""A small timm-style model registry.

Models are registered by decorating a factory function::

    @register_model
    def tinycnn(n_classes: int, in_channels: int = 1) -> nn.Module: ...

and built by name with :func:`create_model`. Every factory takes ``n_classes`` and
``in_channels`` first; any further keyword arguments are model-specific and are validated
against the factory's signature, so typos fail loudly with the list of accepted names.

Each created model carries ``model.config``, a plain (JSON-serialisable) dict::

    {"name": "crnn", "n_classes": 3, "in_channels": 1, "kwargs": {"hidden": 64, "layers": 2}}

with every default filled in, so ``create_model_from_config(model.config)`` rebuilds the
same architecture from a checkpoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["create_model", "create_model_from_config", "list_models", "register_model"]

ModelFactory = Callable[..., nn.Module]

_MODELS: dict[str, ModelFactory] = {}


def register_model(fn: ModelFactory) -> ModelFactory:
    """Register ``fn`` under its ``__name__``; returns ``fn`` unchanged (use as decorator)."""
    name = fn.__name__
    existing = _MODELS.get(name)
    if existing is not None and (existing.__module__, existing.__qualname__) != (
        fn.__module__,
        fn.__qualname__,
    ):
        raise ValueError(
            f"model {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
        )
    _MODELS[name] = fn  # re-registering the same function (e.g. module reload) is fine
    return fn


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_MODELS)


def _model_kwargs(fn: ModelFactory) -> list[str]:
    """Names of the model-specific keyword arguments of a factory."""
    params = inspect.signature(fn).parameters
    return [p for p in params if p not in ("n_classes", "in_channels")]


def create_model(name: str, n_classes: int, in_channels: int = 1, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a name from :func:`list_models`.
        n_classes: number of output logits.
        in_channels: input channels of the log-mel tensor ``[B, C_in, 64, T]``.
        **kwargs: model-specific options (e.g. ``hidden`` for ``crnn``, ``r``/``k`` for
            ``tinycnn_cbam``).

    Returns:
        The model, with ``model.config`` set (see module docstring).

    Raises:
        ValueError: unknown model name (the message lists the available ones).
        TypeError: unknown or malformed keyword arguments (the message lists accepted ones).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    fn = _MODELS[name]
    try:
        bound = inspect.signature(fn).bind(n_classes, in_channels, **kwargs)
    except TypeError as e:
        accepted = ", ".join(_model_kwargs(fn)) or "(none)"
        raise TypeError(
            f"bad arguments for model {name!r}: {e}; accepted kwargs: {accepted}"
        ) from e
    bound.apply_defaults()
    model = fn(*bound.args, **bound.kwargs)
    resolved = {k: v for k, v in bound.arguments.items() if k not in ("n_classes", "in_channels")}
    model.config = {
        "name": name,
        "n_classes": int(n_classes),
        "in_channels": int(in_channels),
        "kwargs": resolved,
    }
    return model


def create_model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a ``model.config`` dict (e.g. one stored in a checkpoint)."""
    return create_model(
        config["name"],
        n_classes=config["n_classes"],
        in_channels=config.get("in_channels", 1),
        **config.get("kwargs", {}),
    )
