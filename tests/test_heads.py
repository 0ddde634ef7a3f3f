""" Head contract: construction, forward shapes, feature_info, input sizes, errors and purity."""
import copy

import pytest
import torch

import timm
from timm_hrnet_patch import hrnet

from conftest import HEADS, VARIANTS, built

INCRE_CHS = [128, 256, 512, 1024]
HEAD_MODULES = ('incre_modules', 'downsamp_modules', 'final_layer')
BUILT = {'classification': HEAD_MODULES, 'incre': ('incre_modules',), '': ()}


def branch_chs(variant):
    cfg = hrnet.cfg_cls[{'hrnet_w18_ssld': 'hrnet_w18', 'hrnet_w48_ssld': 'hrnet_w48'}.get(variant, variant)]
    return list(cfg['stage4']['num_channels'])


def expected_maps(variant, head, size, batch=1):
    chs = INCRE_CHS if head == 'incre' else branch_chs(variant)
    h, w = size
    shapes = []
    for _ in range(2):  # stem: two stride-2 convs (k3, p1): ceil halving
        h, w = (h + 1) // 2, (w + 1) // 2
    for c in chs:
        shapes.append((batch, c, h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return shapes


@pytest.mark.parametrize('head', HEADS)
@pytest.mark.parametrize('variant', VARIANTS)
def test_head_contract(variant, head):
    model = built(variant, head)
    for name in HEAD_MODULES:
        assert (getattr(model, name) is not None) == (name in BUILT[head]), name
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
        head_out = model.forward_head(feats)
    if head == 'classification':
        assert out.shape == (2, 1000)
        assert feats.shape == (2, model.num_features, 2, 3)
        torch.testing.assert_close(head_out, out, rtol=0, atol=0)
        channels = INCRE_CHS
    else:
        assert [tuple(o.shape) for o in out] == expected_maps(variant, head, (64, 96), batch=2)
        assert isinstance(feats, list) and all(torch.equal(a, b) for a, b in zip(feats, out))
        assert model.num_features == model.head_hidden_size == out[-1].shape[1]
        assert model.num_classes == 0
        channels = [o.shape[1] for o in out]
    assert [f['num_chs'] for f in model.feature_info] == [64] + channels
    assert [f['reduction'] for f in model.feature_info] == [2, 4, 8, 16, 32]


@pytest.mark.parametrize('variant', ['hrnet_w18_small', 'hrnet_w32'])
@pytest.mark.parametrize('size', [(65, 65), (100, 100), (224, 225), (33, 47), (16, 16), (17, 250)])
def test_any_input_size(variant, size):
    with torch.no_grad():
        out = built(variant, '')(torch.randn(1, 3, *size))
        assert [tuple(o.shape) for o in out] == expected_maps(variant, '', size)
        incre = built(variant, 'incre')(torch.randn(1, 3, *size))
        assert [tuple(o.shape) for o in incre] == expected_maps(variant, 'incre', size)
        logits = built(variant)(torch.randn(2, 3, *size))
        assert logits.shape == (2, 1000)


def test_num_classes_and_pool():
    x = torch.randn(2, 3, 64, 64)
    assert timm.create_model('hrnet_w18_small', num_classes=0)(x).shape == (2, 2048)
    assert timm.create_model('hrnet_w18_small', num_classes=0, global_pool='')(x).shape == (2, 2048, 2, 2)
    assert timm.create_model('hrnet_w18_small', num_classes=7)(x).shape == (2, 7)
    with pytest.raises(ValueError, match=r"global_pool='' .* needs num_classes=0"):
        timm.create_model('hrnet_w18_small', num_classes=7, global_pool='')


@pytest.mark.parametrize('head', ['bogus', 'Incre', 'classifier', 0])
def test_invalid_head(head):
    with pytest.raises(ValueError, match=r"Unknown HRNet head .*'classification', 'incre', ''"):
        timm.create_model('hrnet_w18_small', head=head)


def test_head_none_aliases_headless():
    """ None is an alias of '' where it reaches the model (timm.create_model drops None-valued kwargs)."""
    model = timm.models.hrnet_w18_small(head=None)
    assert model.head == '' and model.incre_modules is None


def test_invalid_feature_location():
    with pytest.raises(ValueError, match=r"feature_location 'bogus'"):
        timm.create_model('hrnet_w18_small', features_only=True, feature_location='bogus')


def test_unknown_kwarg_raises():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): \['bogus_kwarg'\]"):
        timm.create_model('hrnet_w18_small', bogus_kwarg=1)


def test_output_stride_error():
    with pytest.raises(ValueError, match='output_stride=32 only'):
        timm.create_model('hrnet_w18_small', output_stride=16)


def test_construction_is_pure():
    before = copy.deepcopy(hrnet.cfg_cls)
    assert timm.create_model('hrnet_w18_small', stem_width=32).conv1.out_channels == 32
    timm.create_model('hrnet_w18_ssld', head='')
    assert hrnet.cfg_cls == before
    assert timm.create_model('hrnet_w18_small').conv1.out_channels == 64
    assert timm.create_model('hrnet_w18_ssld').final_layer[0].bias is None
    assert timm.create_model('hrnet_w18').final_layer[0].bias is not None


@pytest.mark.parametrize('feature_location', ['incre', ''])
def test_features_only(feature_location):
    model = timm.create_model('hrnet_w18', features_only=True, feature_location=feature_location).eval()
    out = model(torch.randn(1, 3, 96, 64))
    chs = INCRE_CHS if feature_location == 'incre' else branch_chs('hrnet_w18')
    assert model.feature_info.channels() == [64] + chs == [o.shape[1] for o in out]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert [tuple(o.shape[-2:]) for o in out] == [(48, 32), (24, 16), (12, 8), (6, 4), (3, 2)]
    model = timm.create_model('hrnet_w18', features_only=True, feature_location=feature_location, out_indices=(1, 4))
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [chs[0], chs[3]]


@pytest.mark.parametrize('head', HEADS)
def test_forward_intermediates(head):
    model = timm.create_model('hrnet_w18_small', head=head).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        feats = model.forward_features(x)
        only = model.forward_intermediates(x, indices=[0, 4], intermediates_only=True)
    assert [t.shape[1] for t in intermediates] == [f['num_chs'] for f in model.feature_info]
    if head == 'classification':
        torch.testing.assert_close(final, feats, rtol=0, atol=0)
    else:
        assert all(torch.equal(a, b) for a, b in zip(final, feats))
        assert all(torch.equal(a, b) for a, b in zip(intermediates[1:], feats))
    assert torch.equal(only[0], intermediates[0]) and torch.equal(only[1], intermediates[4])


@pytest.mark.parametrize('head', HEADS)
@pytest.mark.parametrize('index', [0, 2, 4])
def test_prune_intermediate_layers(head, index):
    model = timm.create_model('hrnet_w18_small', head=head).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[index], intermediates_only=True)[0]
        model.prune_intermediate_layers([index])
        final, intermediates = model.forward_intermediates(x, indices=[index])
        feats = model.forward_features(x)
    assert torch.equal(intermediates[0], expected)
    assert model.final_layer is None and model.num_classes == 0
    if index == 0:
        assert torch.equal(final, feats) and torch.equal(model(x), feats)
        assert model.num_features == feats.shape[1]
    else:
        assert all(torch.equal(a, b) for a, b in zip(final, feats)) and torch.equal(feats[index - 1], expected)
        assert model.num_features == feats[-1].shape[1]


def test_reset_classifier():
    x = torch.randn(2, 3, 64, 64)
    model = timm.create_model('hrnet_w18_small').eval()
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0, '')
    assert model(x).shape == (2, 2048, 2, 2)
    with pytest.raises(ValueError, match="global_pool='' .* needs num_classes=0"):
        model.reset_classifier(3)
    for head in ('incre', ''):
        model = timm.create_model('hrnet_w18_small', head=head)
        model.reset_classifier(0)
        assert isinstance(model(x), list)
        with pytest.raises(ValueError, match=f"head={head!r} outputs a list of feature maps"):
            model.reset_classifier(10)


def test_group_matcher():
    model = timm.create_model('hrnet_w18_small')
    matcher = model.group_matcher()
    assert matcher['stem'] and matcher['block_types']
    groups = timm.models.group_parameters(model, matcher)
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))


@pytest.mark.parametrize('head', HEADS)
def test_device_dtype_kwargs(head):
    model = timm.create_model('hrnet_w18_small', head=head, device='meta', dtype=torch.bfloat16)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {('meta', torch.bfloat16)}
    model = timm.create_model('hrnet_w18_small', head=head, dtype=torch.float64).eval()
    out = model(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    assert (out if head == 'classification' else out[0]).dtype == torch.float64
