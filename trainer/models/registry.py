"""Model registry: builders keyed by name, as in timm's `_registry.py`.

Our own builders register with `@register`; any torchvision or timm model is
reachable as `torchvision:NAME` / `timm:NAME` (built without pretrained weights:
nothing is downloaded at run time).
"""

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from trainer.errors import RecipeError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}
_PREFIXES = ("torchvision:", "timm:")


def register(name: str, family: str, description: str = "") -> Callable:
    """Decorator: `builder(num_classes=, in_chans=, image_size=, **kwargs) -> nn.Module` becomes model `name`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, family, builder, description or (builder.__doc__ or "").strip())
        return builder

    return wrap


def entries() -> list[ModelEntry]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return list(tvm.list_models(module=tvm))


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models())


def check_name(name: str) -> str | None:
    """None when `name` can be built, else a message listing close matches."""
    if name in _REGISTRY:
        return None
    if name.startswith("torchvision:"):
        known, short = _torchvision_names(), name.split(":", 1)[1]
        if short in known:
            return None
        close = difflib.get_close_matches(short, known, n=3, cutoff=0.5)
        return f"unknown torchvision model {short!r}" + (f"; close matches: {', '.join('torchvision:' + c for c in close)}" if close else "")
    if name.startswith("timm:"):
        known, short = _timm_names(), name.split(":", 1)[1]
        if short in known:
            return None
        close = difflib.get_close_matches(short, known, n=3, cutoff=0.5)
        return f"unknown timm model {short!r}" + (f"; close matches: {', '.join('timm:' + c for c in close)}" if close else "")
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
    return f"unknown model {name!r}{hint} (or use torchvision:NAME / timm:NAME)"


def create_model(name: str, num_classes: int, in_chans: int = 3, image_size: int = 224, **kwargs) -> nn.Module:
    """Build model `name` with fresh weights for `num_classes` classes, `in_chans` channels, `image_size` input."""
    problem = check_name(name)
    if problem:
        raise RecipeError(f"model.name: {problem}")
    if name.startswith("torchvision:"):
        if in_chans != 3:
            raise RecipeError(f"model.name: torchvision models take 3-channel input, the data has {in_chans}; "
                              "set data.channels: 3")
        import torchvision.models as tvm

        return tvm.get_model(name.split(":", 1)[1], weights=None, num_classes=num_classes, **kwargs)
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name.split(":", 1)[1], pretrained=False, num_classes=num_classes,
                                 in_chans=in_chans, **kwargs)
    builder = _REGISTRY[name].builder
    try:
        inspect.signature(builder).bind(num_classes=num_classes, in_chans=in_chans, image_size=image_size, **kwargs)
    except TypeError as e:
        raise RecipeError(f"model.kwargs: {name}: {e}") from None
    return builder(num_classes=num_classes, in_chans=in_chans, image_size=image_size, **kwargs)
