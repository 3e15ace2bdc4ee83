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

from bigbatch.trainer.errors import RecipeError


@dataclass(frozen=True)
class Published:
    """A model's figures as its source publishes them, to check the built model against."""

    params_m: float  # parameters, millions (at 1000 classes unless `classes` says otherwise)
    macs_m: float | None = None  # multiply-adds per image at `resolution`, millions; None where not published
    resolution: int = 224
    classes: int = 1000
    source: str = ""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str
    published: Published | None = None


_REGISTRY: dict[str, ModelEntry] = {}
_PREFIXES = ("torchvision:", "timm:")


def register(name: str, family: str, description: str = "", published: Published | None = None) -> Callable:
    """Decorator: `builder(num_classes=, in_chans=, image_size=, **kwargs) -> nn.Module` becomes model `name`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, family, builder, description or (builder.__doc__ or "").strip(),
                                     published)
        return builder

    return wrap


def get_entry(name: str) -> ModelEntry:
    problem = check_name(name)
    if problem or name not in _REGISTRY:
        raise RecipeError(f"model.name: {problem or f'{name!r} is not a catalogue entry'}")
    return _REGISTRY[name]


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
    for prefix, list_names in (("torchvision:", _torchvision_names), ("timm:", _timm_names)):
        if name.startswith(prefix):
            known, short = list_names(), name[len(prefix):]
            if short in known:
                return None
            close = difflib.get_close_matches(short, known, n=3, cutoff=0.5)
            hint = f"; close matches: {', '.join(prefix + c for c in close)}" if close else ""
            return f"unknown {prefix[:-1]} model {short!r}{hint}"
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
    return f"unknown model {name!r}{hint} (or use torchvision:NAME / timm:NAME)"


def zero_init_last_bn(model: nn.Module, name: str) -> None:
    """Zero the last BatchNorm gamma of every residual branch (Goyal et al. section 5.1): each block starts as
    the identity. Blocks declare it with a `zero_init_last()` method (timm's convention; ours follow it)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck  # torchvision's blocks end in bn2 / bn3

    found = False
    for block in model.modules():
        if hasattr(block, "zero_init_last"):
            block.zero_init_last()
        elif isinstance(block, (BasicBlock, Bottleneck)):
            nn.init.zeros_((block.bn3 if isinstance(block, Bottleneck) else block.bn2).weight)
        else:
            continue
        found = True
    if not found:
        raise RecipeError(f"model.zero_init_residual: model {name!r} has no residual blocks that support it")


def create_model(name: str, num_classes: int, in_chans: int = 3, image_size: int = 224,
                 zero_init_residual: bool = False, drop_path_rate: float = 0.0, **kwargs) -> nn.Module:
    """Build model `name` with fresh weights for `num_classes` classes, `in_chans` channels, `image_size` input."""
    if drop_path_rate:
        kwargs = {**kwargs, _drop_path_kwarg(name, kwargs): drop_path_rate}
    model = _build(name, num_classes, in_chans, image_size, **kwargs)
    if zero_init_residual:
        zero_init_last_bn(model, name)
    return model


def _drop_path_kwarg(name: str, kwargs: dict) -> str:
    """The builder's own name for the stochastic-depth probability (model.drop_path_rate)."""
    if name.startswith("timm:"):
        key = "drop_path_rate"
    elif name.startswith("torchvision:"):
        key = "stochastic_depth_prob"
    else:
        accepted = [k for k in ("drop_path_rate", "drop_path") if k in inspect.signature(_REGISTRY[name].builder).parameters]
        if not accepted:
            able = sorted(n for n, e in _REGISTRY.items()
                          if {"drop_path_rate", "drop_path"} & set(inspect.signature(e.builder).parameters))
            raise RecipeError(f"model.drop_path_rate: {name} has no stochastic depth; models that do: "
                              f"{', '.join(able)}, and timm:NAME / torchvision:NAME with it")
        key = accepted[0]
    if key in kwargs:
        raise RecipeError(f"model.drop_path_rate: set it or model.kwargs.{key}, not both")
    return key


def _build(name: str, num_classes: int, in_chans: int, image_size: int, **kwargs) -> nn.Module:
    problem = check_name(name)
    if problem:
        raise RecipeError(f"model.name: {problem}")
    if name.startswith("torchvision:"):
        if in_chans != 3:
            raise RecipeError(f"model.name: torchvision models take 3-channel input, the data has {in_chans}; "
                              "set data.channels: 3")
        import torchvision.models as tvm

        try:
            return tvm.get_model(name.split(":", 1)[1], weights=None, num_classes=num_classes, **kwargs)
        except TypeError as e:
            if "stochastic_depth_prob" in kwargs:
                raise RecipeError(f"model.drop_path_rate: {name} has no stochastic depth ({e})") from None
            raise
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
