""" BatchNorm folding for inference through timm's own `timm.utils.reparameterize_model` (docs/deploy.md): every
BatchNorm goes into the convolution before it, for every head and features_only. Oracles: stock timm's own model
(upstream's module) with the same pretrained weights, for the classification head; the unfused eval model for the
others; and a count of the modules that must be gone. The ONNX export of a fused model is in test_onnx.py.
"""
import gc
import weakref

import pytest
import torch
import torch.nn as nn

from timm.utils import reparameterize_model

from common import LOCATION_PARAMS, HEAD_PARAMS, create, listed, upstream_model

VARIANT = 'hrnet_w18_small'
SIZES = [(64, 64), (65, 97)]
KINDS = [pytest.param(dict(head=p.values[0]), id=f'head-{p.id}') for p in HEAD_PARAMS] + [
    pytest.param(dict(features_only=True, feature_location=p.values[0]), id=f'features_only-{p.id}')
    for p in LOCATION_PARAMS]


def fused_tolerance(expected: torch.Tensor) -> dict:
    """ docs/deploy.md states it: folding changes float32 rounding only, relative to the output's magnitude."""
    return dict(rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def _count(model: nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize('kind', KINDS)
def test_reparameterize_folds_every_batchnorm(kind):
    model = create(VARIANT, pretrained=True, **kind)
    norms = _count(model, nn.BatchNorm2d)
    fused = reparameterize_model(model)
    assert _count(fused, nn.BatchNorm2d) == 0
    assert _count(model, nn.BatchNorm2d) == norms, 'reparameterize_model(inplace=False) changed the model'
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected, actual = listed(model(x)), listed(fused(x))
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, **fused_tolerance(e), msg=f'{size}')


def test_reparameterize_matches_stock_model():
    fused = reparameterize_model(create(VARIANT, pretrained=True))
    stock = upstream_model(VARIANT)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = stock(x)
        actual = fused(x)
    torch.testing.assert_close(actual, expected, **fused_tolerance(expected))


def test_reparameterize_refuses_training_model():
    model = create(VARIANT, pretrained=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match='model.eval()'):
        reparameterize_model(model, inplace=True)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())
    assert _count(reparameterize_model(model.eval()), nn.BatchNorm2d) == 0  # still usable


def test_foldable_model_is_freed_without_the_garbage_collector():
    """ A BatchNorm's fold reaches its modules through weak references: deleting the model frees it at once, as
    stock's, with no reference cycle left for the garbage collector."""
    gc.disable()
    try:
        model = create(VARIANT)
        bn = weakref.ref(model.bn1)
        del model
        assert bn() is None
    finally:
        gc.enable()
