""" Shared fixtures: an offline Hugging Face cache holding synthetic checkpoints, and upstream's models.

The HF cache env vars must be set before huggingface_hub is imported (it reads them once), so this runs at
conftest import, before timm. Each process (each xdist worker) gets its own cache dir: no races.
"""
import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict

_HF_CACHE = tempfile.mkdtemp(prefix='hrnet-patch-hf-')
atexit.register(shutil.rmtree, _HF_CACHE, ignore_errors=True)
os.environ['HF_HUB_CACHE'] = os.environ['HUGGINGFACE_HUB_CACHE'] = _HF_CACHE
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['HF_HUB_DISABLE_TELEMETRY'] = '1'

import pytest  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402

import timm  # noqa: E402
import timm.models.hrnet as upstream  # noqa: E402
import timm_hrnet_patch  # noqa: E402,F401  (registers the patched models)

VARIANTS = timm.list_models('hrnet*')
HEADS = timm_hrnet_patch.HEADS
_REVISION = '0' * 40


@functools.lru_cache(maxsize=6)
def built(variant: str, head: str = 'classification') -> torch.nn.Module:
    """ A patched model in eval mode, shared between tests: do not modify it."""
    return timm.create_model(variant, head=head).eval()


def upstream_model(variant: str) -> torch.nn.Module:
    """ Upstream timm's own classification model of a variant, from its module (the registry holds ours)."""
    return getattr(upstream, variant)(pretrained=False).eval()


@functools.lru_cache(maxsize=None)
def checkpoint(variant: str) -> Dict[str, torch.Tensor]:
    """ A synthetic checkpoint with upstream's key layout: upstream's model with randomised BN affine and stats,
    so that every tensor differs from a fresh init. Made once per process and variant; do not modify it.
    """
    torch.manual_seed(sum(map(ord, variant)))
    model = upstream_model(variant)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def serve_from_hub(hf_hub_id: str, state_dict: Dict[str, torch.Tensor]) -> None:
    """ Put state_dict where timm's pretrained=True path finds it offline: the repo's model.safetensors."""
    repo = Path(_HF_CACHE) / ('models--' + hf_hub_id.replace('/', '--'))
    snapshot = repo / 'snapshots' / _REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / 'refs').mkdir(exist_ok=True)
    (repo / 'refs' / 'main').write_text(_REVISION)
    safetensors.torch.save_file(state_dict, str(snapshot / 'model.safetensors'))


@functools.lru_cache(maxsize=None)
def served_checkpoint(variant: str) -> Dict[str, torch.Tensor]:
    """ The variant's synthetic checkpoint, served as its default pretrained tag (once per process)."""
    serve_from_hub(timm.models.get_pretrained_cfg(variant).hf_hub_id, checkpoint(variant))
    return checkpoint(variant)


def serve_modified(variant: str, state_dict: Dict[str, torch.Tensor], name: str) -> dict:
    """ Serve a modified checkpoint under its own hub repo, return the pretrained_cfg_overlay that loads it."""
    hf_hub_id = f'timm/test-{variant}-{name}'
    serve_from_hub(hf_hub_id, state_dict)
    return dict(hf_hub_id=hf_hub_id)
