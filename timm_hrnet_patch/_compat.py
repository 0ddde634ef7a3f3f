""" Compatibility with older timm releases (0.9.x - 1.0.x) and torch (from 2.2)

Everything here exists only because older timm lacks an internal that timm 1.0.31 has, because older timm on
torch < 2.6 unpickles checkpoints without weights_only, or because a norm layer that timm names takes no device
argument (torchvision's FrozenBatchNorm2d, which timm's ResNet blocks cannot build either). Each name is taken from
the installed timm when it is there (feature detection, no version checks) and a small equivalent is used otherwise.
Upstream timm needs none of this.
"""
import functools
import inspect
import pickle
import threading
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Tuple, TypeVar, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint

import timm.models
import timm.layers
from timm.models import _builder, _registry, resnet

__all__ = [
    'BasicBlock', 'Bottleneck', 'calculate_drop_path_rates', 'checkpoint', 'create_classifier', 'feature_take_indices',
    'get_device_dtype', 'load_pretrained', 'norm_layer_taking_device', 'register_model', 'weights_only_unpickling',
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


def _built_then_moved(*args, layer: type, device=None, dtype=None, **kwargs) -> nn.Module:
    return layer(*args, **kwargs).to(device=device, dtype=dtype)


def norm_layer_taking_device(norm_layer) -> Callable:
    """ timm's get_norm_layer(norm_layer), taking the device/dtype kwargs that HRNet passes to every norm it builds:
    a layer whose class does not take them (torchvision's FrozenBatchNorm2d, older timm's GroupNorm) is built, then
    moved. Its modules are of the layer's own class."""
    layer = timm.layers.get_norm_layer(norm_layer)
    cls, keywords = (layer.func, layer.keywords) if isinstance(layer, functools.partial) else (layer, {})
    if not isinstance(cls, type) or _takes_device(cls.__init__):
        return layer
    return functools.partial(_built_then_moved, layer=cls, **keywords)


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
    from timm.layers import calculate_drop_path_rates
except ImportError:  # timm 1.0.20 and older
    def calculate_drop_path_rates(
            drop_path_rate: float, depths: List[int], stagewise: bool = True,
    ) -> List[List[float]]:
        """ timm's stochastic depth rates in the form HRNet takes them (depths per stage, stagewise=True): one rate
        per block, linear from 0 to drop_path_rate over all blocks, split by stage."""
        return [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(depths)]

try:
    from timm.models._manipulate import checkpoint
except ImportError:  # older timm
    def checkpoint(function: Callable, *args, **kwargs):
        """ timm's checkpoint helper: torch.utils.checkpoint.checkpoint, non-reentrant as timm's default."""
        return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False, **kwargs)

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


def outside_dynamo(hook: _Fn) -> _Fn:
    """ A module hook that dynamo does not compile as a frame of its own, where it would.

    dynamo inlines nn.Module calls with their hooks into the caller's graph with inline_inbuilt_nn_modules (a config
    from torch 2.3, on by default from 2.5, deprecated as always on in 2.14). Before it (torch 2.2), it compiles a
    forward pre-hook as a frame of its own, and torch.export of the module fails ("whole graph export entails
    exactly one guard export"): there the hook runs eagerly, outside dynamo."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # the config's deprecation (torch 2.14)
        inlines = getattr(torch._dynamo.config, 'inline_inbuilt_nn_modules', None)
    if inlines is None:  # no such config: torch before 2.3, or after its removal
        inlines = torch.__version__ >= '2.5'
    return hook if inlines else torch._dynamo.disable(hook)


_unpickling_lock = threading.Lock()
_unpickling_depth = 0


@contextmanager
def weights_only_unpickling(source: str) -> Iterator[None]:
    """ Within the context, torch.load unpickles with weights_only=True whatever its caller passes, so a checkpoint
    whose pickle would run code is refused: a RuntimeError naming `source` and what was refused.

    timm before 1.0 calls torch.load without weights_only, and torch before 2.6 then unpickles anything. Thread-safe:
    the first of nested or concurrent contexts swaps torch.load, the last one out restores it (a torch.load of another
    thread in that window is weights_only too).
    """
    global _unpickling_depth
    with _unpickling_lock:
        if _unpickling_depth == 0:
            torch.load = functools.partial(_weights_only_load, torch.load)
        _unpickling_depth += 1
    try:
        yield
    except Exception as e:
        refusal = _weights_only_refusal(e)
        if refusal is None:  # not a refusal: a broken or foreign file, or no file at all
            raise
        lines = str(refusal).splitlines()
        reason = next((line for line in lines if 'Unsupported' in line), lines[0])
        raise RuntimeError(
            f'Refused to unpickle the pretrained weights of {source}: the pickle holds more than tensors, and loading '
            f'it could run code ({reason.strip()}). Use a .safetensors file; if you trust this one, convert it on a '
            'trusted machine (torch.load(..., weights_only=False), then safetensors.torch.save_file, or '
            '`timm-hrnet-patch convert` for checkpoints that hold only tensors).') from e
    finally:
        with _unpickling_lock:
            _unpickling_depth -= 1
            if _unpickling_depth == 0:
                torch.load = torch.load.args[0]


def _weights_only_refusal(e: BaseException) -> Optional[BaseException]:
    """ The weights_only unpickler's refusal in an exception's chain (timm 1.0.3x re-raises it as a RuntimeError)."""
    while e is not None:
        if isinstance(e, pickle.UnpicklingError) and str(e).startswith('Weights only load failed'):
            return e
        e = e.__cause__ or e.__context__
    return None


def _weights_only_load(load: Callable, *args, **kwargs):
    kwargs['weights_only'] = True
    return load(*args, **kwargs)


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
