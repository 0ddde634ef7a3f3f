""" torch.compile(fullgraph=True) and torch.export work for every head and for features_only, with eager outputs.

Slow: each compiles hrnet_w18_small (the same code as every variant) on the test's device. Marked `torch`: what they
test depends on torch, so tox runs them on each torch (seed, timm1031), not on every timm."""
import copy

import pytest
import torch

from target import package_model
from common import DEVICES, HEADS, create, listed

KINDS = [pytest.param(dict(head=h), id=f'head={h!r}') for h in HEADS] + [
    pytest.param(dict(features_only=True, feature_location=h), id=f'features_only={h!r}')
    for h in package_model._FEATURE_LOCATIONS]
# inductor's code generation for the two heads whose ops are those of every kind (classification: incre, downsamp,
# final layer, pooling; concat: bilinear upsampling)
INDUCTOR_HEADS = ('classification', 'concat')


def _check_compiled(kind: dict, device: str, backend: str) -> None:
    torch._dynamo.reset()
    model = create('hrnet_w18_small', **kind).to(device)
    x = torch.randn(2, 3, 80, 72, device=device)  # not a multiple of 32
    with torch.inference_mode():
        expected = listed(model(x))
        out = listed(torch.compile(model, fullgraph=True, backend=backend)(x))
    assert [o.shape for o in out] == [e.shape for e in expected]
    for o, e in zip(out, expected):  # generated kernels may reorder float sums
        torch.testing.assert_close(o, e, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('kind', KINDS)
def test_compile_fullgraph(kind, device):
    """ dynamo traces the whole forward (no graph break) and AOTAutograd the graph, with eager's outputs."""
    _check_compiled(kind, device, 'aot_eager')


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize('device', DEVICES)
def test_compile_inductor(device):
    """ inductor's kernels give eager's outputs. Both heads in one test: one process pays inductor's start-up (about
    40 s here, then 5-20 s a model)."""
    for head in INDUCTOR_HEADS:
        _check_compiled(dict(head=head), device, 'inductor')


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('kind', KINDS)
def test_export(kind, device):
    model = create('hrnet_w18_small', **kind).to(device)
    x = torch.randn(2, 3, 80, 72, device=device)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        out, expected = listed(program.module()(x)), listed(model(x))
    assert [o.shape for o in out] == [e.shape for e in expected]
    for o, e in zip(out, expected):  # torch 2.2's export decomposes bilinear upsampling ('concat'): not bit-equal
        torch.testing.assert_close(o, e, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize('kind', [dict(head='concat'), dict(features_only=True, out_indices=(0, 2, 4))],
                         ids=['concat', 'features_only'])
def test_compile_grad_checkpointing(kind):
    """ A compiled model with gradient checkpointing trains as the eager one without: gradients and BatchNorm
    statistics within float tolerance (a second update of the statistics would be 10% of them off), counters 1.
    The backend is AOTAutograd's with the min-cut partitioner, which decides what the compiled backward recomputes,
    without inductor's code generation (test_compile_fullgraph covers inductor): 50 s a case on torch 2.2 here,
    where inductor took 170 s."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create('hrnet_w18_small', **kind).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing()
    x = torch.randn(2, 3, 64, 48)
    for m in (model, torch.compile(checkpointed, backend='aot_eager_decomp_partition')):
        sum(o.square().mean() for o in listed(m(x))).backward()
    for p, p_c in zip(model.parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p_c.grad, p.grad, rtol=1e-3, atol=1e-4)
    for (name, b), b_c in zip(model.named_buffers(), checkpointed.buffers()):
        if name.endswith('num_batches_tracked'):
            assert b_c == b == 1, name
        else:
            torch.testing.assert_close(b_c, b, rtol=1e-3, atol=1e-4, msg=name)
