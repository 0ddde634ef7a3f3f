""" Pretrained builds without random init: timm's build_model_with_cfg, with the model built on the meta device and
the checkpoint's tensors taking the place of the empty ones (no init for the checkpoint to overwrite, no second copy
of the weights).

This is the package's, not part of the fix proposed upstream: the model module imports it in place of timm's
builder function, and `timm-hrnet-patch upstream-diff` swaps that import back.
"""
import os
import pickle
import zipfile
from contextlib import contextmanager
from typing import Iterator

import safetensors

import torch
import torch.nn as nn

from timm.models import _builder
from ._compat import load_pretrained, weights_only_unpickling

__all__ = ['build_model_with_cfg']


def build_model_with_cfg(model_cls: type, variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """ timm's build_model_with_cfg, same arguments and result.

    Pickled weights are unpickled with weights_only=True on every torch and timm: a pickle that would run code is
    refused with a RuntimeError. A pretrained model (not features_only, no device given) is built on the meta device,
    then loaded through timm's load_pretrained, taking the checkpoint's tensors (cast to the model's dtypes).
    Whatever the load leaves on meta (a resized classifier, keys a loose load lacked) is materialised on the CPU and
    initialised as a fresh build does: reset_parameters(), then the model's `_init_weights(module)` where it has one.
    """
    if not pretrained:
        return _builder.build_model_with_cfg(model_cls, variant, False, **kwargs)
    pretrained_cfg = _builder.resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
    )
    if pretrained_cfg.file:
        check_weights_file(str(pretrained_cfg.file), variant)
    if kwargs.get('features_only') or kwargs.get('device') is not None:
        with weights_only_unpickling(variant):
            return _builder.build_model_with_cfg(model_cls, variant, True, **kwargs)
    with torch.device('meta'):
        model = _builder.build_model_with_cfg(model_cls, variant, False, **kwargs)
    with _assigning_load(model), weights_only_unpickling(variant):
        load_pretrained(
            model,
            pretrained_cfg=model.pretrained_cfg,
            num_classes=model.num_classes,
            in_chans=kwargs.get('in_chans', 3),
            filter_fn=kwargs.get('pretrained_filter_fn'),
            strict=kwargs.get('pretrained_strict', True),
            cache_dir=kwargs.get('cache_dir'),
        )
    init_module = getattr(model, '_init_weights', None)
    for m in model.modules():
        if any(t.is_meta for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]):
            m.to_empty(device='cpu', recurse=False)
            if hasattr(m, 'reset_parameters'):
                m.reset_parameters()
            if init_module is not None:
                init_module(m)
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
            with safetensors.safe_open(path, 'pt') as f:
                for key in f.keys():
                    f.get_slice(key)  # the header's offsets are checked against the file size
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
