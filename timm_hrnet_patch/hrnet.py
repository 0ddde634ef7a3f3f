""" HRNet

Papers:
* `Deep High-Resolution Representation Learning for Visual Recognition` - https://arxiv.org/abs/1908.07919
* `Beyond Self-Supervision: A Simple Yet Effective Network Distillation Alternative to Improve Backbones` - https://arxiv.org/abs/2103.05959

Copied from https://github.com/HRNet/HRNet-Image-Classification

Original header:
  Copyright (c) Microsoft
  Licensed under the MIT License.
  Written by Bin Xiao (Bin.Xiao@microsoft.com)
  Modified by Ke Sun (sunk@mail.ustc.edu.cn)
"""
import logging
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models._builder import build_model_with_cfg, pretrained_cfg_for_features
from timm.models._features import FeatureInfo
from timm.models._registry import generate_default_cfgs
from ._compat import (  # older timm lacks some of these, timm >= 1.0.31 provides them all
    BasicBlock, Bottleneck, create_classifier, feature_take_indices, get_device_dtype, register_model)

__all__ = ['HighResolutionNet', 'HighResolutionNetFeatures']  # model_registry will add each entrypoint fn to this

_BN_MOMENTUM = 0.1
_logger = logging.getLogger(__name__)

_TRUNK = ('conv2', 'bn2', 'act2', 'layer1', 'transition1', 'stage2', 'transition2', 'stage3', 'transition3', 'stage4')
_CLASSIFIER_MODULES = ('downsamp_modules.', 'final_layer.', 'classifier.')  # key prefixes of the classification head
_INCRE_CHS = (128, 256, 512, 1024)  # incre module output channels per branch (Bottleneck, 4x expansion)
_OUTPUT_STRIDES = (8, 16, 32)
# upsample_mode: F.interpolate kwargs of the fuse layers' upsampling; the 'concat' head upsamples bilinearly, with
# align_corners=True for 'bilinear_aligned' only. The releases differ (_CHECKPOINT_LAYOUTS): the classification and
# pose models use 'nearest', the segmentation models 'bilinear' or 'bilinear_aligned'.
_UPSAMPLE_MODES: Dict[str, Dict[str, Any]] = {
    'nearest': dict(mode='nearest'),
    'bilinear': dict(mode='bilinear', align_corners=False),
    'bilinear_aligned': dict(mode='bilinear', align_corners=True),
}


def _branch_dilations(output_stride: int) -> Tuple[int, ...]:
    """ Dilation of the convolutions of each branch (nominal strides 4, 8, 16, 32): the branches below the output
    stride stay at it, and dilate to keep their receptive field, as timm's ResNet does."""
    return tuple(max(1, 4 * 2 ** b // output_stride) for b in range(4))


def _step(dilations: Sequence[int], src: int, dst: int) -> Dict[str, int]:
    """ Conv2d kwargs of a 3x3 conv from branch src's resolution to branch dst's (src + 1, or src itself): stride 2
    down to the next branch unless the output stride keeps that one at src's resolution, then stride 1; dilated as
    src's convolutions (all 1, stride 2 at output_stride=32)."""
    d = dilations[src]
    return dict(stride=2 if dst > src and dilations[dst] == d else 1, padding=d, dilation=d)


@dataclass(frozen=True)
class _HeadSpec:
    """ An HRNet head: the modules it builds on the final stage's branch maps and what forward_features returns.

    The one place a head is defined: construction, forward, num_features, feature_info, reset_classifier,
    prune_intermediate_layers and checkpoint_filter_fn all read it from _HEAD_SPECS[model.head].
    """
    incre: bool  # incre_modules: each branch map through a Bottleneck to _INCRE_CHS channels
    classifier: bool  # downsamp_modules + final_layer (one 2048-channel stride 32 map), then pooling + classifier
    branches: Tuple[int, ...]  # final-stage branch maps it uses, 0-3 at strides 4-32 (features_only may take fewer)
    output: str  # forward_features: 'final' (final_layer's map), 'maps' (list), 'first' (branch 0's map), 'concat'

    def num_features(self, map_chs: List[int]) -> int:
        """ Channels of forward_features' output (the last map for 'maps'), from the channels of the maps built."""
        if self.classifier:
            return 2048
        return sum(map_chs) if self.output == 'concat' else map_chs[-1]


_HEAD_SPECS: Dict[str, _HeadSpec] = {
    'classification': _HeadSpec(incre=True, classifier=True, branches=(0, 1, 2, 3), output='final'),
    'incre': _HeadSpec(incre=True, classifier=False, branches=(0, 1, 2, 3), output='maps'),
    '': _HeadSpec(incre=False, classifier=False, branches=(0, 1, 2, 3), output='maps'),
    # HRNetV1 (Wang et al., TPAMI 2020): the stride 4 branch only, as pose models use it
    'high_res': _HeadSpec(incre=False, classifier=False, branches=(0,), output='first'),
    # HRNetV2 (same paper): the four branch maps upsampled to stride 4 (bilinear) and concatenated, 15C channels
    'concat': _HeadSpec(incre=False, classifier=False, branches=(0, 1, 2, 3), output='concat'),
}
_HEADS = tuple(_HEAD_SPECS)  # valid `head` values, None is an alias of ''
_FEATURE_LOCATIONS = ('incre', '')  # valid features_only `feature_location` values: the heads whose maps it returns


cfg_cls = dict(
    hrnet_w18_small=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(1,),
            num_channels=(32,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(2, 2),
            num_channels=(16, 32),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=1,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(2, 2, 2),
            num_channels=(16, 32, 64),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=1,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(2, 2, 2, 2),
            num_channels=(16, 32, 64, 128),
            fuse_method='SUM',
        ),
    ),

    hrnet_w18_small_v2=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(2,),
            num_channels=(64,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(2, 2),
            num_channels=(18, 36),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=3,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(2, 2, 2),
            num_channels=(18, 36, 72),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=2,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(2, 2, 2, 2),
            num_channels=(18, 36, 72, 144),
            fuse_method='SUM',
        ),
    ),

    hrnet_w18=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(4,),
            num_channels=(64,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(4, 4),
            num_channels=(18, 36),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=4,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(4, 4, 4),
            num_channels=(18, 36, 72),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=3,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(4, 4, 4, 4),
            num_channels=(18, 36, 72, 144),
            fuse_method='SUM',
        ),
    ),

    hrnet_w30=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(4,),
            num_channels=(64,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(4, 4),
            num_channels=(30, 60),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=4,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(4, 4, 4),
            num_channels=(30, 60, 120),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=3,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(4, 4, 4, 4),
            num_channels=(30, 60, 120, 240),
            fuse_method='SUM',
        ),
    ),

    hrnet_w32=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(4,),
            num_channels=(64,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(4, 4),
            num_channels=(32, 64),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=4,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(4, 4, 4),
            num_channels=(32, 64, 128),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=3,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(4, 4, 4, 4),
            num_channels=(32, 64, 128, 256),
            fuse_method='SUM',
        ),
    ),

    hrnet_w40=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(4,),
            num_channels=(64,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(4, 4),
            num_channels=(40, 80),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=4,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(4, 4, 4),
            num_channels=(40, 80, 160),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=3,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(4, 4, 4, 4),
            num_channels=(40, 80, 160, 320),
            fuse_method='SUM',
        ),
    ),

    hrnet_w44=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(4,),
            num_channels=(64,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(4, 4),
            num_channels=(44, 88),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=4,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(4, 4, 4),
            num_channels=(44, 88, 176),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=3,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(4, 4, 4, 4),
            num_channels=(44, 88, 176, 352),
            fuse_method='SUM',
        ),
    ),

    hrnet_w48=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(4,),
            num_channels=(64,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(4, 4),
            num_channels=(48, 96),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=4,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(4, 4, 4),
            num_channels=(48, 96, 192),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=3,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(4, 4, 4, 4),
            num_channels=(48, 96, 192, 384),
            fuse_method='SUM',
        ),
    ),

    hrnet_w64=dict(
        stem_width=64,
        stage1=dict(
            num_modules=1,
            num_branches=1,
            block_type='BOTTLENECK',
            num_blocks=(4,),
            num_channels=(64,),
            fuse_method='SUM',
        ),
        stage2=dict(
            num_modules=1,
            num_branches=2,
            block_type='BASIC',
            num_blocks=(4, 4),
            num_channels=(64, 128),
            fuse_method='SUM'
        ),
        stage3=dict(
            num_modules=4,
            num_branches=3,
            block_type='BASIC',
            num_blocks=(4, 4, 4),
            num_channels=(64, 128, 256),
            fuse_method='SUM'
        ),
        stage4=dict(
            num_modules=3,
            num_branches=4,
            block_type='BASIC',
            num_blocks=(4, 4, 4, 4),
            num_channels=(64, 128, 256, 512),
            fuse_method='SUM',
        ),
    )
)


def _unbuilt_prefixes(spec: _HeadSpec, branch_outputs: Sequence[int], last_module: int) -> Tuple[str, ...]:
    """ HighResolutionNet.unbuilt_prefixes() of a model with head `spec` computing `branch_outputs`, whose stage 4
    has `last_module` + 1 modules."""
    prefixes = [] if spec.classifier else list(_CLASSIFIER_MODULES)
    not_taken = [b for b in range(4) if b not in branch_outputs]
    if not branch_outputs:
        prefixes += [f'{n}.' for n in _TRUNK]
    elif not_taken:
        prefixes += [f'stage4.{last_module}.fuse_layers.{b}.' for b in not_taken]
    prefixes += [f'incre_modules.{b}.' for b in not_taken] if spec.incre else ['incre_modules.']
    return tuple(prefixes)


class HighResolutionModule(nn.Module):
    def __init__(
            self,
            num_branches: int,
            block_types: Type[nn.Module],
            num_blocks: Tuple[int, ...],
            num_in_chs: List[int],
            num_channels: Tuple[int, ...],
            fuse_method: str,
            multi_scale_output: bool = True,
            outputs: Optional[Sequence[int]] = None,
            dilations: Sequence[int] = (1, 1, 1, 1),
            upsample_mode: str = 'nearest',
            device=None,
            dtype=None,
    ):
        """ outputs: the branches whose fused maps forward returns (default: all, or only 0 when not
        multi_scale_output); only their fuse layers are built, the others' slots hold an nn.Identity.
        dilations: of each branch's convolutions (output_stride < 32, see _branch_dilations).
        upsample_mode: how the fuse layers upsample the lower resolution maps, an _UPSAMPLE_MODES key. """
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self._check_branches(
            num_branches,
            block_types,
            num_blocks,
            num_in_chs,
            num_channels,
        )

        self.num_in_chs = num_in_chs
        self.fuse_method = fuse_method
        self.num_branches = num_branches

        self.multi_scale_output = multi_scale_output
        self.dilations = tuple(dilations)
        self.upsample = _UPSAMPLE_MODES[upsample_mode]
        if outputs is None:
            outputs = range(num_branches) if multi_scale_output else (0,)
        self.outputs = tuple(sorted(outputs))

        self.branches = self._make_branches(
            num_branches,
            block_types,
            num_blocks,
            num_channels,
            **dd,
        )
        self.fuse_layers = self._make_fuse_layers(**dd)
        self.fuse_act = nn.ReLU(False)

    def _check_branches(self, num_branches, block_types, num_blocks, num_in_chs, num_channels):
        error_msg = ''
        if num_branches != len(num_blocks):
            error_msg = 'num_branches({}) <> num_blocks({})'.format(num_branches, len(num_blocks))
        elif num_branches != len(num_channels):
            error_msg = 'num_branches({}) <> num_channels({})'.format(num_branches, len(num_channels))
        elif num_branches != len(num_in_chs):
            error_msg = 'num_branches({}) <> num_in_chs({})'.format(num_branches, len(num_in_chs))
        if error_msg:
            _logger.error(error_msg)
            raise ValueError(error_msg)

    def _make_one_branch(self, branch_index, block_type, num_blocks, num_channels, stride=1, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        downsample = None
        if stride != 1 or self.num_in_chs[branch_index] != num_channels[branch_index] * block_type.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.num_in_chs[branch_index],
                    num_channels[branch_index] * block_type.expansion,
                    kernel_size=1,
                    stride=stride,
                    bias=False,
                    **dd,
                ),
                nn.BatchNorm2d(num_channels[branch_index] * block_type.expansion, momentum=_BN_MOMENTUM, **dd),
            )

        d = dict(dilation=self.dilations[branch_index], first_dilation=self.dilations[branch_index], **dd)
        layers = [block_type(self.num_in_chs[branch_index], num_channels[branch_index], stride, downsample, **d)]
        self.num_in_chs[branch_index] = num_channels[branch_index] * block_type.expansion
        for i in range(1, num_blocks[branch_index]):
            layers.append(block_type(self.num_in_chs[branch_index], num_channels[branch_index], **d))

        return nn.Sequential(*layers)

    def _make_branches(self, num_branches, block_type, num_blocks, num_channels, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        branches = []
        for i in range(num_branches):
            branches.append(self._make_one_branch(i, block_type, num_blocks, num_channels, **dd))

        return nn.ModuleList(branches)

    def _make_fuse_layers(self, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        if self.num_branches == 1:
            return nn.Identity()

        num_branches = self.num_branches
        num_in_chs = self.num_in_chs
        fuse_layers = []
        for i in range(max(self.outputs) + 1):
            if i not in self.outputs:
                fuse_layers.append(nn.Identity())  # keeps the built ones at their index (checkpoint keys)
                continue
            fuse_layer = []
            for j in range(num_branches):
                if j > i:
                    # upsampled to branch i's size in forward(), a fixed scale factor fails for odd sizes
                    fuse_layer.append(nn.Sequential(
                        nn.Conv2d(num_in_chs[j], num_in_chs[i], 1, 1, 0, bias=False, **dd),
                        nn.BatchNorm2d(num_in_chs[i], momentum=_BN_MOMENTUM, **dd)))
                elif j == i:
                    fuse_layer.append(nn.Identity())
                else:
                    conv3x3s = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            num_out_chs_conv3x3 = num_in_chs[i]
                            conv3x3s.append(nn.Sequential(
                                nn.Conv2d(num_in_chs[j], num_out_chs_conv3x3, 3, bias=False,
                                          **_step(self.dilations, j + k, j + k + 1), **dd),
                                nn.BatchNorm2d(num_out_chs_conv3x3, momentum=_BN_MOMENTUM, **dd)
                            ))
                        else:
                            num_out_chs_conv3x3 = num_in_chs[j]
                            conv3x3s.append(nn.Sequential(
                                nn.Conv2d(num_in_chs[j], num_out_chs_conv3x3, 3, bias=False,
                                          **_step(self.dilations, j + k, j + k + 1), **dd),
                                nn.BatchNorm2d(num_out_chs_conv3x3, momentum=_BN_MOMENTUM, **dd),
                                nn.ReLU(False)
                            ))
                    fuse_layer.append(nn.Sequential(*conv3x3s))
            fuse_layers.append(nn.ModuleList(fuse_layer))

        return nn.ModuleList(fuse_layers)

    def get_num_in_chs(self):
        return self.num_in_chs

    def forward(self, x: List[torch.Tensor]) -> List[torch.Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]

        for i, branch in enumerate(self.branches):
            x[i] = branch(x[i])

        x_fuse = []
        for i, fuse_outer in enumerate(self.fuse_layers):
            if isinstance(fuse_outer, nn.Identity):
                continue  # an output not taken, its fuse layers are not built
            y = None
            for j, f in enumerate(fuse_outer):
                z = f(x[j])
                if j > i:
                    z = F.interpolate(z, size=x[i].shape[-2:], **self.upsample)
                y = z if y is None else y + z
            x_fuse.append(self.fuse_act(y))
        return x_fuse


@contextmanager
def _running_stats_kept(module: nn.Module):
    """ The BatchNorm layers of `module` run as they are (batch statistics in training) but leave their running
    statistics and counters as they were: checkpoint's recompute must not update them a second time. Momentum 0
    keeps the recompute's ops those of the forward, so checkpoint's recompute check holds."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    kept = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, kept):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def _checkpoint(module: nn.Module, x: Union[torch.Tensor, List[torch.Tensor]]):
    """ module(x), its activations recomputed in backward instead of stored. A training step updates BatchNorm
    running statistics once, as without checkpointing (the recompute runs under _running_stats_kept). A list x
    (the branch maps of a HighResolutionModule, which updates its input list) is passed as a new list each time."""
    if isinstance(x, torch.Tensor):
        fn, args = module, (x,)
    else:
        fn, args = (lambda *xs: module(list(xs))), tuple(x)
    if torch._dynamo.is_compiling():  # torch.compile recomputes in its own graph, without the stats' update
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return torch.utils.checkpoint.checkpoint(
        fn, *args, use_reentrant=False, context_fn=lambda: (nullcontext(), _running_stats_kept(module)))


class SequentialList(nn.Sequential):

    def __init__(self, *args):
        super().__init__(*args)

    def forward(self, x) -> List[torch.Tensor]:
        for module in self:
            x = module(x)
        return x


block_types_dict = {
    'BASIC': BasicBlock,
    'BOTTLENECK': Bottleneck
}


class HighResolutionNet(nn.Module):

    def __init__(
            self,
            cfg: Dict,
            in_chans: int = 3,
            num_classes: int = 1000,
            output_stride: int = 32,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            head: str = 'classification',
            branch_outputs: Optional[Sequence[int]] = None,
            upsample_mode: str = 'nearest',
            device=None,
            dtype=None,
            **kwargs,
    ):
        """
        Args:
            cfg: Architecture cfg (stem_width, stage1-4), never mutated; kwargs override its entries.
            head: 'classification' (logits), 'incre' (list of 4 incre module maps), '' (list of 4 branch maps),
                'high_res' (the stride 4 map, HRNetV1) or 'concat' (the 4 maps concatenated at stride 4, HRNetV2),
                see _HEAD_SPECS. None is an alias of ''. num_classes, global_pool and drop_rate apply to
                'classification' only.
            branch_outputs: the head's final-stage branches (0-3) to compute, default all the head uses. Only
                what these outputs need is built (features_only out_indices), so every parameter gets a gradient.
            upsample_mode: the fuse layers' upsampling, see _UPSAMPLE_MODES: 'nearest' (timm's weights), 'bilinear'
                or 'bilinear_aligned' (the segmentation models'). The parameters are the same.

        Raises:
            ValueError: unknown head or upsample_mode, invalid branch_outputs or output_stride (8, 16, 32).
            TypeError: kwargs that are not architecture cfg entries.
        """
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        head = '' if head is None else head
        if not isinstance(head, str) or head not in _HEADS:
            raise ValueError(f"Unknown HRNet head {head!r}, valid values are {_HEADS} (None is an alias of '').")
        spec = _HEAD_SPECS[head]
        branch_outputs = spec.branches if branch_outputs is None else tuple(sorted(set(branch_outputs)))
        if not set(branch_outputs) <= set(spec.branches) or (spec.classifier and branch_outputs != spec.branches):
            raise ValueError(
                f'HRNet head={head!r} computes branch_outputs from {spec.branches}'
                f'{" (all of them)" if spec.classifier else ""}, got {branch_outputs}.')
        if output_stride not in _OUTPUT_STRIDES:
            raise ValueError(f'HRNet supports output_stride {_OUTPUT_STRIDES}, got {output_stride!r}.')
        if upsample_mode not in _UPSAMPLE_MODES:
            raise ValueError(
                f'Unknown HRNet upsample_mode {upsample_mode!r}, valid values are {tuple(_UPSAMPLE_MODES)}.')
        self.output_stride = output_stride
        self.dilations = _branch_dilations(output_stride)
        self.upsample_mode = upsample_mode
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.in_chans = in_chans

        # kwargs override entries of the arch cfg, copied so the shared cfg is not mutated
        unknown_kwargs = set(kwargs) - set(cfg) - {'head_conv_bias'}
        if unknown_kwargs:
            raise TypeError(
                f'{type(self).__name__}.__init__() got unexpected keyword argument(s): {sorted(unknown_kwargs)}')
        cfg = dict(cfg, **kwargs)
        stem_width = cfg['stem_width']
        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=2, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(stem_width, momentum=_BN_MOMENTUM, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(stem_width, 64, kernel_size=3, stride=2, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(64, momentum=_BN_MOMENTUM, **dd)
        self.act2 = nn.ReLU(inplace=True)

        self.stage1_cfg = cfg['stage1']
        num_channels = self.stage1_cfg['num_channels'][0]
        block_type = block_types_dict[self.stage1_cfg['block_type']]
        num_blocks = self.stage1_cfg['num_blocks'][0]
        self.layer1 = self._make_layer(block_type, 64, num_channels, num_blocks, **dd)
        stage1_out_channel = block_type.expansion * num_channels

        self.stage2_cfg = cfg['stage2']
        num_channels = self.stage2_cfg['num_channels']
        block_type = block_types_dict[self.stage2_cfg['block_type']]
        num_channels = [num_channels[i] * block_type.expansion for i in range(len(num_channels))]
        self.transition1 = self._make_transition_layer([stage1_out_channel], num_channels, **dd)
        self.stage2, pre_stage_channels = self._make_stage(self.stage2_cfg, num_channels, **dd)

        self.stage3_cfg = cfg['stage3']
        num_channels = self.stage3_cfg['num_channels']
        block_type = block_types_dict[self.stage3_cfg['block_type']]
        num_channels = [num_channels[i] * block_type.expansion for i in range(len(num_channels))]
        self.transition2 = self._make_transition_layer(pre_stage_channels, num_channels, **dd)
        self.stage3, pre_stage_channels = self._make_stage(self.stage3_cfg, num_channels, **dd)

        self.stage4_cfg = cfg['stage4']
        num_channels = self.stage4_cfg['num_channels']
        block_type = block_types_dict[self.stage4_cfg['block_type']]
        num_channels = [num_channels[i] * block_type.expansion for i in range(len(num_channels))]
        self.transition3 = self._make_transition_layer(pre_stage_channels, num_channels, **dd)
        self.stage4, pre_stage_channels = self._make_stage(
            self.stage4_cfg, num_channels, outputs=branch_outputs or (0,), **dd)
        if not branch_outputs:  # only the stem is taken: the trunk would go unused
            for n in _TRUNK:
                setattr(self, n, nn.Identity())

        self.head = head
        self.branch_outputs = branch_outputs
        map_chs = list(_INCRE_CHS) if spec.incre else pre_stage_channels
        # module names aren't actually valid here, hook or FeatureNet based extraction would not work
        self.feature_info = [dict(num_chs=stem_width, reduction=2, module='stem')] + [
            dict(num_chs=map_chs[b], reduction=4 * 2 ** b // self.dilations[b], module=f'stage{b + 1}')
            for b in spec.branches]
        self.num_branches = len(self.feature_info) - 1  # final stage branches, feature taps are the stem + branches
        self.head_channels = [c // Bottleneck.expansion for c in _INCRE_CHS] if spec.incre else None
        self.num_features = self.head_hidden_size = (
            spec.num_features([map_chs[b] for b in branch_outputs]) if branch_outputs else stem_width)
        self.incre_modules = self.downsamp_modules = self.final_layer = None  # built only for the heads using them
        if spec.incre:
            self.incre_modules = self._make_incre(pre_stage_channels, branch_outputs, **dd)
        if spec.classifier:
            self.downsamp_modules, self.final_layer = self._make_aggregation(cfg.pop('head_conv_bias', True), **dd)
            self.global_pool, self.head_drop, self.classifier = create_classifier(
                self.num_features,
                self.num_classes,
                pool_type=global_pool,
                drop_rate=drop_rate,
                **dd,
            )
            self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        else:
            self.num_classes = 0
            self.global_pool = nn.Identity()
            self.head_drop = nn.Identity()
            self.classifier = nn.Identity()

        self.init_weights()

    def _make_incre(self, pre_stage_channels, branches, device=None, dtype=None) -> nn.ModuleList:
        """ Increasing the #channels on each resolution, from C, 2C, 4C, 8C to 128, 256, 512, 1024: modules for
        `branches` only, an nn.Identity in the others' slots (keeps checkpoint keys)."""
        dd = {'device': device, 'dtype': dtype}
        incre_modules = []
        for i in range(max(branches) + 1 if branches else 0):
            if i in branches:
                incre_modules.append(self._make_layer(
                    Bottleneck, pre_stage_channels[i], _INCRE_CHS[i] // Bottleneck.expansion, 1, stride=1,
                    dilation=self.dilations[i], **dd))
            else:
                incre_modules.append(nn.Identity())
        return nn.ModuleList(incre_modules)

    def _make_aggregation(self, conv_bias=True, device=None, dtype=None) -> Tuple[nn.ModuleList, nn.Module]:
        """ Downsampling modules summing the incre maps into the stride 32 one, and the final 1x1 conv to 2048."""
        dd = {'device': device, 'dtype': dtype}
        downsamp_modules = []
        for i, (in_channels, out_channels) in enumerate(zip(_INCRE_CHS[:-1], _INCRE_CHS[1:])):
            downsamp_module = nn.Sequential(
                nn.Conv2d(
                    in_channels=in_channels,
                    out_channels=out_channels,
                    kernel_size=3,
                    bias=conv_bias,
                    **_step(self.dilations, i, i + 1),
                    **dd,
                ),
                nn.BatchNorm2d(out_channels, momentum=_BN_MOMENTUM, **dd),
                nn.ReLU(inplace=True)
            )
            downsamp_modules.append(downsamp_module)
        downsamp_modules = nn.ModuleList(downsamp_modules)

        final_layer = nn.Sequential(
            nn.Conv2d(
                in_channels=_INCRE_CHS[-1],
                out_channels=self.num_features,
                kernel_size=1,
                stride=1,
                padding=0,
                bias=conv_bias,
                **dd,
            ),
            nn.BatchNorm2d(self.num_features, momentum=_BN_MOMENTUM, **dd),
            nn.ReLU(inplace=True)
        )
        return downsamp_modules, final_layer

    def _make_transition_layer(self, num_channels_pre_layer, num_channels_cur_layer, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        num_branches_cur = len(num_channels_cur_layer)
        num_branches_pre = len(num_channels_pre_layer)

        transition_layers = []
        for i in range(num_branches_cur):
            if i < num_branches_pre:
                if num_channels_cur_layer[i] != num_channels_pre_layer[i]:
                    transition_layers.append(nn.Sequential(
                        nn.Conv2d(num_channels_pre_layer[i], num_channels_cur_layer[i], 3, bias=False,
                                  **_step(self.dilations, i, i), **dd),
                        nn.BatchNorm2d(num_channels_cur_layer[i], momentum=_BN_MOMENTUM, **dd),
                        nn.ReLU(inplace=True)))
                else:
                    transition_layers.append(nn.Identity())
            else:
                conv3x3s = []
                for j in range(i + 1 - num_branches_pre):
                    _in_chs = num_channels_pre_layer[-1]
                    _out_chs = num_channels_cur_layer[i] if j == i - num_branches_pre else _in_chs
                    src = num_branches_pre - 1 + j
                    conv3x3s.append(nn.Sequential(
                        nn.Conv2d(_in_chs, _out_chs, 3, bias=False, **_step(self.dilations, src, src + 1), **dd),
                        nn.BatchNorm2d(_out_chs, momentum=_BN_MOMENTUM, **dd),
                        nn.ReLU(inplace=True)))
                transition_layers.append(nn.Sequential(*conv3x3s))

        return nn.ModuleList(transition_layers)

    def _make_layer(self, block_type, inplanes, planes, block_types, stride=1, dilation=1, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        downsample = None
        if stride != 1 or inplanes != planes * block_type.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block_type.expansion, kernel_size=1, stride=stride, bias=False, **dd),
                nn.BatchNorm2d(planes * block_type.expansion, momentum=_BN_MOMENTUM, **dd),
            )

        d = dict(dilation=dilation, first_dilation=dilation, **dd)
        layers = [block_type(inplanes, planes, stride, downsample, **d)]
        inplanes = planes * block_type.expansion
        for i in range(1, block_types):
            layers.append(block_type(inplanes, planes, **d))

        return nn.Sequential(*layers)

    def _make_stage(self, layer_config, num_in_chs, outputs=None, device=None, dtype=None):
        """ A stage's modules; the last one returns the fused maps of `outputs` only (default: all branches)."""
        num_modules = layer_config['num_modules']
        num_branches = layer_config['num_branches']
        num_blocks = layer_config['num_blocks']
        num_channels = layer_config['num_channels']
        block_type = block_types_dict[layer_config['block_type']]
        fuse_method = layer_config['fuse_method']

        modules = []
        for i in range(num_modules):
            modules.append(HighResolutionModule(
                num_branches,
                block_type,
                num_blocks,
                num_in_chs,
                num_channels,
                fuse_method,
                outputs=outputs if i == num_modules - 1 else None,
                dilations=self.dilations,
                upsample_mode=self.upsample_mode,
                device=device,
                dtype=dtype,
            ))
            num_in_chs = modules[-1].get_num_in_chs()

        return SequentialList(*modules), num_in_chs

    @torch.jit.ignore
    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        matcher = dict(
            stem=r'^conv[12]|bn[12]',
            block_types=r'^(?:layer|stage|transition)(\d+)' if coarse else [
                (r'^layer(\d+)\.(\d+)', None),
                (r'^stage(\d+)\.(\d+)', None),
                (r'^transition(\d+)', (99999,)),
            ],
        )
        return matcher

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        """ Recompute each layer1 block and HighResolutionModule in backward instead of storing its activations
        (forward, forward_features and forward_intermediates). BatchNorm running statistics after a training step
        equal those without checkpointing."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        """ Replace the classifier (num_classes=0 removes it). Heads without one (_HEAD_SPECS, a pruned model's
        included) output feature maps and accept num_classes=0 only.
        """
        if not self.head_spec.classifier:
            if num_classes:
                raise ValueError(
                    f"HRNet head={self.head!r} outputs feature maps and has no classifier, "
                    f"build it with head='classification' to use num_classes={num_classes}.")
            return
        if global_pool is None:
            # keep current pooling
            global_pool = getattr(self.global_pool, 'pool_type', 'avg')
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        self.global_pool, self.classifier = create_classifier(
            self.num_features, self.num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.classifier.train(self.training)

    @property
    def head_spec(self) -> _HeadSpec:
        """ _HEAD_SPECS[self.head]: what this model's head builds and returns."""
        return _HEAD_SPECS[self.head]

    def unbuilt_prefixes(self) -> Tuple[str, ...]:
        """ Key prefixes of the full (classification) layout's modules this model was built without: the head
        modules it does not use and, for outputs it does not compute, their fuse layers and incre modules (or the
        whole trunk when only the stem is taken). checkpoint_filter_fn drops exactly these keys."""
        return _unbuilt_prefixes(self.head_spec, self.branch_outputs, self.stage4_cfg['num_modules'] - 1)

    def _load_from_state_dict(
            self,
            state_dict: dict,
            prefix: str,
            local_metadata: dict,
            strict: bool,
            missing_keys: List[str],
            unexpected_keys: List[str],
            error_msgs: List[str],
    ):
        # a state dict of the model with all of its head's outputs loads strictly: the keys of the modules that only
        # the outputs not taken use (out_indices, prune_intermediate_layers) are dropped
        spec, last = self.head_spec, self.stage4_cfg['num_modules'] - 1
        pruned = set(self.unbuilt_prefixes()) - set(_unbuilt_prefixes(spec, spec.branches, last))
        for k in [k for k in state_dict if k.startswith(tuple(prefix + p for p in pruned))]:
            del state_dict[k]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def _run_stage(self, stage: nn.Sequential, x):
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for module in stage:
                x = _checkpoint(module, x)
            return x
        return stage(x)

    def stages(self, x) -> List[torch.Tensor]:
        x = self._run_stage(self.layer1, x)

        xl = [t(x) for i, t in enumerate(self.transition1)]
        yl = self._run_stage(self.stage2, xl)

        xl = [t(yl[-1]) if not isinstance(t, nn.Identity) else yl[i] for i, t in enumerate(self.transition2)]
        yl = self._run_stage(self.stage3, xl)

        xl = [t(yl[-1]) if not isinstance(t, nn.Identity) else yl[i] for i, t in enumerate(self.transition3)]
        yl = self._run_stage(self.stage4, xl)
        return yl

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """ The stem's first conv (stride 2); any input size works, maps are ceil(H / stride) x ceil(W / stride)."""
        x = self.conv1(x)
        x = self.bn1(x)
        return self.act1(x)

    def _forward_trunk(self, x: torch.Tensor) -> List[torch.Tensor]:
        """ Stem map to the final stage's maps of self.branch_outputs (one per branch, in that order)."""
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.act2(x)
        return self.stages(x)

    def _forward_incre(self, yl: List[torch.Tensor]) -> List[torch.Tensor]:
        """ The final stage's maps through their incre modules (C, 2C, 4C, 8C to 128, 256, 512, 1024), if built."""
        if not self.head_spec.incre:
            return yl
        return [self.incre_modules[b](y) for b, y in zip(self.branch_outputs, yl)]

    def _forward_head_features(self, yl: List[torch.Tensor], incre_done: bool = False):
        """ forward_features' output (self.head_spec.output) from the final stage's maps (`incre_done`: they
        went through the incre modules already). The classification head interleaves incre and downsample modules
        in the order of the original forward, so it dispatches the same ops in the same order."""
        output = self.head_spec.output
        if output == 'final':
            y = yl[0] if incre_done else self.incre_modules[0](yl[0])
            for i, down in enumerate(self.downsamp_modules):
                y = (yl[i + 1] if incre_done else self.incre_modules[i + 1](yl[i + 1])) + down(y)
            return self.final_layer(y)
        if output == 'first':
            return yl[0]
        if output == 'concat':  # HRNetV2: every branch map upsampled to stride 4, concatenated
            size = yl[0].shape[-2:]
            align_corners = _UPSAMPLE_MODES[self.upsample_mode].get('align_corners', False)
            return torch.cat(
                [yl[0]] + [F.interpolate(y, size=size, mode='bilinear', align_corners=align_corners) for y in yl[1:]],
                dim=1)
        return yl if incre_done else self._forward_incre(yl)

    def forward_features(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """ 'classification': (B, 2048, H/32, W/32) map. 'incre' / '': list of maps at strides 4-32, one per
        branch output. 'high_res': (B, C, H/4, W/4). 'concat': (B, 15C, H/4, W/4). With only the stem taken
        (features_only, prune_intermediate_layers): the stem map."""
        x = self._forward_stem(x)
        if not self.branch_outputs:
            return x
        return self._forward_head_features(self._forward_trunk(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features that returns intermediates.

        Args:
            x: Input image tensor.
            indices: Take last n features if int, all if None, select matching indices if sequence.
                Index 0 is the stem output after the first (stride 2) conv, indices 1-4 the stride 4-32 branch
                outputs of the final stage, passed through the head's incre (channel increase) modules when present.
            norm: Apply norm layer to compatible intermediates (unused, no final norm).
            stop_early: Stop iterating over blocks when last desired intermediate hit.
            output_fmt: Shape of intermediate feature outputs.
            intermediates_only: Only return intermediate features.

        Returns:
            Features and list of intermediate features or just intermediate features.

        Raises:
            ValueError: an index out of range, or one whose output this model does not compute (features_only
                out_indices, prune_intermediate_layers).
        """
        assert output_fmt in ('NCHW',), 'Output shape must be NCHW.'
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        unbuilt = [i for i in take_indices if i > 0 and i - 1 not in self.branch_outputs]
        if unbuilt:
            raise ValueError(
                f'HRNet feature indices {unbuilt} are not computed by this model, it was built (features_only '
                f'out_indices) or pruned for {[0] + [b + 1 for b in self.branch_outputs]}.')
        intermediates = []
        x = self._forward_stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        if not self.branch_outputs or (max_index == 0 and stop_early):
            return intermediates if intermediates_only else (x, intermediates)

        yl = self._forward_incre(self._forward_trunk(x))  # the branch outputs come out of the final stage together
        intermediates.extend([y for b, y in zip(self.branch_outputs, yl) if b + 1 in take_indices])
        if intermediates_only:
            return intermediates
        return self._forward_head_features(yl, incre_done=True), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Prune layers not required for specified intermediates.

        Keeps exactly what the taken outputs need, as features_only does with out_indices: every parameter
        left gets a gradient. Unless the head is kept (prune_head=False with the last index taken: the model stays
        whole), the model becomes a feature-map head ('incre' where it has incre modules, else ''):
        forward_features gives the taken maps (a list), or the stem map when only index 0 is taken.

        Args:
            indices: Indices of intermediate layers to keep.
            prune_norm: Whether to prune normalization layers (unused, no final norm).
            prune_head: Whether to prune the classifier head.

        Returns:
            List of indices that were kept.
        """
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        if not prune_head and max_index == len(self.feature_info) - 1:
            return take_indices  # the head is kept, and it uses every output
        spec = self.head_spec
        outputs = tuple(b for b in self.branch_outputs if b + 1 in take_indices)
        self.head = 'incre' if spec.incre else ''
        if spec.classifier:
            self.downsamp_modules = self.final_layer = None
            self.num_classes = 0
            self.global_pool = nn.Identity()
            self.head_drop = nn.Identity()
            self.classifier = nn.Identity()
        for b in set(self.branch_outputs) - set(outputs):
            if self.incre_modules is not None:
                self.incre_modules[b] = nn.Identity()
            if outputs:
                self.stage4[-1].fuse_layers[b] = nn.Identity()
        if outputs:
            self.stage4[-1].outputs = outputs
        else:
            for n in _TRUNK:
                setattr(self, n, nn.Identity())
        self.branch_outputs = outputs
        # num_features: channels of forward_features' output, the last map taken or the stem
        last = self.feature_info[(outputs[-1] + 1) if outputs else 0]
        self.num_features = self.head_hidden_size = last['num_chs']
        return take_indices

    def forward_head(
            self,
            x: Union[torch.Tensor, List[torch.Tensor]],
            pre_logits: bool = False,
    ) -> Union[torch.Tensor, List[torch.Tensor]]:
        if not self.head_spec.classifier:
            return x  # the feature map heads have no pooling / classifier, their maps pass through
        # Classification Head
        x = self.global_pool(x)
        x = self.head_drop(x)
        if pre_logits:
            return x
        if isinstance(self.classifier, nn.Linear) and self.global_pool.is_identity():
            raise ValueError(
                f"global_pool='' (no pooling) gives unpooled maps, the classifier (num_classes={self.num_classes}) "
                f"needs pooled features: set a global_pool, or num_classes=0.")
        return self.classifier(x)

    def forward(self, x):
        y = self.forward_features(x)
        x = self.forward_head(y)
        return x


class HighResolutionNetFeatures(HighResolutionNet):
    """HighResolutionNet feature extraction

    The design of HRNet makes it easy to grab feature maps, this class provides a simple wrapper to do so.
    It would be more complicated to use the FeatureNet helpers.

    The `feature_location=incre` allows grabbing increased channel count features using part of the
    classification head. If `feature_location=''` the default HRNet features are returned. First stem
    conv is used for stride 2 features. Only what the `out_indices` maps need is built.
    """

    def __init__(
            self,
            cfg,
            in_chans=3,
            num_classes=1000,
            output_stride=32,
            global_pool='avg',
            drop_rate=0.0,
            feature_location='incre',
            out_indices=(0, 1, 2, 3, 4),
            **kwargs,
    ):
        if feature_location not in _FEATURE_LOCATIONS:
            raise ValueError(
                f"Unknown HRNet feature_location {feature_location!r}, valid values are {_FEATURE_LOCATIONS}.")
        num_taps = 1 + len(_HEAD_SPECS[feature_location].branches)
        if isinstance(out_indices, int) and not isinstance(out_indices, bool):
            out_indices = tuple(range(num_taps))[-out_indices:] if 0 < out_indices <= num_taps else (out_indices,)
        if (not isinstance(out_indices, (tuple, list)) or not out_indices
                or any(isinstance(i, bool) or not isinstance(i, int) or not -num_taps <= i < num_taps
                       for i in out_indices)
                or len({i % num_taps for i in out_indices}) != len(out_indices)):
            raise ValueError(
                f'HRNet out_indices must be distinct ints in [{-num_taps}, {num_taps - 1}] (0: stem, 1-4: strides '
                f'4-32) or a count of last maps, got {out_indices!r}.')
        out_indices = tuple(sorted(i % num_taps for i in out_indices))
        super().__init__(
            cfg,
            in_chans=in_chans,
            num_classes=num_classes,
            output_stride=output_stride,
            global_pool=global_pool,
            drop_rate=drop_rate,
            head=feature_location,
            branch_outputs=[i - 1 for i in out_indices if i > 0],
            **kwargs,
        )
        self.feature_info = FeatureInfo(self.feature_info, out_indices)
        self._out_indices = list(out_indices)

    def forward_features(self, x):
        assert False, 'Not supported'

    def forward(self, x) -> List[torch.Tensor]:
        """ The out_indices maps."""
        return self.forward_intermediates(x, self._out_indices, intermediates_only=True)


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
        model: HighResolutionNet,
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


def _create_hrnet(
        variant: str,
        pretrained: bool = False,
        cfg_variant: Optional[str] = None,
        **model_kwargs,
) -> HighResolutionNet:
    """ Build an HRNet variant with timm's builder.

    Pretrained weights load strictly for every head and features_only, `pretrained_strict=False` allows a loose
    load.
    """
    model_cls = HighResolutionNet
    features_mode = ''
    kwargs_filter = None
    if model_kwargs.pop('features_only', False):
        if 'feature_cls' in model_kwargs or 'feature_cls' in model_kwargs.get('feature_cfg', {}):
            # generic feature wrapper (e.g. 'getter' via forward_intermediates) around the base model
            features_mode = 'cfg'
        else:
            model_cls = HighResolutionNetFeatures
            kwargs_filter = ('num_classes', 'global_pool')
            features_mode = 'cls'
    cfg_variant = cfg_variant or variant

    pretrained_strict = model_kwargs.pop('pretrained_strict', True)
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        model_cfg=cfg_cls[cfg_variant],
        pretrained_strict=pretrained_strict,
        pretrained_filter_fn=partial(checkpoint_filter_fn, strict=pretrained_strict),
        kwargs_filter=kwargs_filter,
        features_only=features_mode == 'cfg',
        **model_kwargs,
    )
    if features_mode == 'cls':
        model.pretrained_cfg = pretrained_cfg_for_features(model.default_cfg)
        model.default_cfg = model.pretrained_cfg  # backwards compat
    return model


def _cfg(url='', **kwargs):
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1', 'classifier': 'classifier',
        'license': 'mit',
        **kwargs
    }


default_cfgs = generate_default_cfgs({
    'hrnet_w18_small.gluon_in1k': _cfg(hf_hub_id='timm/', interpolation='bicubic', license='apache-2.0'),
    'hrnet_w18_small.ms_in1k': _cfg(hf_hub_id='timm/'),
    'hrnet_w18_small_v2.gluon_in1k': _cfg(hf_hub_id='timm/', interpolation='bicubic', license='apache-2.0'),
    'hrnet_w18_small_v2.ms_in1k': _cfg(hf_hub_id='timm/'),
    'hrnet_w18.ms_aug_in1k': _cfg(
        hf_hub_id='timm/',
        crop_pct=0.95,
    ),
    'hrnet_w18.ms_in1k': _cfg(hf_hub_id='timm/'),
    'hrnet_w30.ms_in1k': _cfg(hf_hub_id='timm/'),
    'hrnet_w32.ms_in1k': _cfg(hf_hub_id='timm/'),
    'hrnet_w40.ms_in1k': _cfg(hf_hub_id='timm/'),
    'hrnet_w44.ms_in1k': _cfg(hf_hub_id='timm/'),
    'hrnet_w48.ms_in1k': _cfg(hf_hub_id='timm/'),
    'hrnet_w64.ms_in1k': _cfg(hf_hub_id='timm/'),

    'hrnet_w18_ssld.paddle_in1k': _cfg(
        hf_hub_id='timm/',
        crop_pct=0.95, test_crop_pct=1.0, test_input_size=(3, 288, 288)
    ),
    'hrnet_w48_ssld.paddle_in1k': _cfg(
        hf_hub_id='timm/',
        crop_pct=0.95, test_crop_pct=1.0, test_input_size=(3, 288, 288)
    ),
})


@register_model
def hrnet_w18_small(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w18_small', pretrained, **kwargs)


@register_model
def hrnet_w18_small_v2(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w18_small_v2', pretrained, **kwargs)


@register_model
def hrnet_w18(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w18', pretrained, **kwargs)


@register_model
def hrnet_w30(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w30', pretrained, **kwargs)


@register_model
def hrnet_w32(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w32', pretrained, **kwargs)


@register_model
def hrnet_w40(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w40', pretrained, **kwargs)


@register_model
def hrnet_w44(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w44', pretrained, **kwargs)


@register_model
def hrnet_w48(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w48', pretrained, **kwargs)


@register_model
def hrnet_w64(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet('hrnet_w64', pretrained, **kwargs)


@register_model
def hrnet_w18_ssld(pretrained=False, **kwargs) -> HighResolutionNet:
    kwargs.setdefault('head_conv_bias', False)
    return _create_hrnet('hrnet_w18_ssld', cfg_variant='hrnet_w18', pretrained=pretrained, **kwargs)


@register_model
def hrnet_w48_ssld(pretrained=False, **kwargs) -> HighResolutionNet:
    kwargs.setdefault('head_conv_bias', False)
    return _create_hrnet('hrnet_w48_ssld', cfg_variant='hrnet_w48', pretrained=pretrained, **kwargs)

