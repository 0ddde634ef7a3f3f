""" State dicts for timm's own HRNet, the one without this package.

A features_only model (partial `out_indices`) is built without the modules that only the outputs it does not take
use, so its state dict lacks their keys. timm's own HRNet builds them anyway: it loads such a state dict with
`strict=False` (those keys missing, no key unexpected, the same outputs), and `full_state_dict` gives the state dict
it loads with `strict=True`. The other direction needs nothing: this package's models load a state dict saved by
timm's own HRNet of the same configuration strictly (the model drops the keys of the modules it was built without).
"""
from typing import Dict

import torch

from .model import HighResolutionNet

__all__ = ['full_state_dict']


def full_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """ model.state_dict() with the keys of every module timm's own HRNet of the same configuration has.

    The modules this package did not build (the fuse layers and incre modules of the outputs a features_only model
    does not take, or the trunk when only the stem is) are added freshly initialised, as a new model has them: no
    output uses them. A model holding HRNets as submodules (a feature wrapper, a downstream backbone) gets each
    one's keys under its name.

    Args:
        model: An HRNet of this package, or a module that holds them.

    Returns:
        The state dict, on the device and dtype of each HRNet's parameters.
    """
    state_dict = model.state_dict()
    for name, net in model.named_modules():
        if not isinstance(net, HighResolutionNet) or net.branch_outputs == net.head_spec.branches:
            continue
        param = next(net.parameters())
        stages = {f'stage{i}': getattr(net, f'stage{i}_cfg') for i in range(1, 5)}
        full = HighResolutionNet(
            dict(stem_width=net.conv1.out_channels, **stages),
            in_chans=net.conv1.in_channels,
            head=net.head,
            output_stride=net.output_stride,
            upsample_mode=net.upsample_mode,
        ).to(param.device)
        prefix = f'{name}.' if name else ''
        for k, v in full.state_dict().items():
            state_dict.setdefault(prefix + k, v.to(param.dtype) if v.is_floating_point() else v)
    return state_dict
