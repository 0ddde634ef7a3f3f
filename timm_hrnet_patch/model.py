""" The package's HRNet: the model module's HighResolutionNet (the upstream series' end) with what timm would not take.

- heads: 'high_res' (HRNetV1, the stride 4 map) and 'concat' (HRNetV2) beside timm's, each defined once in
  `_HEAD_SPECS`;
- partial builds: a model keeps only the modules that the outputs it computes use (`branch_outputs`, features_only
  `out_indices`, prune_intermediate_layers), so every parameter gets a gradient (DDP with
  find_unused_parameters=False); a state dict of the whole model loads into it strictly;
- `upsample_mode`: the fuse layers' upsampling of other releases' models (`layouts.py`);
- gradient checkpointing whose recompute leaves BatchNorm running statistics as one forward leaves them;
- BatchNorm folding for inference through timm's `reparameterize_model` (`_make_norms_foldable`);
- ValueErrors that name the problem for bad arguments and feature indices.

It builds the model module's network, then swaps in what differs: the state dict keys of a model are those of the
model module's with the same head, less the modules it leaves out.
"""
import copy
import functools
import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from . import hrnet
from ._compat import create_classifier, feature_take_indices, get_device_dtype, norm_layer_taking_device

__all__ = ['HighResolutionModule', 'HighResolutionNet']

_TRUNK = ('conv2', 'bn2', 'act2', 'layer1', 'transition1', 'stage2', 'transition2', 'stage3', 'transition3', 'stage4')
_CLASSIFIER_MODULES = ('downsamp_modules.', 'final_layer.', 'classifier.')  # key prefixes of the classification head
_INCRE_CHS = (128, 256, 512, 1024)  # incre module output channels per branch (Bottleneck, 4x expansion)
_OUTPUT_STRIDES = (8, 16, 32)
# upsample_mode: F.interpolate kwargs of the fuse layers' upsampling; the 'concat' head upsamples bilinearly, with
# align_corners=True for 'bilinear_aligned' only. The releases differ (layouts.py): the classification and
# pose models use 'nearest', the segmentation models 'bilinear' or 'bilinear_aligned'.
_UPSAMPLE_MODES: Dict[str, Dict[str, Any]] = {
    'nearest': dict(mode='nearest'),
    'bilinear': dict(mode='bilinear', align_corners=False),
    'bilinear_aligned': dict(mode='bilinear', align_corners=True),
}
# The (conv, norm) child pairs of each module type whose forward applies the norm right after the conv: the
# BatchNorms that reparameterize_model folds. nn.Sequential: the transitions', fuse layers', downsamples' and
# head layers' (conv, BatchNorm[, ReLU]).
_CONV_NORM_PAIRS: Dict[type, Tuple[Tuple[str, str], ...]] = {
    hrnet.HighResolutionNet: (('conv1', 'bn1'), ('conv2', 'bn2')),
    hrnet.BasicBlock: (('conv1', 'bn1'), ('conv2', 'bn2')),
    hrnet.Bottleneck: (('conv1', 'bn1'), ('conv2', 'bn2'), ('conv3', 'bn3')),
    nn.Sequential: (('0', '1'),),
}


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
    running statistics once, as without checkpointing (the recompute runs under _running_stats_kept)."""
    if torch._dynamo.is_compiling():  # torch.compile recomputes in its own graph, without the stats' update
        return torch.utils.checkpoint.checkpoint(module, x, use_reentrant=False)
    return torch.utils.checkpoint.checkpoint(
        module, x, use_reentrant=False, context_fn=lambda: (nullcontext(), _running_stats_kept(module)))


class _ModuleRef:
    """ A weak reference to a module, which deepcopy and pickle carry over to the copy of that module. A norm's
    `fuse` holds its modules through these: a strong reference to itself would make every model a reference cycle,
    freed only by the garbage collector."""

    def __init__(self, module: nn.Module):
        self._ref = weakref.ref(module)

    def __call__(self) -> Optional[nn.Module]:
        return self._ref()

    def __deepcopy__(self, memo) -> '_ModuleRef':
        return _ModuleRef(copy.deepcopy(self(), memo))

    def __reduce__(self):
        return _ModuleRef, (self(),)


@torch.no_grad()
def _fold_norm(norm_ref: _ModuleRef, conv_ref: _ModuleRef) -> nn.Module:
    """ A BatchNorm's `fuse` for timm's reparameterize_model: fold it into the convolution before it (scale the
    conv's weights, give it the bias) and return the nn.Identity that replaces it."""
    norm, conv = norm_ref(), conv_ref()
    if norm.training or norm.running_var is None:
        raise RuntimeError(
            'Folding BatchNorm into convolutions (reparameterize_model) needs an eval model with running '
            'statistics: call model.eval() first.')
    if conv is None:
        return norm  # the convolution was replaced: nothing to fold into
    scale = (norm.running_var.double() + norm.eps).rsqrt()
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double() + norm.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    conv.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype))
    return nn.Identity()


def _make_norms_foldable(model: nn.Module) -> None:
    """ Give every BatchNorm2d of `model` that follows a convolution (_CONV_NORM_PAIRS) the `fuse` that timm's
    reparameterize_model calls: the modules keep their types, as stock's."""
    for m in model.modules():
        pairs = next((pairs for cls, pairs in _CONV_NORM_PAIRS.items() if isinstance(m, cls)), ())
        for conv_name, norm_name in pairs:
            conv, norm = getattr(m, conv_name, None), getattr(m, norm_name, None)
            if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d:
                norm.fuse = functools.partial(_fold_norm, _ModuleRef(norm), _ModuleRef(conv))


class HighResolutionModule(hrnet.HighResolutionModule):
    """ The model module's HighResolutionModule, its fuse layers upsampling as `upsample` (F.interpolate kwargs),
    which HighResolutionNet sets on each module of the network it builds. It returns the maps of the outputs whose
    fuse layers it has: those of outputs not taken are an nn.Identity."""

    upsample: Dict[str, Any] = _UPSAMPLE_MODES['nearest']

    def forward(self, x: List[torch.Tensor]) -> List[torch.Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(x[i]) for i, branch in enumerate(self.branches)]
        x_fuse = []
        for i, fuse_outer in enumerate(self.fuse_layers):
            if isinstance(fuse_outer, nn.Identity):
                continue  # an output not taken, its fuse layers were replaced
            y = None
            for j, f in enumerate(fuse_outer):
                z = f(x[j])
                if j > i:
                    z = F.interpolate(z, size=x[i].shape[-2:], **self.upsample)
                y = z if y is None else y + z
            x_fuse.append(self.fuse_act(y))
        return x_fuse


class HighResolutionNet(hrnet.HighResolutionNet):

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
            norm_layer: hrnet.LayerType = nn.BatchNorm2d,
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
            norm_layer: every norm's layer, a name or type as timm's get_norm_layer takes it; FrozenBatchNorm2d too.

        Raises:
            ValueError: unknown head or upsample_mode, invalid branch_outputs or output_stride (8, 16, 32).
            TypeError: kwargs that are not architecture cfg entries.
        """
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
        base_head = 'classification' if spec.classifier else 'incre' if spec.incre else ''
        super().__init__(
            cfg,
            in_chans=in_chans,
            num_classes=num_classes,
            output_stride=output_stride,
            global_pool=global_pool,
            drop_rate=drop_rate,
            head=base_head,
            norm_layer=norm_layer_taking_device(norm_layer),
            **kwargs,
        )
        self.head = head
        if not spec.classifier:  # unset by the model module for head=''
            self.downsamp_modules = self.final_layer = None
        self.output_stride = output_stride
        self.upsample_mode = upsample_mode
        for m in self.modules():
            if isinstance(m, hrnet.HighResolutionModule):
                m.__class__ = HighResolutionModule
                m.upsample = _UPSAMPLE_MODES[upsample_mode]
        branch_chs = self.stage4[-1].get_num_in_chs()
        self.branch_outputs = _HEAD_SPECS[base_head].branches  # what the model module built
        self._keep_branches(branch_outputs)
        _make_norms_foldable(self)

        stem_width = self.conv1.out_channels
        map_chs = list(_INCRE_CHS) if spec.incre else branch_chs
        # module names aren't actually valid here, hook or FeatureNet based extraction would not work
        self.feature_info = [dict(num_chs=stem_width, reduction=2, module='stem')] + [
            dict(num_chs=map_chs[b], reduction=4 * 2 ** b // self.dilations[b], module=f'stage{b + 1}')
            for b in spec.branches]
        self.num_branches = len(self.feature_info) - 1  # final stage branches, feature taps are the stem + branches
        self.num_features = self.head_hidden_size = (
            spec.num_features([map_chs[b] for b in branch_outputs]) if branch_outputs else stem_width)
        if spec.classifier:
            self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        else:
            self.num_classes = 0

    def _keep_branches(self, outputs: Sequence[int]) -> None:
        """ Keep only what the final-stage outputs in `outputs` use: the model module's _prune_branches (their fuse
        layers and incre modules, or the whole trunk when no output is taken, replaced by nn.Identity)."""
        self._prune_branches([0] + [b + 1 for b in outputs])
        self.branch_outputs = tuple(outputs)

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

    def _run_seq(self, modules: nn.Sequential, x):
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for module in modules:
                x = _checkpoint(module, x)
            return x
        return modules(x)

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
        """hrnet.HighResolutionNet.forward_intermediates, for the maps this model computes.

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
        self._keep_branches(outputs)
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
