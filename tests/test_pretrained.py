""" Pretrained loading through timm's real paths (offline HF cache, pretrained_cfg_overlay file)."""
import logging

import pytest
import torch
from hypothesis import given

import timm

import strategies
from target import layouts
from common import (
    HEAD_PARAMS, HEADS, assert_loaded, checkpoint, create, expected_state, listed, output_shapes, serve_modified,
    served_checkpoint)


@pytest.mark.parametrize('head', HEADS)
def test_seed_calls_verbatim(head):
    """ The reported calls, with the strict= alias, work for each head: the trunk loads, the output is the head's."""
    served_checkpoint('hrnet_w18')
    model = timm.create_model('hrnet_w18', pretrained=True, head=head, strict=False)
    assert_loaded(model, expected_state('hrnet_w18', head))
    model = timm.create_model('hrnet_w18', pretrained=False, head=head, strict=False).eval()
    with torch.no_grad():
        out = listed(model(torch.randn(1, 3, 64, 64)))
    assert [tuple(o.shape) for o in out] == output_shapes('hrnet_w18', head, 1, 64, 64)


def test_strict_alias_conflict():
    with pytest.raises(TypeError, match='alias of pretrained_strict'):
        timm.create_model('hrnet_w18_small', strict=True, pretrained_strict=False)


@pytest.mark.parametrize('head', HEADS)
def test_missing_keys_raise(head):
    variant = 'hrnet_w18_small'
    sd = {k: v for k, v in checkpoint(variant).items() if not k.startswith('stage4.')}
    overlay = serve_modified(variant, sd, 'no-stage4')
    with pytest.raises(RuntimeError, match=r'missing keys \(\d+\): stage4\.'):
        timm.create_model(variant, pretrained=True, head=head, pretrained_cfg_overlay=overlay)


def test_missing_keys_raise_with_new_num_classes():
    """ timm loads non-strict when the classifier is re-initialised, the trunk is still checked."""
    variant = 'hrnet_w18_small'
    sd = {k: v for k, v in checkpoint(variant).items() if k != 'layer1.0.conv1.weight'}
    overlay = serve_modified(variant, sd, 'no-layer1-conv')
    for num_classes in (0, 10):
        with pytest.raises(RuntimeError, match=r'missing keys \(1\): layer1\.0\.conv1\.weight'):
            timm.create_model(variant, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay)


def test_extra_keys_raise():
    variant = 'hrnet_w18_small'
    sd = dict(checkpoint(variant), **{'stage5.0.weight': torch.zeros(3), 'incre_modules.9.weight': torch.zeros(1)})
    overlay = serve_modified(variant, sd, 'extra')
    with pytest.raises(RuntimeError, match=r'unexpected keys \(2\): incre_modules\.9\.weight, stage5\.0\.weight'):
        timm.create_model(variant, pretrained=True, head='incre', pretrained_cfg_overlay=overlay)


def test_other_variant_raises():
    overlay = serve_modified('hrnet_w18', checkpoint('hrnet_w18_small'), 'from-w18-small')
    with pytest.raises(RuntimeError, match=r'hrnet_w18 .*missing keys'):
        timm.create_model('hrnet_w18', pretrained=True, head='', pretrained_cfg_overlay=overlay)


def test_wrong_shape_raises():
    variant = 'hrnet_w18_small'
    sd = dict(checkpoint(variant))
    sd['stage2.0.branches.0.0.conv1.weight'] = torch.zeros(1, 1, 3, 3)
    overlay = serve_modified(variant, sd, 'bad-shape')
    with pytest.raises(RuntimeError, match=r'stage2\.0\.branches\.0\.0\.conv1\.weight'):
        timm.create_model(variant, pretrained=True, pretrained_cfg_overlay=overlay)


@pytest.mark.parametrize('alias', ['strict', 'pretrained_strict'])
def test_loose_load_warns(alias, caplog):
    variant = 'hrnet_w18_small'
    full = checkpoint(variant)
    sd = {k: v for k, v in full.items() if not k.startswith('stage4.')}
    sd['extra.weight'] = torch.zeros(1)
    overlay = serve_modified(variant, sd, 'loose')
    with caplog.at_level(logging.WARNING):
        model = timm.create_model(variant, pretrained=True, pretrained_cfg_overlay=overlay, **{alias: False})
    assert any('missing keys' in r.getMessage() and 'extra.weight' in r.getMessage() for r in caplog.records)
    loaded = model.state_dict()
    assert torch.equal(loaded['layer1.0.conv1.weight'], full['layer1.0.conv1.weight'])
    # keys the checkpoint lacks are initialised as in a fresh build (the model is built on meta, then loaded)
    running_var = loaded['stage4.0.fuse_layers.0.1.1.running_var']
    assert torch.equal(running_var, torch.ones_like(running_var))
    assert not any(t.is_meta for t in loaded.values())


@pytest.mark.parametrize('num_classes', [0, 10])
def test_num_classes_reinit(num_classes):
    sd = served_checkpoint('hrnet_w18_small')
    model = timm.create_model('hrnet_w18_small', pretrained=True, num_classes=num_classes)
    expected = {k: v for k, v in sd.items() if not k.startswith('classifier.')}
    model_sd = model.state_dict()
    for k, v in expected.items():
        assert torch.equal(model_sd[k], v), k
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, num_classes or 2048)
    if num_classes:
        assert model.classifier.weight.shape == (num_classes, 2048)


@pytest.mark.parametrize('in_chans', [1, 4])
def test_in_chans_adapted(in_chans):
    sd = served_checkpoint('hrnet_w18_small')
    model = timm.create_model('hrnet_w18_small', pretrained=True, in_chans=in_chans, head='')
    rgb = sd['conv1.weight']
    assert model.conv1.weight.shape == (rgb.shape[0], in_chans, 3, 3)
    if in_chans == 1:
        assert torch.allclose(model.conv1.weight, rgb.sum(dim=1, keepdim=True))
    assert torch.equal(model.state_dict()['bn1.running_mean'], sd['bn1.running_mean'])
    assert len(model(torch.randn(1, in_chans, 64, 64))) == 4


@pytest.mark.parametrize('suffix', ['safetensors', 'pth'])
def test_pretrained_cfg_overlay_file(suffix, tmp_path, no_key_warnings):
    variant = 'hrnet_w18_small'
    sd = checkpoint(variant)
    path = tmp_path / f'weights.{suffix}'
    if suffix == 'pth':
        torch.save({'state_dict': {'module.' + k: v for k, v in sd.items()}}, path)  # wrapped training checkpoint
    else:
        import safetensors.torch
        safetensors.torch.save_file(sd, str(path))
    model = timm.create_model(variant, pretrained=True, head='incre', pretrained_cfg_overlay=dict(file=str(path)))
    assert_loaded(model, expected_state(variant, 'incre'))


@pytest.mark.parametrize('container', ['state_dict', 'model'])
def test_filter_unwraps_and_drops_head_keys(container):
    model = timm.create_model('hrnet_w18_small', head='')
    sd = checkpoint('hrnet_w18_small')
    out = layouts.checkpoint_filter_fn({container: {'module.' + k: v for k, v in sd.items()}}, model)
    assert set(out) == set(model.state_dict())
    assert all(out[k] is sd[k] for k in out)


@pytest.mark.parametrize('head', HEAD_PARAMS)
def test_corrupted_checkpoint_names_keys(head):
    """ Any checkpoint with missing, extra or wrong-shape keys fails to load with an error naming them."""
    variant = 'hrnet_w18_small'
    model = create(variant, head=head)
    full = checkpoint(variant)
    model_keys = set(model.state_dict())

    @strategies.for_case(head)
    @given(c=strategies.corruptions(full))
    def check(c):
        sd = {k: v for k, v in full.items() if k not in c.drop}
        sd.update({k: torch.zeros(2) for k in c.extra})
        if c.reshape:
            sd[c.reshape] = torch.zeros(3, *full[c.reshape].shape)
        # torch's load fills in BatchNorm num_batches_tracked counters a checkpoint lacks (old releases)
        missing = sorted(k for k in set(c.drop) & model_keys if not k.endswith('.num_batches_tracked'))
        unexpected = sorted(c.extra)
        if not (missing or unexpected or c.reshape in model_keys):  # only absent head modules or counters changed
            assert not model.load_state_dict(layouts.checkpoint_filter_fn(sd, model)).unexpected_keys
            return
        with pytest.raises(RuntimeError) as info:
            model.load_state_dict(layouts.checkpoint_filter_fn(sd, model))
        message = str(info.value)
        if missing:
            assert f'missing keys ({len(missing)}): ' + ', '.join(missing) in message
        if unexpected:
            assert f'unexpected keys ({len(unexpected)}): ' + ', '.join(unexpected) in message
        if not (missing or unexpected):
            assert f'size mismatch for {c.reshape}' in message

    check()


@pytest.mark.parametrize('kwargs', [dict(), dict(num_classes=10), dict(head=''), dict(features_only=True)])
def test_pretrained_build_skips_random_init(kwargs):
    """ Pretrained models are built on meta and take the checkpoint's tensors: nothing is left on meta, parameters
    train as usual, and a resized classifier gets timm's fresh init."""
    variant = 'hrnet_w18_small'
    sd = served_checkpoint(variant)
    model = timm.create_model(variant, pretrained=True, **kwargs)
    assert model.training and all(p.requires_grad and not p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())
    model_sd = model.state_dict()
    assert all(torch.equal(model_sd[k], sd[k]) for k in model_sd if not k.startswith('classifier.'))
    if kwargs.get('num_classes'):
        bound = 2048 ** -0.5  # nn.Linear's default init: uniform within 1/sqrt(fan_in)
        assert model.classifier.weight.shape == (10, 2048) and 0 < model.classifier.weight.abs().max() <= bound


def test_pretrained_half_checkpoint_loads_in_float32():
    variant = 'hrnet_w18_small'
    half = {k: v.half() if v.is_floating_point() else v for k, v in checkpoint(variant).items()}
    model = timm.create_model(variant, pretrained=True, pretrained_cfg_overlay=serve_modified(variant, half, 'half'))
    model_sd = model.state_dict()
    assert {v.dtype for v in model_sd.values()} == {torch.float32, torch.int64}
    assert all(torch.equal(model_sd[k], v.to(model_sd[k].dtype)) for k, v in half.items())
