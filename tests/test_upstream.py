""" Same weights, same outputs as upstream timm's HRNet for input sizes divisible by 32."""
import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given


import timm  # noqa: E402
import strategies  # noqa: E402
from common import (  # noqa: E402
    DEVICES, HEADS, MAX_SIDE, VARIANT_PARAMS, assert_same, checkpoint, listed, upstream_model)
from ops import dispatched_ops, first_difference  # noqa: E402
from synthetic import upstream  # noqa: E402  (timm's own module: the registry holds ours)
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
    @given(spec=strategies.inputs(multiple_of=32, high=MAX_SIDE[variant]))
    def check(spec):
        x = spec.make(device)
        with torch.inference_mode():
            stem = theirs.act2(theirs.bn2(theirs.conv2(theirs.act1(theirs.bn1(theirs.conv1(x))))))
            branches = theirs.stages(stem)
            expected = {
                'classification': [theirs(x)],
                'incre': [incre(b) for b, incre in zip(branches, theirs.incre_modules)],
                '': branches,
                'high_res': branches[:1],  # HRNetV1: the stride 4 map of the same fused final stage
                'concat': [torch.cat([branches[0]] + [  # HRNetV2, as mmseg's resize_concat builds it
                    F.interpolate(b, size=branches[0].shape[-2:], mode='bilinear', align_corners=False)
                    for b in branches[1:]], dim=1)],
            }
            for head, model in ours.items():
                out = model(x)
                assert_same(listed(out), expected[head], head)

    check()


@pytest.mark.parametrize('head', ['classification', ''])
@pytest.mark.parametrize('variant', VARIANT_PARAMS)
def test_forward_dispatches_upstream_ops(variant, head):
    """ No forward regression by construction: the classification and headless forwards run upstream's aten ops on the
    same shapes in the same order, so only Python overhead could differ. (The benchmark measures the rest.) Upstream's
    'incre' is the bug fixed here: it skips its incre modules, so it runs fewer ops."""
    x = torch.randn(2, 3, 64, 96)
    ours = dispatched_ops(_ours(variant, head, 'cpu'), x)
    theirs = dispatched_ops(upstream_model(variant) if head else getattr(upstream, variant)(head='').eval(), x)
    assert ours == theirs, first_difference(ours, theirs)
