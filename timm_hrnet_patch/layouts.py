""" Checkpoint layouts: HRNet weights saved by other releases, mapped onto timm's keys.

Each layout (`_CHECKPOINT_LAYOUTS`) names a release's key renames onto timm's, the keys of its own task's modules that
timm drops, and the convs it has without bias, the way OpenMMLab's `tools/model_converters` sit beside its models.
`checkpoint_filter_fn` is the pretrained filter of the package's models (`model.py`): it maps a checkpoint of any
layout, drops the keys of modules the model was built without, and checks the rest strictly. It reads a model's
`head`, `upsample_mode`, `num_classes`, `pretrained_cfg` and `unbuilt_prefixes()`.
"""
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['UnknownLayoutError', 'checkpoint_filter_fn']

_logger = logging.getLogger('timm_hrnet_patch.hrnet')


def _format_keys(keys: List[str], limit: int = 10) -> str:
    keys = sorted(keys)
    more = f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


@dataclass(frozen=True)
class _CheckpointLayout:
    """ How a release lays out HRNet's weights: its key renames onto timm's, the keys of its own task's modules that
    timm drops, and the head convs whose bias it lacks, as each project's public source has them. In patterns, '*'
    stands for a module index.
    """
    name: str
    what: str  # what the checkpoint is, for reports
    head: str  # the timm head whose modules its model has (the most it can load into)
    # what identifies its state dicts: a key with each of these prefixes ('a|b': a key with a, or one with b)
    signature: Tuple[str, ...]
    renames: Tuple[Tuple[str, str], ...] = ()  # (its key prefix, timm's), the first that matches applies
    drops: Tuple[Tuple[str, str], ...] = ()  # (its key prefix, what that module is): dropped on load
    # (timm conv prefix, its BatchNorm's prefix) of convs the layout has without bias: loaded with a zero bias,
    # which is exactly its model (a conv without bias); converting to it folds the bias into the BN running_mean
    no_bias: Tuple[Tuple[str, str], ...] = ()
    upsample_modes: Tuple[str, ...] = ('nearest',)  # its models' fuse upsampling (_UPSAMPLE_MODES), default first


_OPENMMLAB_DROPS = (('data_preprocessor.', 'input normalisation buffers'),)
_CHECKPOINT_LAYOUTS: Dict[str, _CheckpointLayout] = {layout.name: layout for layout in (
    # the detection order: the first layout whose signature a state dict has is taken
    _CheckpointLayout(
        'hrnet-seg', 'HRNet-Semantic-Segmentation trained model', 'concat',
        ('model.conv1.weight', 'model.last_layer.|model.cls_head.'),
        renames=(('model.', ''),),
        drops=(('model.last_layer.', 'segmentation head'), ('model.aux_head.', 'OCR auxiliary head'),
               ('model.conv3x3_ocr.', 'OCR head'), ('model.ocr_distri_head.', 'OCR head'),
               ('model.cls_head.', 'OCR head'), ('loss.', 'loss class weights')),
        upsample_modes=('bilinear_aligned', 'bilinear')),  # MODEL.ALIGN_CORNERS True (default) or False
    _CheckpointLayout(
        'pose_hrnet', 'deep-high-resolution-net pose model (HRNetV1 backbone)', 'high_res',
        ('conv1.weight', 'final_layer.weight'), drops=(('final_layer.', 'keypoint head'),)),
    _CheckpointLayout('timm', 'timm or HRNet-Image-Classification model', 'classification', ('conv1.weight',)),
    _CheckpointLayout(
        'mmpretrain', 'mmpretrain classifier', 'classification', ('backbone.conv1.weight', 'neck.0.increase_layers.'),
        renames=(('backbone.', ''), ('neck.0.increase_layers.', 'incre_modules.'),
                 ('neck.0.downsample_layers.*.conv.', 'downsamp_modules.*.0.'),
                 ('neck.0.downsample_layers.*.bn.', 'downsamp_modules.*.1.'),
                 ('neck.0.final_layer.conv.', 'final_layer.0.'), ('neck.0.final_layer.bn.', 'final_layer.1.'),
                 ('head.fc.', 'classifier.')),
        drops=_OPENMMLAB_DROPS,
        no_bias=(('downsamp_modules.*.0.', 'downsamp_modules.*.1.'), ('final_layer.0.', 'final_layer.1.'))),
    _CheckpointLayout(
        'mmseg', 'mmsegmentation segmentor', 'concat', ('backbone.conv1.weight', 'decode_head.'),
        renames=(('backbone.', ''),),
        drops=(('decode_head.', 'decode head'), ('auxiliary_head.', 'auxiliary head'), *_OPENMMLAB_DROPS),
        upsample_modes=('bilinear',)),
    _CheckpointLayout(
        'mmpose', 'mmpose top-down model (HRNetV1 backbone)', 'high_res',
        ('backbone.conv1.weight', 'head.final_layer.'),
        renames=(('backbone.', ''),), drops=(('head.', 'keypoint head'), *_OPENMMLAB_DROPS)),
    _CheckpointLayout(
        'mmpose-0.x', 'mmpose 0.x top-down model (HRNetV1 backbone)', 'high_res',
        ('backbone.conv1.weight', 'keypoint_head.final_layer.'),
        renames=(('backbone.', ''),), drops=(('keypoint_head.', 'keypoint head'),)),
)}


def _pattern(prefix: str) -> str:
    """ The regex of a _CheckpointLayout key prefix: each '*' a module index, captured."""
    return re.escape(prefix).replace(r'\*', r'(\d+)')


def _rename(key: str, renames: Sequence[Tuple[str, str]]) -> str:
    """ key with the first matching (prefix, replacement) applied; '*' in them is a module index."""
    for src, dst in renames:
        m = re.match(_pattern(src), key)
        if m:
            for index in m.groups():
                dst = dst.replace('*', index, 1)
            return dst + key[m.end():]
    return key


def _unwrap(checkpoint: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, List[str]]]:
    """ The state dict inside a 'state_dict' / 'model' container, 'module.' (DataParallel, DDP) stripped, and what
    was left around it."""
    dropped = {}
    for container in ('state_dict', 'model'):
        if isinstance(checkpoint.get(container), dict):
            dropped = {f"dropped: entries beside '{container}' (training state)":
                       sorted(k for k in checkpoint if k != container)}
            checkpoint = checkpoint[container]
            break
    if any(k.startswith('module.') for k in checkpoint):
        dropped["stripped: 'module.' prefixes (DataParallel / DDP)"] = ['module.*']
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in checkpoint.items()}, dropped


class UnknownLayoutError(RuntimeError):
    """ A checkpoint in none of the _CHECKPOINT_LAYOUTS layouts."""


_ZERO_BIASES = 'added: zero biases of convs {} has without bias (the same function)'


def _map_checkpoint(
        checkpoint: Dict[str, Any],
        layout: Optional[str] = None,
) -> Tuple[_CheckpointLayout, Dict[str, Any], Dict[str, List[str]]]:
    """ A checkpoint of any _CHECKPOINT_LAYOUTS layout (`layout`, or the first whose signature it has) in timm's keys.

    Returns the layout, the state dict with timm's keys (no key of the layout's other modules; the zero biases its
    convs lack added), and what was dropped or added, by reason. Raises ValueError for an unknown layout name and an
    UnknownLayoutError (a RuntimeError) naming the first keys when no known layout matches.
    """
    if layout is not None and layout not in _CHECKPOINT_LAYOUTS:
        raise ValueError(f'Unknown HRNet checkpoint layout {layout!r}, known: {", ".join(_CHECKPOINT_LAYOUTS)}.')
    state_dict, notes = _unwrap(checkpoint)
    if layout is None:
        layout = next((n for n, lay in _CHECKPOINT_LAYOUTS.items() if all(
            any(k.startswith(tuple(p.split('|'))) for k in state_dict) for p in lay.signature)), None)
        if layout is None:
            raise UnknownLayoutError(
                f'Checkpoint layout not recognised, first keys: {", ".join(list(state_dict)[:5])}. Known layouts: '
                + '; '.join(f"{n} ({lay.what}: keys {' and '.join(p.replace('|', ' or ') for p in lay.signature)})"
                            for n, lay in _CHECKPOINT_LAYOUTS.items()) + '.')
    spec = _CHECKPOINT_LAYOUTS[layout]
    mapped = {}
    for key, value in state_dict.items():
        what = next((w for p, w in spec.drops if key.startswith(p)), None)
        if what:
            notes.setdefault(f'dropped: {what} ({spec.name})', []).append(key)
        else:
            mapped[_rename(key, spec.renames)] = value
    for conv, _ in spec.no_bias:
        for key in [k for k in mapped if re.fullmatch(_pattern(conv) + 'weight', k)]:
            bias = key[:-len('weight')] + 'bias'
            if bias not in mapped and isinstance(mapped[key], torch.Tensor) and mapped[key].dim():  # else refused
                mapped[bias] = mapped[key].new_zeros(mapped[key].shape[0])
                notes.setdefault(_ZERO_BIASES.format(spec.name), []).append(bias)
    return spec, mapped, notes


def checkpoint_filter_fn(
        state_dict: Dict[str, Any],
        model: nn.Module,
        strict: bool = True,
        layout: Optional[str] = None,
) -> Dict[str, torch.Tensor]:
    """ Fit an HRNet checkpoint of any _CHECKPOINT_LAYOUTS layout to a model's head.

    Unwraps 'state_dict' / 'model' containers and a 'module.' prefix, maps the layout's keys onto timm's
    (_map_checkpoint; `layout` forces one, default: detected; what it drops or adds is logged at INFO), then drops
    exactly the keys of the modules the model was built without (model.unbuilt_prefixes(): head modules its head
    does not use, the fuse layers and incre modules of outputs it does not compute).

    The rest must then match the model: with strict=True a missing or unexpected key raises a RuntimeError that
    names them, with strict=False they are logged as a warning and the unexpected ones dropped. Classifier keys are
    exempt when the model's num_classes differs from the pretrained cfg's, timm then re-initialises it, and so are
    missing BatchNorm `num_batches_tracked` counters, which torch's load fills in.
    """
    try:
        layout, state_dict, notes = _map_checkpoint(state_dict, layout)
    except UnknownLayoutError as e:
        if strict:
            raise
        _logger.warning(f'{e} Loading non-strict: its keys are taken as they are (timm layout).')
        layout, state_dict, notes = _map_checkpoint(state_dict, 'timm')
    if layout.name != 'timm' or notes:
        _logger.info(f'Loading a {layout.what} ({layout.name} layout): '
                     + '; '.join(f'{reason} ({len(keys)})' for reason, keys in notes.items()))
    if model.upsample_mode not in layout.upsample_modes:
        _logger.warning(
            f"The {layout.name} layout's models ({layout.what}) upsample in their fuse layers as upsample_mode="
            f"{' or '.join(map(repr, layout.upsample_modes))}, this model as {model.upsample_mode!r}: the weights "
            f"load, but its maps differ from the source model's. Create the model with upsample_mode="
            f"{layout.upsample_modes[0]!r} to compute what it computed.")
    model_keys = set(model.state_dict())
    # zero biases of convs the model has without bias as well (the _ssld variants' head)
    state_dict = {k: v for k, v in state_dict.items() if k in model_keys or k not in notes.get(
        _ZERO_BIASES.format(layout.name), ())}
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(model.unbuilt_prefixes())}
    # BatchNorm counters, which norms with BatchNorm's other parameters may lack (FrozenBatchNorm2d)
    state_dict = {k: v for k, v in state_dict.items() if k in model_keys or not k.endswith('.num_batches_tracked')}

    exempt = set()
    pretrained_classes = getattr(model, 'pretrained_cfg', None) or {}
    if model.num_classes != pretrained_classes.get('num_classes', model.num_classes):
        exempt = {k for k in set(state_dict) | model_keys if k.startswith('classifier.')}
    # BatchNorm counters that old checkpoints (e.g. the MSRA releases) lack are filled in by torch's load
    missing = sorted(k for k in model_keys - set(state_dict) - exempt if not k.endswith('.num_batches_tracked'))
    unexpected = sorted(set(state_dict) - model_keys - exempt)
    if missing or unexpected:
        arch = pretrained_classes.get('architecture') or type(model).__name__
        msg = f"Checkpoint ({layout.what}, {layout.name} layout) does not match {arch} (head={model.head!r}):"
        if missing:
            msg += f' missing keys ({len(missing)}): {_format_keys(missing)}.'
        if unexpected:
            msg += f' unexpected keys ({len(unexpected)}): {_format_keys(unexpected)}.'
        if strict:
            raise RuntimeError(msg + ' Pass pretrained_strict=False to load it anyway.')
        _logger.warning(msg + ' Loading non-strict: missing weights keep their random init, unexpected are dropped.')
        state_dict = {k: v for k, v in state_dict.items() if k not in unexpected}
    return state_dict
