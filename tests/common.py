""" What the tests share: the matrix axes, the head contract and its expected shapes, synthetic checkpoints served
from the offline Hugging Face cache (conftest.py sets it up), upstream's models, and the comparisons.

Imported by the test modules, so by each xdist worker and not by the controller, which runs no test (conftest.py
stays free of torch and timm for it). Each process makes its own checkpoints, once: no races, nothing shared.
"""
import functools
import os
from typing import Dict, List, Tuple

import pytest
import torch

import timm
from target import hrnet, package_model  # (the module under test, its models registered)
from synthetic import checkpoint, serve_from_hub, upstream_model  # noqa: F401
import strategies  # noqa: F401  (loads the Hypothesis profile)

# xdist workers share the cores: one worker per core, one thread per worker, instead of oversubscribing
torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1))))

# HRNET_VARIANTS: comma-separated list_models patterns, the variants the matrix runs (default every hrnet*). tox
# sets one variant in the envs between the oldest and newest stack, and the w18 family (every arch cfg's structure)
# in the oldest (tox.ini, docs/testing.md): the variants are one code path, which a timm release can only change for
# all of them at once.
VARIANTS = timm.list_models(os.environ.get('HRNET_VARIANTS', 'hrnet*').split(','))
assert VARIANTS and set(VARIANTS) <= set(timm.list_models('hrnet*')), f"HRNET_VARIANTS matched {VARIANTS}"
HEADS = package_model._HEADS
HEAD_MODULES = ('incre_modules', 'downsamp_modules', 'final_layer', 'classifier')
# Matrix axes. The w18 family is the quick loop, the wide variants are marked slow: -m "not slow".
_QUICK = {v: not strategies.wide(v) for v in VARIANTS}
VARIANT_PARAMS = [pytest.param(v, marks=() if _QUICK[v] else pytest.mark.slow) for v in VARIANTS]
# Largest input side the matrix draws: 256 for the w18 family; 96 for the big variants (the same code, wider), which
# keeps CI under its time budget: their forward at 256 costs 7x that at 96, for no other code path (16-96 holds
# sides of every residue mod 32, and maps of 1-3 pixels at stride 32)
MAX_SIDE = {v: 256 if _QUICK[v] else 96 for v in VARIANTS}
HEAD_PARAMS = [pytest.param(h, id=h or 'headless') for h in HEADS]
LOCATION_PARAMS = [pytest.param(h, id=h or 'headless') for h in package_model._FEATURE_LOCATIONS]
PRETRAINED_PARAMS = [pytest.param(False, id='scratch'), pytest.param(True, id='pretrained')]
_NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA: torch.cuda.is_available() is False')
DEVICES = ['cpu', pytest.param('cuda', marks=[pytest.mark.cuda, _NO_CUDA])]

# CUDA's float32 convolutions and matmuls in float32, not TF32: the suite compares them with float32 on the CPU
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

INCRE_CHS = [128, 256, 512, 1024]
REDUCTIONS = [2, 4, 8, 16, 32]


# ---- the head contract, written out independently of the model code ----

# head: the head modules it builds, the final-stage branches (stride 4 * 2**b) whose maps it uses, whether they go
# through the incre modules, and what forward returns: 'logits', 'maps' (a list), 'first' (branch 0's map, HRNetV1)
# or 'concat' (the maps upsampled to stride 4 and concatenated, HRNetV2)
CONTRACT = {
    'classification': dict(modules=HEAD_MODULES, branches=(0, 1, 2, 3), incre=True, output='logits'),
    'incre': dict(modules=HEAD_MODULES[:1], branches=(0, 1, 2, 3), incre=True, output='maps'),
    '': dict(modules=(), branches=(0, 1, 2, 3), incre=False, output='maps'),
    'high_res': dict(modules=(), branches=(0,), incre=False, output='first'),
    'concat': dict(modules=(), branches=(0, 1, 2, 3), incre=False, output='concat'),
}
assert tuple(CONTRACT) == HEADS, 'every head of the module under test is in the contract, and nothing else'


def branch_chs(variant: str) -> List[int]:
    """ Channels of the four stage4 branch maps, from the variant's arch cfg."""
    return list(hrnet.cfg_cls[variant.replace('_ssld', '')]['stage4']['num_channels'])


def reduce(height: int, width: int, reduction: int) -> Tuple[int, int]:
    """ Spatial size after `reduction` worth of stride-2 (k3, p1) steps: each halves rounding up."""
    while reduction > 1:
        height, width, reduction = (height + 1) // 2, (width + 1) // 2, reduction // 2
    return height, width


def reductions(head: str, output_stride: int = 32) -> List[int]:
    """ feature_info reductions: the stem's, then the head's branch maps', none below the output stride."""
    return [REDUCTIONS[0]] + [min(REDUCTIONS[b + 1], output_stride) for b in CONTRACT[head]['branches']]


def map_shapes(variant: str, head: str, batch: int, height: int, width: int,
               output_stride: int = 32) -> List[Tuple[int, ...]]:
    """ The feature_info maps: the stem, then the head's branch maps (incre channels where it has incre modules).
    features_only's feature_location 'incre' / '' give the maps of those heads."""
    contract = CONTRACT[head]
    chs = [64] + [(INCRE_CHS if contract['incre'] else branch_chs(variant))[b] for b in contract['branches']]
    return [(batch, c, *reduce(height, width, r)) for c, r in zip(chs, reductions(head, output_stride))]


def output_shapes(variant: str, head: str, batch: int, height: int, width: int,
                  num_classes: int = 1000, global_pool: str = 'avg', output_stride: int = 32) -> List[Tuple[int, ...]]:
    """ forward()'s output shapes: one tensor for 'classification', 'high_res' and 'concat', a list of maps for
    'incre' and ''."""
    output = CONTRACT[head]['output']
    maps = map_shapes(variant, head, batch, height, width, output_stride)[1:]
    if output == 'maps':
        return maps
    if output == 'first':
        return maps[:1]
    if output == 'concat':
        return [(batch, sum(m[1] for m in maps), *maps[0][2:])]
    if num_classes:
        return [(batch, num_classes)]
    return [(batch, 2048)] if global_pool else [(batch, 2048, *reduce(height, width, output_stride))]


# ---- checkpoints and models ----

def expected_state(variant: str, head: str) -> Dict[str, torch.Tensor]:
    """ The checkpoint entries a model with this head (or feature_location) holds: without the head modules it
    does not build, nor the last stage4 module's fuse layers of the branches it does not use."""
    contract = CONTRACT[head]
    last = hrnet.cfg_cls[variant.replace('_ssld', '')]['stage4']['num_modules'] - 1
    absent = tuple(f'{m}.' for m in HEAD_MODULES if m not in contract['modules']) + tuple(
        f'stage4.{last}.fuse_layers.{b}.' for b in range(4) if b not in contract['branches'])
    return {k: v for k, v in checkpoint(variant).items() if not k.startswith(absent)}


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


def create(variant: str, pretrained: bool = False, **kwargs) -> torch.nn.Module:
    """ timm.create_model in eval mode; with pretrained=True the synthetic checkpoint comes from the offline hub."""
    if pretrained:
        served_checkpoint(variant)
    return timm.create_model(variant, pretrained=pretrained, **kwargs).eval()


def assert_loaded(model: torch.nn.Module, expected: Dict[str, torch.Tensor]) -> None:
    """ The model holds exactly the expected keys, each tensor equal to the expected one."""
    model_sd = model.state_dict()
    assert set(model_sd) == set(expected)
    for k, v in expected.items():
        assert torch.equal(model_sd[k].cpu(), v), k


def listed(out) -> List[torch.Tensor]:
    """ A forward's output as a list: the classification head's tensor, or the feature heads' maps."""
    return list(out) if isinstance(out, (list, tuple)) else [out]


def assert_same(actual: List[torch.Tensor], expected: List[torch.Tensor], msg: str = '') -> None:
    """ Two computations of the same outputs agree: bit-identical on CPU; on CUDA within a tight tolerance, as
    cuDNN may pick another algorithm for the same convolution between calls."""
    assert len(actual) == len(expected), msg
    for a, b in zip(actual, expected):
        if a.device.type == 'cpu':
            assert torch.equal(a, b), msg
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3, msg=msg)
