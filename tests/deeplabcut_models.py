""" DeepLabCut 3's HRNet backbones, each built from a fixed seed, and their outputs on fixed inputs.

tests/test_deeplabcut.py imports it under this package, and runs it as a script in a fresh process with
TIMM_HRNET_PATCH=0 for timm's own HRNet (the oracle):

    python tests/deeplabcut_models.py OUT [STATE_DICTS]

It writes {backbone: (state_dict, eval outputs)} to OUT, after loading STATE_DICTS' state dicts strictly when given.
It imports neither the package nor the suite's modules.
"""
import sys

import numpy as np
import torch

from deeplabcut.pose_estimation_pytorch.models.backbones.hrnet import HRNet
from deeplabcut.pose_estimation_pytorch.models.backbones.hrnet_coam import HRNetCoAM

SIZE = (64, 96)
# backbone: (class, kwargs): DeepLabCut's HRNet modes (its docstring's; DEKR interpolates the branches) and the CTD
# model's HRNetCoAM (ctd_coam_w32.yaml's keypoint encoder), on hrnet_w18 without downloaded weights
BACKBONES = {
    'hrnet': (HRNet, dict(model_name='hrnet_w18')),
    'hrnet-dekr': (HRNet, dict(model_name='hrnet_w18', interpolate_branches=True)),
    'hrnet-incre': (HRNet, dict(model_name='hrnet_w18', increased_channel_count=True)),
    'hrnet-coam': (HRNetCoAM, dict(
        kpt_encoder=dict(type='StackedKeypointEncoder', num_joints=3, kernel_size=[15, 15]),
        base_model_name='hrnet_w18', pretrained=False, coam_modules=(2,), img_size=SIZE)),
}


def build(name: str) -> torch.nn.Module:
    cls, kwargs = BACKBONES[name]
    torch.manual_seed(sum(map(ord, name)))
    return cls(**kwargs)


def inputs(name: str) -> tuple:
    """ The forward's arguments: an image batch, and for HRNetCoAM the conditioning keypoints (B, 1, J, 3)."""
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    if BACKBONES[name][0] is not HRNetCoAM:
        return (x,)
    kpts = np.random.default_rng(0).uniform(0, min(SIZE), size=(2, 1, 3, 3)).astype(np.float32)
    kpts[..., 2] = 2  # visible
    return x, kpts


def run(state_dicts: dict = None) -> dict:
    results = {}
    for name in BACKBONES:
        model = build(name)
        if state_dicts:
            model.load_state_dict(state_dicts[name])
        model.eval()
        with torch.no_grad():
            results[name] = (model.state_dict(), model(*inputs(name)))
    return results


if __name__ == '__main__':
    torch.save(run(torch.load(sys.argv[2]) if len(sys.argv) > 2 else None), sys.argv[1])
