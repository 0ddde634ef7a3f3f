""" The package's own policy, which timm would not take: everything here is this package's, not the fix proposed
upstream. It imports the model module (the series' end, which imports nothing of it) and registers each of its
entrypoints again, under the same name, with this policy around it:

- it builds the package's models (`model.py`, and `features.py` for features_only), whose pretrained filter is the
  checkpoint layouts' (`layouts.py`), with the model module's arch cfgs and pretrained cfgs;
- each entrypoint takes `strict=` as an alias of timm's `pretrained_strict=`, refuses in_chans and num_classes values
  that are not counts with a ValueError, and checks each input tensor (`check_input`) before the model's forward;
- a pretrained model is built without weights, on the meta device (no random init for the checkpoint to overwrite;
  unless a device is given), then loaded through timm's load_pretrained with weights files checked before timm reads
  them, pickles unpickled with weights_only=True on every torch and timm, and the checkpoint filter's result checked
  value by value (`check_values`: wrong kinds, NaN / Inf, lost precision); a mismatch error names the head that the
  checkpoint fits (`head_hint`).
"""
import functools
import logging
import os
import pickle
import zipfile
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Dict, Iterator, Tuple

import safetensors

import torch
import torch.nn as nn

from timm.models import _builder
from . import features, hrnet, layouts, model as package_model
from ._compat import load_pretrained, outside_dynamo, register_model, weights_only_unpickling
from .layouts import UnknownLayoutError, _format_keys, _map_checkpoint
from .model import _CLASSIFIER_MODULES, _HEAD_SPECS, _unbuilt_prefixes

__all__ = ['ENTRYPOINTS', 'register', 'with_policy', 'check_input', 'check_values', 'head_hint']

_logger = logging.getLogger('timm_hrnet_patch.hrnet')
_STRICT_HINT = ' Pass pretrained_strict=False (alias strict=False) to load it anyway.'
_ALIAS_HINT = ' Its alias is strict=False.'


# the model module's entrypoints that build another variant's arch cfg: (that variant, their kwargs' defaults)
_CFG_VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'hrnet_w18_ssld': ('hrnet_w18', dict(head_conv_bias=False)),
    'hrnet_w48_ssld': ('hrnet_w48', dict(head_conv_bias=False)),
}


def create_hrnet(variant: str, **model_kwargs) -> nn.Module:
    """ The package's model of `variant` without pretrained weights (_build_pretrained loads them), built as the model
    module's `_create_hrnet` builds timm's: with timm's builder, from the same arch cfg and pretrained cfgs."""
    cfg_variant, defaults = _CFG_VARIANTS.get(variant, (variant, {}))
    model_kwargs = {**defaults, **model_kwargs}
    model_cls = package_model.HighResolutionNet
    features_mode = ''
    kwargs_filter = None
    if model_kwargs.pop('features_only', False):
        if 'feature_cls' in model_kwargs or 'feature_cls' in model_kwargs.get('feature_cfg', {}):
            # generic feature wrapper (e.g. 'getter' via forward_intermediates) around the base model
            features_mode = 'cfg'
        else:
            model_cls = features.HighResolutionNetFeatures
            kwargs_filter = ('num_classes', 'global_pool')
            features_mode = 'cls'
    model_kwargs.pop('pretrained_strict', None)
    model = _builder.build_model_with_cfg(
        model_cls,
        variant,
        False,
        model_cfg=hrnet.cfg_cls[cfg_variant],
        kwargs_filter=kwargs_filter,
        features_only=features_mode == 'cfg',
        **model_kwargs,
    )
    if features_mode == 'cls':
        model.pretrained_cfg = _builder.pretrained_cfg_for_features(model.default_cfg)
        model.default_cfg = model.pretrained_cfg  # backwards compat
    return model


def with_policy(fn: Callable) -> Callable:
    """ The model module's entrypoint `fn` (its name, signature and pretrained cfgs), building the package's model
    (create_hrnet) with the package's argument and input checks and pretrained loading."""

    @functools.wraps(fn)
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        if 'strict' in kwargs:
            strict = kwargs.pop('strict')
            if kwargs.setdefault('pretrained_strict', strict) != strict:
                raise TypeError(
                    'strict is an alias of pretrained_strict, pass one of them, not both with different values.')
        in_chans, num_classes = kwargs.get('in_chans', 3), kwargs.get('num_classes', 0)
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f'HRNet in_chans must be a positive int, got {in_chans!r}.')
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'HRNet num_classes must be an int >= 0 (0: no classifier), got {num_classes!r}.')
        model = _build_pretrained(fn.__name__, **kwargs) if pretrained else create_hrnet(fn.__name__, **kwargs)
        model.register_forward_pre_hook(check_input)
        return model

    return entrypoint


@outside_dynamo
def check_input(model: nn.Module, args: tuple) -> None:
    """ Forward pre-hook: a ValueError for an input that is not (B, in_chans, H, W) or, in training, one whose deepest
    maps hold a single value per channel (BatchNorm cannot normalise it)."""
    x = args[0]
    model = getattr(model, 'model', model)  # a timm feature wrapper (feature_cls='getter') around the HRNet
    in_chans = model.conv1.in_channels
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f'HRNet expects input of shape (B, {in_chans}, H, W) (in_chans={in_chans}), got {tuple(x.shape)}.')
    s = model.output_stride if model.training and model.branch_outputs else 0
    if s and x.shape[0] * ((x.shape[2] + s - 1) // s) * ((x.shape[3] + s - 1) // s) == 1:
        raise ValueError(
            f'HRNet in training needs more than one value per channel at stride {s} for BatchNorm, got input '
            f'{tuple(x.shape)}: use a batch > 1 or an input larger than {s} x {s}.')


def _checked_filter(strict: bool) -> Callable:
    """ The model's checkpoint filter, its mismatch errors with a head hint, its result value-checked."""

    def checked(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
        try:
            filtered = layouts.checkpoint_filter_fn(state_dict, model, strict=strict)
        except UnknownLayoutError:
            raise
        except RuntimeError as e:  # the filter's only other error: keys that do not match the model
            raise RuntimeError(f'{e}{head_hint(state_dict, model)}{_ALIAS_HINT}') from None
        check_values(filtered, model.state_dict(), strict)
        return filtered

    return checked


def _build_pretrained(variant: str, **kwargs) -> nn.Module:
    """ The variant's model with pretrained weights, as timm's build_model_with_cfg loads them, with the package's
    checks.

    The model is built without weights (on the meta device unless a device is given), then loaded through timm's
    load_pretrained, taking the checkpoint's tensors (cast to the model's dtypes). Whatever the load leaves on meta (a
    resized classifier, keys a loose load lacked) is materialised on the CPU and initialised as a fresh build does:
    reset_parameters(), and convolutions as HighResolutionNet.init_weights does.
    """
    pretrained_cfg = _builder.resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
    )
    if pretrained_cfg.file:
        check_weights_file(str(pretrained_cfg.file), variant)
    on_meta = kwargs.get('device') is None
    with torch.device('meta') if on_meta else nullcontext():
        model = create_hrnet(variant, **kwargs)
    # the HRNet whose state dict is the checkpoint's: the model, or the one timm's feature_cls='getter' wrapper holds
    # (its other wrappers, 'dict' and 'hook', need modules that HRNet's feature_info does not name: they fail to build)
    base = model if isinstance(model, package_model.HighResolutionNet) else model.model
    strict = kwargs.get('pretrained_strict', True)
    if strict and getattr(base.bn1, 'running_var', None) is None:
        raise ValueError(
            f'Pretrained HRNet weights hold BatchNorm statistics, which norm_layer {type(base.bn1).__name__} has no '
            f'place for: use a norm with BatchNorm\'s parameters (BatchNorm2d, FrozenBatchNorm2d, SyncBatchNorm), or '
            f'pretrained_strict=False to load only the parameters it has.')
    with _assigning_load(base) if on_meta else nullcontext(), weights_only_unpickling(variant):
        load_pretrained(
            base,
            pretrained_cfg=pretrained_cfg.to_dict(),
            num_classes=0 if kwargs.get('features_only') else base.num_classes,
            in_chans=kwargs.get('in_chans', 3),
            filter_fn=_checked_filter(strict),
            strict=strict,
            cache_dir=kwargs.get('cache_dir'),
        )
    for m in model.modules():
        if any(t.is_meta for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]):
            m.to_empty(device='cpu', recurse=False)
            if hasattr(m, 'reset_parameters'):
                m.reset_parameters()
            if isinstance(m, nn.Conv2d):  # as HighResolutionNet.init_weights
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
    return model


def check_weights_file(path: str, variant: str) -> None:
    """ Raise a clear error, before timm reads it, for a weights file that cannot be a checkpoint: a path that does
    not exist, a directory, an empty file, a .safetensors file whose header does not parse or whose data is cut
    short, any other file that is neither a torch.save zip archive nor a pickle."""
    what = f'Pretrained weights file for {variant} ({path!r})'
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} does not exist.')
    if os.path.isdir(path):
        raise IsADirectoryError(f'{what} is a directory: give the checkpoint file in it.')
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f'{what} is empty (0 bytes): an interrupted download or copy?')
    if path.endswith('.safetensors'):
        try:
            with safetensors.safe_open(path, 'pt'):
                pass  # opening parses the header and checks its offsets against the file size
        except Exception as e:  # safetensors raises its own SafetensorError, not exported on every version
            raise ValueError(f'{what} is not a readable safetensors file (truncated or corrupt?): {e}') from e
        return
    with open(path, 'rb') as f:
        head = f.read(2)
    if not (zipfile.is_zipfile(path) or head[:1] == pickle.PROTO):
        raise ValueError(
            f'{what} is neither a torch checkpoint (torch.save zip archive or pickle) nor a .safetensors file, '
            f'it starts with {head!r}.')


@contextmanager
def _assigning_load(model: nn.Module) -> Iterator[None]:
    """ Within the context, model.load_state_dict assigns the state_dict's tensors (cast to the model's dtypes)
    instead of copying them into tensors that hold no data."""
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}

    def load_state_dict(state_dict, strict: bool = True, assign: bool = False):
        state_dict = {k: v.to(dtypes[k]) if k in dtypes and v.is_floating_point() else v for k, v in state_dict.items()}
        return type(model).load_state_dict(model, state_dict, strict=strict, assign=True)

    model.load_state_dict = load_state_dict
    try:
        yield
    finally:
        del model.load_state_dict


def check_values(state_dict: Dict[str, Any], model_sd: Dict[str, torch.Tensor], strict: bool) -> None:
    """ Values that cannot load: not a tensor, or integer where the model holds floats (or the reverse): a
    RuntimeError. NaN or Inf in a float tensor: a RuntimeError (strict), else a warning naming the keys. Floats that
    load into a model dtype holding less precision or range (float32 into bfloat16, ...): a warning."""
    wrong = [k for k, v in state_dict.items() if k in model_sd and (
        not isinstance(v, torch.Tensor) or v.is_floating_point() != model_sd[k].is_floating_point())]
    if wrong:
        raise RuntimeError(
            f'Checkpoint values of the wrong type ({len(wrong)}), need a tensor of the model\'s kind (float or '
            f'integer): ' + ', '.join(f'{k} ({getattr(state_dict[k], "dtype", type(state_dict[k]).__name__)})'
                                      for k in sorted(wrong)[:10]) + '.')
    floats = {k: v for k, v in state_dict.items() if k in model_sd and v.is_floating_point()}
    non_finite = [k for k, v in floats.items() if not torch.isfinite(v).all()]
    if non_finite:
        msg = f'Checkpoint tensors with NaN or Inf values ({len(non_finite)}): {_format_keys(non_finite)}.'
        if strict:
            raise RuntimeError(msg + _STRICT_HINT.replace('it', 'them'))
        _logger.warning(msg + ' Loading them non-strict.')
    lossy = sorted({(str(v.dtype), str(model_sd[k].dtype)) for k, v in floats.items() if v.dtype != model_sd[k].dtype
                    and not (model_sd[k].dtype in (torch.float32, torch.float64)
                             and torch.finfo(v.dtype).bits <= torch.finfo(model_sd[k].dtype).bits)})
    if lossy:
        _logger.warning('Checkpoint floats load into a model dtype with less precision or range: '
                        + ', '.join(f'{a} to {b}' for a, b in lossy) + '.')


def head_hint(checkpoint: Dict[str, Any], model: nn.Module) -> str:
    """ Advice for a checkpoint that does not match the model: when the missing and unexpected keys are all of head
    modules (and the last stage 4 module's fuse layers), the head whose modules the checkpoint has, its layout's own
    head first; '' when no head fits better (another variant's checkpoint, say)."""
    try:
        layout, mapped, _ = _map_checkpoint(checkpoint)
    except UnknownLayoutError:
        return ''
    keys = list(mapped)
    model_keys = set(model.state_dict())
    mismatched = [k for k in set(keys) ^ model_keys
                  if not k.startswith(model.unbuilt_prefixes()) and not k.endswith('.num_batches_tracked')]
    last = model.stage4_cfg['num_modules'] - 1
    units = (*_CLASSIFIER_MODULES, *(f'incre_modules.{b}.' for b in range(4)),
             *(f'stage4.{last}.fuse_layers.{b}.' for b in range(4)))
    missing = [k for k in mismatched if k in model_keys]
    fits = []
    if missing and all(k.startswith(units) for k in mismatched):
        present = {u for u in units if any(k.startswith(u) for k in keys)}
        fits = sorted((name for name, spec in _HEAD_SPECS.items() if all(
            u in present for u in units if not u.startswith(_unbuilt_prefixes(spec, spec.branches, last)))),
            key=lambda h: h != layout.head)
    if not fits or model.head in fits:  # a checkpoint missing keys of modules it has: no head to advise
        return ''
    hint = f' It has the modules of head={fits[0]!r}' + (
        f' (also fits {", ".join(repr(h) for h in fits[1:])})' if fits[1:] else '')
    if isinstance(model, features.HighResolutionNetFeatures):
        spec = _HEAD_SPECS[fits[0]]
        hint += (f": with features_only, use feature_location={'incre' if spec.incre else ''!r}, "
                 f"out_indices={(0, *(b + 1 for b in spec.branches))}.")
    else:
        hint += ': use that head.'
    return hint


ENTRYPOINTS: Dict[str, Callable] = {}  # the registered entrypoints by model name: the model module's, with the policy


def register() -> Dict[str, Callable]:
    """ Register each entrypoint of the model module (as it is now: also after a reload) with this policy around it,
    in place of any registration of its name."""
    ENTRYPOINTS.update({name: register_model(with_policy(getattr(hrnet, name))) for name in hrnet.default_cfgs})
    return ENTRYPOINTS
