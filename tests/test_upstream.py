""" Same weights, same outputs as upstream timm's HRNet for input sizes divisible by 32."""
import copy

import pytest
import torch
from hypothesis import given

from target import skip_unless_package
skip_unless_package()  # with timm's own module under test, "upstream" is that same module

import timm  # noqa: E402
import strategies  # noqa: E402
from conftest import DEVICES, HEADS, VARIANT_PARAMS, assert_same, checkpoint, listed, upstream_model  # noqa: E402
from ops import dispatched_ops, first_difference  # noqa: E402
from timm_hrnet_patch import checkpoint_filter_fn  # noqa: E402


def _ours(variant: str, head: str, device: str) -> torch.nn.Module:
    """ Our model holding the upstream model's weights, built without random init (meta, then assign)."""
    with torch.device('meta'):
        model = timm.create_model(variant, head=head)
    model.load_state_dict(checkpoint_filter_fn(checkpoint(variant), model), assign=True)
    return model.eval().to(device)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('variant', VARIANT_PARAMS)
def test_outputs_equal_upstream(variant, device):
    theirs = upstream_model(variant)  # the checkpoint's source, shared: copied to move it
    theirs = theirs if device == 'cpu' else copy.deepcopy(theirs).to(device)
    ours = {head: _ours(variant, head, device) for head in HEADS}

    @strategies.for_case(variant, device)
    @given(spec=strategies.inputs(multiple_of=32))
    def check(spec):
        x = spec.make(device)
        with torch.inference_mode():
            stem = theirs.act2(theirs.bn2(theirs.conv2(theirs.act1(theirs.bn1(theirs.conv1(x))))))
            branches = theirs.stages(stem)
            expected = {
                'classification': [theirs(x)],
                'incre': [incre(b) for b, incre in zip(branches, theirs.incre_modules)],
                '': branches,
            }
            for head, model in ours.items():
                out = model(x)
                assert_same(listed(out), expected[head], head)

    check()


@pytest.mark.parametrize('variant', VARIANT_PARAMS)
def test_forward_dispatches_upstream_ops(variant):
    """ No forward regression by construction: the classification forward runs upstream's aten ops on the same shapes
    in the same order, so only Python overhead could differ. (The benchmark measures the rest.)"""
    x = torch.randn(2, 3, 64, 96)
    ours = dispatched_ops(_ours(variant, 'classification', 'cpu'), x)
    theirs = dispatched_ops(upstream_model(variant), x)
    assert ours == theirs, first_difference(ours, theirs)
