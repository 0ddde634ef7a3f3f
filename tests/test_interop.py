""" Clients that nobody here wrote, consuming the HRNet contract: segmentation-models-pytorch's `tu-hrnet_*`
encoders (features_only through timm.create_model, output_stride 16 for DeepLabV3+ and PAN), forward and backward.

They run in tox's `interop` env, which pins the clients and sets HRNET_INTEROP=1: there a missing client fails the
tests instead of skipping them.
"""
import os

import pytest
import torch

if os.environ.get('HRNET_INTEROP') != '1':
    pytest.importorskip('segmentation_models_pytorch', reason='segmentation-models-pytorch: tox -e interop')
import segmentation_models_pytorch as smp  # noqa: E402

from conftest import branch_chs, reduce  # noqa: E402

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
