""" Same weights, same outputs as upstream timm's HRNet for input sizes divisible by 32."""
import copy

import pytest
import torch

import timm
import timm.models.hrnet as upstream

from conftest import VARIANTS, checkpoint, upstream_model

HEAD_MODULES = ('incre_modules', 'downsamp_modules', 'final_layer', 'classifier')


@pytest.mark.parametrize('variant', VARIANTS)
def test_outputs_equal_upstream(variant):
    sd = checkpoint(variant)
    theirs = upstream_model(variant)
    theirs.load_state_dict(sd)
    # upstream's headless features model: the ssld variants share the w18 / w48 trunk cfgs
    feats_theirs = upstream.HighResolutionNetFeatures(
        copy.deepcopy(upstream.cfg_cls[variant.replace('_ssld', '')]), feature_location='').eval()
    feats_theirs.load_state_dict({k: v for k, v in sd.items() if k.split('.')[0] not in HEAD_MODULES})
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = theirs(x)
        expected_feats = theirs.forward_intermediates(x, intermediates_only=True) \
            if hasattr(theirs, 'forward_intermediates') else None
        expected_branches = feats_theirs(x)[1:]
        for head in ('classification', 'incre', ''):
            ours = timm.create_model(variant, head=head).eval()
            keep = set(ours.state_dict())
            ours.load_state_dict({k: v for k, v in sd.items() if k in keep})
            out = ours(x)
            if head == 'classification':
                assert torch.equal(out, expected)
            elif head == 'incre':
                incre_expected = [incre(b) for b, incre in zip(expected_branches, theirs.incre_modules)]
                assert all(torch.equal(a, b) for a, b in zip(out, incre_expected))
                if expected_feats is not None:
                    assert all(torch.equal(a, b) for a, b in zip(out, expected_feats[1:]))
            else:
                assert all(torch.equal(a, b) for a, b in zip(out, expected_branches))
