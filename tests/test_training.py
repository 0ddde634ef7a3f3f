""" Training paths: gradient checkpointing, bfloat16 autocast and channels_last, forward and backward.

Oracles: the same model trained without checkpointing, in float32, contiguous (a deep copy, so both start from the
same weights and BatchNorm statistics); and one training step's BatchNorm counters, which must read exactly 1 (a
recompute that updated the statistics again would leave 2). The bf16 / channels_last tolerances are those that
docs/training.md states: the test reads them from its table. Marked `torch`: what they test depends on torch and the
model's code, not on the timm release, so tox runs them on each torch (seed, timm1031).
"""
import copy
import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
from hypothesis import given

import strategies
from common import HEADS, create, listed
from target import package_model

pytestmark = pytest.mark.torch
DOCS = Path(__file__).resolve().parents[1] / 'docs' / 'training.md'
KINDS = [pytest.param(dict(head=h), id=f'head={h!r}') for h in HEADS] + [
    pytest.param(dict(features_only=True, feature_location=loc), id=f'features_only={loc!r}')
    for loc in package_model._FEATURE_LOCATIONS]


def tolerances() -> Dict[str, float]:
    """ docs/training.md's tolerance table: {check: bound}."""
    rows = re.findall(r'^\| `(\w+)` \| [^|]+ \| ([0-9.e-]+) \|$', DOCS.read_text(), flags=re.M)
    assert rows, f'{DOCS}: no tolerance table'
    return {name: float(bound) for name, bound in rows}


def train_step(model: torch.nn.Module, x: torch.Tensor, dtype=None) -> Tuple[List[torch.Tensor], Dict]:
    """ One forward (under autocast `dtype`, if given) and backward of the mean square of every output."""
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        out = listed(model(x))
    sum(o.float().square().mean() for o in out).backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


def flat(tensors) -> torch.Tensor:
    """ Every tensor, as float32, in one vector: errors are taken over all outputs or all gradients together."""
    return torch.cat([t.float().flatten() for t in tensors])


def counters(model: torch.nn.Module) -> List[int]:
    return [int(b) for n, b in model.named_buffers() if n.endswith('num_batches_tracked')]


def assert_checkpointing_exact(model: torch.nn.Module, x: torch.Tensor) -> None:
    """ One training step with checkpointing: the gradients and every buffer of the step without it."""
    model.train()
    plain, checkpointed = model, copy.deepcopy(model)
    checkpointed.set_grad_checkpointing(True)
    torch.manual_seed(0)  # the same stochastic depth draws
    out, grads = train_step(plain, x)
    torch.manual_seed(0)
    out_c, grads_c = train_step(checkpointed, x)
    assert [o.shape for o in out_c] == [o.shape for o in out]
    for o_c, o in zip(out_c, out):
        torch.testing.assert_close(o_c, o, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads.keys()
    for name, g in grads.items():
        assert (grads_c[name] is None) == (g is None), name
        if g is not None:
            torch.testing.assert_close(grads_c[name], g, rtol=1e-5, atol=1e-6, msg=name)
    assert set(counters(checkpointed)) == set(counters(plain)) <= {1}, (
        'a BatchNorm counted the step twice: its statistics were updated twice')
    for (name, b), b_c in zip(plain.named_buffers(), checkpointed.buffers()):
        assert torch.equal(b_c, b), f'{name}: the checkpointed step left other BatchNorm statistics'


@pytest.mark.parametrize('kind', KINDS)
def test_grad_checkpointing_is_exact(kind):
    torch.manual_seed(0)
    assert_checkpointing_exact(create('hrnet_w18_small', **kind), torch.randn(2, 3, 72, 56))


@given(strategies.trained_models())
def test_grad_checkpointing_is_exact_for_any_model(build):
    """ features_only at any out_indices, any output_stride, and models that prune_intermediate_layers left."""
    kwargs, pruned = build
    torch.manual_seed(0)
    model = create('hrnet_w18_small', **kwargs)
    if pruned is not None:
        model.prune_intermediate_layers(pruned)
    assert_checkpointing_exact(model, torch.randn(2, 3, 40, 48))


def test_grad_checkpointing_forward_intermediates():
    torch.manual_seed(0)
    model = create('hrnet_w18_small', head='incre').train()
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing()
    x = torch.randn(2, 3, 64, 48)
    grads = []
    for m in (model, checkpointed):
        final, maps = m.forward_intermediates(x, indices=(0, 2, 4))
        sum(t.square().mean() for t in listed(final) + maps).backward()
        grads.append([p.grad for p in m.parameters()])
    assert set(counters(checkpointed)) == {1}
    for g_c, g in zip(*grads[::-1]):
        torch.testing.assert_close(g_c, g, rtol=1e-5, atol=1e-6)


def test_grad_checkpointing_can_be_turned_off():
    """ set_grad_checkpointing(False) goes back to storing activations: autograd then holds the layer1 blocks' own
    saved tensors (checkpointing keeps only each block's input), so more tensors are saved."""
    model = create('hrnet_w18_small', head='').train()
    x = torch.randn(1, 3, 64, 64)
    saved = []
    for enable in (False, True, False):
        model.set_grad_checkpointing(enable)
        count = [0]
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.__setitem__(0, count[0] + 1) or t, lambda t: t):
            out = model(x)
        saved.append(count[0])
        sum(o.sum() for o in out).backward()
    assert saved[1] < saved[0] == saved[2]


@pytest.mark.parametrize('kind', KINDS)
def test_bfloat16_autocast(kind):
    """ bf16 autocast on CPU: bf16 outputs within docs/training.md's bound of float32's (relative, norm-wise),
    finite gradients for the same parameters, pointing the same way (cosine similarity)."""
    bounds = tolerances()
    torch.manual_seed(0)
    model = create('hrnet_w18_small', **kind).train()
    x = torch.randn(2, 3, 96, 80)
    out, grads = train_step(copy.deepcopy(model), x)
    out_bf16, grads_bf16 = train_step(model, x, dtype=torch.bfloat16)
    assert all(o.dtype == torch.bfloat16 for o in out_bf16)
    y, y_bf16 = flat(out), flat(out_bf16)
    assert (y_bf16 - y).norm() / y.norm() <= bounds['bf16_output']
    assert [n for n, g in grads_bf16.items() if g is None] == [n for n, g in grads.items() if g is None] == []
    g, g_bf16 = flat(grads.values()), flat(grads_bf16.values())
    assert torch.isfinite(g_bf16).all()
    assert torch.nn.functional.cosine_similarity(g_bf16, g, dim=0) >= bounds['bf16_grad_cosine']


@pytest.mark.parametrize('kind', KINDS)
def test_channels_last(kind):
    """ A channels_last model and input: maps come out channels_last, outputs and gradients within docs/training.md's
    bounds of the contiguous model's (relative, norm-wise)."""
    bounds = tolerances()
    torch.manual_seed(0)
    model = create('hrnet_w18_small', **kind).train()
    x = torch.randn(2, 3, 96, 80)
    out, grads = train_step(copy.deepcopy(model), x)
    model = model.to(memory_format=torch.channels_last)
    out_cl, grads_cl = train_step(model, x.to(memory_format=torch.channels_last))
    assert all(o.is_contiguous(memory_format=torch.channels_last) for o in out_cl if o.dim() == 4)
    for o_cl, o in zip(out_cl, out):
        assert (o_cl - o).norm() / o.norm() <= bounds['channels_last_output']
    g, g_cl = flat(grads.values()), flat(grads_cl.values())
    assert (g_cl - g).norm() / g.norm() <= bounds['channels_last_grad']
