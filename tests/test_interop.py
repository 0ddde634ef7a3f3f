""" Clients that nobody here wrote, consuming the HRNet contract, forward and backward: segmentation-models-pytorch's
`tu-hrnet_*` encoders (features_only through timm.create_model, output_stride 16 for DeepLabV3+ and PAN) and
transformers' TimmBackbone (features_only, out_indices as transformers passes them).

They run in tox's `interop` env, which pins the clients and sets HRNET_INTEROP=1: there a missing client fails the
tests instead of skipping them.
"""
import os
import subprocess
import sys

import pytest
import torch

if os.environ.get('HRNET_INTEROP') != '1':
    pytest.importorskip('segmentation_models_pytorch', reason='segmentation-models-pytorch: tox -e interop')
    pytest.importorskip('transformers', reason='transformers: tox -e interop')
import segmentation_models_pytorch as smp  # noqa: E402
import transformers  # noqa: E402

from common import INCRE_CHS, REDUCTIONS, branch_chs, reduce  # noqa: E402

ENCODERS = ['hrnet_w18_small', 'hrnet_w18']
# architecture: (input sizes it allows here; PAN's pyramid attention pools the stride 16 map by 8: 128 and up)
ARCHS = {
    'Unet': [(64, 96), (128, 160)],
    'FPN': [(64, 96), (128, 160)],
    'DeepLabV3Plus': [(64, 96), (128, 160)],
    'PAN': [(128, 128), (160, 224)],
}
CASES = [(a, e, s) for a, sizes in ARCHS.items() for e in ENCODERS for s in sizes]


@pytest.mark.parametrize('arch, encoder, size', CASES)
def test_smp_forward_backward(arch, encoder, size):
    torch.manual_seed(0)
    model = getattr(smp, arch)(encoder_name=f'tu-{encoder}', encoder_weights=None, classes=3).train()
    x = torch.randn(2, 3, *size)
    features = model.encoder(x)
    output_stride = model.encoder.output_stride
    assert output_stride == (16 if arch in ('DeepLabV3Plus', 'PAN') else 32)
    # smp's features: the input, then the stem and the 4 incre maps, the deepest at the encoder's output stride
    assert [tuple(f.shape[1:]) for f in features[1:]] == [
        (c, *reduce(*size, min(r, output_stride))) for c, r in zip([64, 128, 256, 512, 1024], [2, 4, 8, 16, 32])]
    out = model(x)
    assert out.shape == (2, 3, *size) and torch.isfinite(out).all()
    out.square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    if arch == 'DeepLabV3Plus':  # its decoder takes the stride 4 and deepest maps only, not the encoder's fault
        assert unused and all(n.startswith('encoder.model.') for n in unused)
    else:
        assert not unused
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_smp_encoder_channels_follow_the_variant():
    """ feature_location 'incre' (smp's default) gives 128-1024 channels whatever the width; '' the branch widths."""
    encoder = smp.encoders.get_encoder('tu-hrnet_w18', feature_location='')
    assert list(encoder.out_channels)[2:] == branch_chs('hrnet_w18')


@pytest.mark.parametrize('out_indices', [None, (1, 2, 3, 4)], ids=['default', '1-4'])
@pytest.mark.parametrize('encoder', ENCODERS)
def test_transformers_timm_backbone(encoder, out_indices):
    """ TimmBackbone builds features_only with out_indices (-1,) by default: the deepest incre map alone."""
    torch.manual_seed(0)
    config = transformers.TimmBackboneConfig(backbone=encoder, **({'out_indices': out_indices} if out_indices else {}))
    model = transformers.TimmBackbone(config).train()
    taken = out_indices or (4,)
    size = (80, 112)
    assert list(model.channels) == [[64, *INCRE_CHS][i] for i in taken]
    maps = model(torch.randn(2, 3, *size)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(2, [64, *INCRE_CHS][i], *reduce(*size, REDUCTIONS[i])) for i in taken]
    sum(m.square().mean() for m in maps).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('out_indices', [None, (0, 2, 4), (1, 2, 3, 4)], ids=['default', '0-2-4', '1-4'])
def test_transformers_output_hidden_states(out_indices):
    """ output_hidden_states sets the FeatureDictNet return_layers to every feature module and indexes the result by
    feature position: one hidden state per feature_info entry, the map where the model computes it (the stem always,
    the out_indices maps), None in the others (docs/heads.md); feature_maps as without it; the next call plain."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)
    config = transformers.TimmBackboneConfig(
        backbone='hrnet_w18_small', **({'out_indices': out_indices} if out_indices else {}))
    model = transformers.TimmBackbone(config).eval()
    taken = out_indices or (4,)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        plain = model(x).feature_maps
    assert len(out.hidden_states) == 5
    filled = [i for i, h in enumerate(out.hidden_states) if h is not None]
    assert filled == sorted({0, *taken})
    assert [tuple(out.hidden_states[i].shape[1:]) for i in filled] == [
        ([64, *INCRE_CHS][i], *reduce(64, 96, REDUCTIONS[i])) for i in filled]
    assert len(out.feature_maps) == len(plain) == len(taken)
    assert all(torch.equal(a, b) for a, b in zip(out.feature_maps, plain))
    assert all(torch.equal(out.hidden_states[i], m) for i, m in zip(taken, plain))


@pytest.mark.parametrize('cls', ['TimmWrapperModel', 'TimmWrapperForImageClassification'])
def test_transformers_gradient_checkpointing(cls):
    """ transformers' TimmWrapper probes set_grad_checkpointing; gradient_checkpointing_enable() then works, and a
    training step gives the gradients and BatchNorm statistics of the same step without it."""
    config = transformers.TimmWrapperConfig(architecture='hrnet_w18_small', num_labels=3)
    torch.manual_seed(0)
    models = [getattr(transformers, cls)(config).train() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    assert models[1].supports_gradient_checkpointing
    models[1].gradient_checkpointing_enable()
    assert models[1].timm_model.grad_checkpointing and not models[0].timm_model.grad_checkpointing
    x = torch.randn(2, 3, 64, 64)
    for model in models:
        out = model(pixel_values=x)
        (out.logits if cls.endswith('Classification') else out.last_hidden_state).square().mean().backward()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(models[0].named_buffers(), models[1].buffers()):
        assert torch.equal(a, b), name


def test_transformers_first_gets_the_fixed_model():
    """ transformers probes timm with importlib.util.find_spec before importing it; the start-up hook must still
    patch (a fresh interpreter, transformers imported before timm)."""
    out = subprocess.run([sys.executable, '-c', (
        'import sys; from transformers import TimmBackbone, TimmBackboneConfig\n'
        'm = TimmBackbone(TimmBackboneConfig(backbone="hrnet_w18_small"))\n'
        'print(type(m._backbone).__module__, m._backbone.unbuilt_prefixes()[:1])')],
        capture_output=True, text=True, env=dict(os.environ, TIMM_HRNET_PATCH='1'))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == 'timm_hrnet_patch.features'  # the package's features_only class
