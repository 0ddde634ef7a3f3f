""" Synthetic pretrained weights: upstream timm's own classification models (the released key layout) with
trained-like BatchNorm statistics, served where timm's pretrained=True path finds them offline.

No side effects at import: conftest sets the HF cache env vars first, tools/upstream_env.py its own.
"""
import functools
import os
from pathlib import Path
from typing import Dict, Optional

import safetensors.torch
import torch

import timm.models.hrnet as upstream

_REVISION = '0' * 40


@functools.lru_cache(maxsize=None)
def upstream_model(variant: str) -> torch.nn.Module:
    """ Upstream timm's own classification model of a variant (from its module: the registry may hold another), with
    random BN affine and BN statistics calibrated on a random batch, so that, like a trained net, activations stay
    in float16 range. It is the source of the variant's synthetic checkpoint. Once per process; do not modify it.
    """
    torch.manual_seed(sum(map(ord, variant)))
    model = getattr(upstream, variant)(pretrained=False)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the stats of the one calibration batch
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 64, 64))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
            m.num_batches_tracked.fill_(7)
    return model.eval()


def checkpoint(variant: str) -> Dict[str, torch.Tensor]:
    """ The variant's synthetic checkpoint: upstream's key layout and tensors (sharing upstream_model's storage)."""
    return {k: v.detach() for k, v in upstream_model(variant).state_dict().items()}


def serve_from_hub(hf_hub_id: str, state_dict: Dict[str, torch.Tensor], cache: Optional[str] = None,
                   pickled: bool = False) -> Path:
    """ Put state_dict where timm's pretrained=True path finds it offline: the repo's model.safetensors in the HF
    cache `cache` (default: $HF_HUB_CACHE, this process's), or with pickled=True its pytorch_model.bin (torch.save of
    whatever state_dict is). Returns the file's path."""
    repo = Path(cache or os.environ['HF_HUB_CACHE']) / ('models--' + hf_hub_id.replace('/', '--'))
    snapshot = repo / 'snapshots' / _REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / 'refs').mkdir(exist_ok=True)
    (repo / 'refs' / 'main').write_text(_REVISION)
    if pickled:
        torch.save(state_dict, str(snapshot / 'pytorch_model.bin'))
        return snapshot / 'pytorch_model.bin'
    path = snapshot / 'model.safetensors'
    safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path
