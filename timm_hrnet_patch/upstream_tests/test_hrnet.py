""" HRNet heads ('classification', 'incre', ''), head-aware pretrained loading and inputs of any size.

Pretrained tests load a checkpoint saved from the classification model, the key layout of the released weights,
through timm's pretrained path (pretrained_cfg_overlay=dict(file=...)).
"""
import math
import os

import pytest
import torch

from timm import create_model, list_models
from timm.models.hrnet import checkpoint_filter_fn

torch_device = os.environ.get('TORCH_DEVICE', 'cpu')

HEADS = ['classification', 'incre', '']
HEAD_MODULES = ['incre_modules', 'downsamp_modules', 'final_layer', 'classifier']
ABSENT_HEAD_MODULES = {'classification': [], 'incre': HEAD_MODULES[1:], '': HEAD_MODULES}
INCRE_CHS = [128, 256, 512, 1024]


def _branch_chs(model_name):
    """ Channels of the four stage4 branches: 16-128 for hrnet_w18_small, else w-8w for hrnet_w<w>."""
    width = 16 if model_name == 'hrnet_w18_small' else int(model_name.split('_')[1][1:])
    return [width, 2 * width, 4 * width, 8 * width]


def _expected_shapes(model_name, head, batch_size, height, width):
    if head == 'classification':
        return [(batch_size, 1000)]
    chs = INCRE_CHS if head == 'incre' else _branch_chs(model_name)
    return [
        (batch_size, c, math.ceil(height / 2 ** i), math.ceil(width / 2 ** i))
        for i, c in zip(range(2, 6), chs)
    ]


@pytest.fixture(scope='module')
def w18_small_checkpoint(tmp_path_factory):
    """hrnet_w18_small classification weights, saved once per module: (path, state_dict)."""
    path = tmp_path_factory.mktemp('hrnet') / 'hrnet_w18_small.pth'
    torch.manual_seed(0)
    state_dict = create_model('hrnet_w18_small', head='classification').state_dict()
    torch.save(state_dict, path)
    return path, state_dict


@pytest.mark.base
@pytest.mark.parametrize('model_name', list_models('hrnet*'))
@pytest.mark.parametrize('head', HEADS)
def test_hrnet_head_forward(model_name, head):
    """Each head builds only its own modules and outputs logits (classification) or four maps."""
    model = create_model(model_name, head=head).eval().to(torch_device)
    prefixes = {k.split('.', 1)[0] for k in model.state_dict()}
    assert prefixes.isdisjoint(ABSENT_HEAD_MODULES[head])
    assert set(HEAD_MODULES) - set(ABSENT_HEAD_MODULES[head]) <= prefixes

    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 64, 64, device=torch_device))
    outputs = outputs if isinstance(outputs, list) else [outputs]
    assert [tuple(o.shape) for o in outputs] == _expected_shapes(model_name, head, 2, 64, 64)
    if head != 'classification':
        assert model.num_features == outputs[-1].shape[1]


@pytest.mark.base
@pytest.mark.parametrize('head', HEADS)
@pytest.mark.parametrize('input_size', [(65, 65), (33, 47), (224, 225)])
def test_hrnet_odd_input_size(head, input_size):
    """Inputs not divisible by 32 work, each stride 2 step rounds up."""
    model = create_model('hrnet_w18_small', head=head).eval().to(torch_device)
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, *input_size, device=torch_device))
    outputs = outputs if isinstance(outputs, list) else [outputs]
    assert [tuple(o.shape) for o in outputs] == _expected_shapes('hrnet_w18_small', head, 1, *input_size)


@pytest.mark.base
def test_hrnet_invalid_head():
    with pytest.raises(ValueError, match="Unknown HRNet head 'bogus'"):
        create_model('hrnet_w18_small', head='bogus')


@pytest.mark.base
def test_hrnet_cfg_not_mutated():
    assert create_model('hrnet_w18_small', stem_width=32).conv1.out_channels == 32
    assert create_model('hrnet_w18_small').conv1.out_channels == 64


@pytest.mark.base
@pytest.mark.parametrize('kwargs', [
    dict(head='classification'), dict(head='incre'), dict(head=''),
    dict(features_only=True), dict(features_only=True, feature_location=''),
])
def test_hrnet_pretrained_strict(kwargs, w18_small_checkpoint):
    """A classification checkpoint loads strictly into every head and features_only, head keys dropped."""
    path, state_dict = w18_small_checkpoint
    model = create_model(
        'hrnet_w18_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    loaded = model.state_dict()
    absent = ABSENT_HEAD_MODULES[kwargs.get('head', kwargs.get('feature_location', 'incre'))]
    expected = {k: v for k, v in state_dict.items() if k.split('.', 1)[0] not in absent}
    assert sorted(loaded) == sorted(expected)
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k


@pytest.mark.base
def test_hrnet_pretrained_mismatch_raises(w18_small_checkpoint, tmp_path):
    path = tmp_path / 'hrnet_w18_small.pth'
    state_dict = dict(w18_small_checkpoint[1])
    del state_dict['stage4.0.fuse_layers.0.1.0.weight']
    state_dict['extra.weight'] = torch.zeros(1)
    torch.save(state_dict, path)
    overlay = dict(pretrained_cfg_overlay=dict(file=str(path)))
    message = r'missing keys \(1\): stage4\.0\.fuse_layers\.0\.1\.0\.weight\. unexpected keys \(1\): extra\.weight'
    with pytest.raises(RuntimeError, match=message):
        create_model('hrnet_w18_small', pretrained=True, head='incre', **overlay)

    model = create_model('hrnet_w18_small', pretrained=True, head='incre', pretrained_strict=False, **overlay)
    assert torch.equal(model.state_dict()['conv1.weight'], state_dict['conv1.weight'])


@pytest.mark.base
def test_hrnet_checkpoint_filter_unwraps():
    """Checkpoints of the original HRNet repo: 'state_dict' container, DataParallel 'module.' prefix."""
    model = create_model('hrnet_w18_small', head='')
    state_dict = create_model('hrnet_w18_small').state_dict()
    wrapped = {'state_dict': {'module.' + k: v for k, v in state_dict.items()}}
    filtered = checkpoint_filter_fn(wrapped, model)
    assert sorted(filtered) == sorted(model.state_dict())


@pytest.mark.base
@pytest.mark.parametrize('kwargs', [
    dict(head='classification'), dict(head='incre'), dict(head=''),
    dict(features_only=True, out_indices=(1, 2)), dict(features_only=True, feature_location='', out_indices=(3,)),
    dict(features_only=True, out_indices=(0,)),
])
def test_hrnet_every_parameter_used(kwargs, w18_small_checkpoint):
    """Only what the outputs need is built (DDP w/ find_unused_parameters=False), pretrained weights load strictly."""
    path, state_dict = w18_small_checkpoint
    model = create_model(
        'hrnet_w18_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).train()
    loaded = model.state_dict()
    assert all(torch.equal(v, state_dict[k]) for k, v in loaded.items())
    assert sorted(k for k in state_dict if not k.startswith(model.unbuilt_prefixes())) == sorted(loaded)
    out = model(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in (out if isinstance(out, list) else [out])).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.base
@pytest.mark.parametrize('output_stride', [32, 16, 8])
@pytest.mark.parametrize('head', ['high_res', 'concat'])
def test_hrnet_representation_heads(head, output_stride, w18_small_checkpoint):
    """HRNetV1 (stride 4 branch) and HRNetV2 (4 branches concatenated at stride 4), at every output_stride."""
    path, state_dict = w18_small_checkpoint
    model = create_model(
        'hrnet_w18_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), head=head,
        output_stride=output_stride).eval().to(torch_device)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 70, device=torch_device))
    chs = _branch_chs('hrnet_w18_small')
    assert tuple(out.shape) == (1, chs[0] if head == 'high_res' else sum(chs), 17, 18)
    assert model.num_features == out.shape[1]
    expected = [2, 4] if head == 'high_res' else [2, 4, 8, min(16, output_stride), output_stride]
    assert [f['reduction'] for f in model.feature_info] == expected


@pytest.mark.base
@pytest.mark.parametrize('output_stride', [16, 8])
def test_hrnet_features_output_stride(output_stride, w18_small_checkpoint):
    path, _ = w18_small_checkpoint
    model = create_model(
        'hrnet_w18_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), features_only=True,
        output_stride=output_stride).eval().to(torch_device)
    reductions = [2, 4, 8, min(16, output_stride), output_stride]
    assert model.feature_info.reduction() == reductions
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64, device=torch_device))
    assert [o.shape[-1] for o in out] == [math.ceil(64 / r) for r in reductions]
