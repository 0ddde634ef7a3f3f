""" Compatibility with older timm releases (0.9.x - 1.0.x)

Everything here exists only because older timm lacks an internal that timm 1.0.31 has. Each name is
taken from the installed timm when it is there (feature detection, no version checks) and a small
equivalent is used otherwise. Upstream timm needs none of this.
"""
import inspect
from typing import Callable, List, Optional, Tuple, TypeVar, Union

import torch.nn as nn

import timm.models
import timm.layers
from timm.models import _builder, _registry, resnet

__all__ = [
    'BasicBlock', 'Bottleneck', 'create_classifier', 'feature_take_indices', 'get_device_dtype', 'load_pretrained',
    'register_model',
]

_Fn = TypeVar('_Fn', bound=Callable)


def _takes_device(fn: Callable) -> bool:
    return 'device' in inspect.signature(fn).parameters


def _with_device_dtype(block_cls: type) -> type:
    """ The block class itself if it takes device/dtype kwargs, else a subclass that builds, then moves."""
    if _takes_device(block_cls.__init__):
        return block_cls

    def __init__(self, *args, device=None, dtype=None, **kwargs):
        block_cls.__init__(self, *args, **kwargs)
        self.to(device=device, dtype=dtype)

    return type(block_cls.__name__, (block_cls,), {'__init__': __init__, '__module__': block_cls.__module__})


BasicBlock = _with_device_dtype(resnet.BasicBlock)
Bottleneck = _with_device_dtype(resnet.Bottleneck)

if _takes_device(timm.layers.create_classifier):
    create_classifier = timm.layers.create_classifier
else:
    def create_classifier(
            num_features: int, num_classes: int, pool_type: str = 'avg', device=None, dtype=None, **kwargs,
    ) -> Tuple[nn.Module, ...]:
        """ timm.layers.create_classifier, with the device/dtype kwargs it gained in timm 1.0.2x, and a Linear
        classifier after pool_type='' (no pooling), which timm 0.9 asserts against."""
        modules = list(timm.layers.create_classifier(
            num_features, num_classes if pool_type else 0, pool_type=pool_type, **kwargs))
        if num_classes > 0 and not pool_type:
            modules[-1] = nn.Linear(num_features, num_classes)
        return tuple(m.to(device=device, dtype=dtype) for m in modules)

try:
    from timm.layers import get_device_dtype
except ImportError:
    def get_device_dtype(module: nn.Module, device=None, dtype=None) -> dict:
        """ device/dtype kwargs: the explicit values, else those of the module's first parameter."""
        p = next(module.parameters(), None)
        if p is not None:
            device = p.device if device is None else device
            dtype = p.dtype if dtype is None else dtype
        return {'device': device, 'dtype': dtype}

try:
    from timm.models._features import feature_take_indices
except ImportError:
    def feature_take_indices(
            num_features: int,
            indices: Optional[Union[int, List[int]]] = None,
    ) -> Tuple[List[int], int]:
        """ Absolute indices to take (all if None, last n if int, -ve from the end) and the largest one."""
        if indices is None:
            indices = num_features
        if isinstance(indices, int):
            if not 0 < indices <= num_features:
                raise ValueError(f'last-n ({indices}) is out of range (1 to {num_features})')
            take_indices = [num_features - indices + i for i in range(indices)]
        else:
            take_indices = [num_features + i if i < 0 else i for i in indices]
            bad = [i for i in take_indices if not 0 <= i < num_features]
            if bad:
                raise ValueError(f'feature indices {bad} are out of range (0 to {num_features - 1})')
        return take_indices, max(take_indices)


def load_pretrained(model: nn.Module, cache_dir=None, **kwargs) -> None:
    """ timm's load_pretrained; cache_dir is passed on only where timm takes it (and only when set)."""
    if cache_dir is not None:
        kwargs['cache_dir'] = cache_dir
    _builder.load_pretrained(model, **kwargs)


def _unregister(model_name: str) -> None:
    """ Remove a model name and its pretrained cfgs from timm's registry (no-op if it is not registered)."""
    if _registry._model_entrypoints.pop(model_name, None) is None:
        return
    module = _registry._model_to_module.pop(model_name, None)
    if module is not None:
        _registry._module_to_models[module].discard(model_name)
    for name in _registry._model_with_tags.pop(model_name, []) + [model_name]:
        _registry._model_pretrained_cfgs.pop(name, None)
        _registry._model_has_pretrained.discard(name)
    _registry._model_default_cfgs.pop(model_name, None)


def register_model(fn: _Fn) -> _Fn:
    """ timm's register_model, replacing any registration of the same name without an overwrite warning.

    The entrypoint is also set as `timm.models.<name>`, where timm's own `from .hrnet import *` put upstream's.
    """
    _unregister(fn.__name__)
    _registry.register_model(fn)
    setattr(timm.models, fn.__name__, fn)
    return fn
