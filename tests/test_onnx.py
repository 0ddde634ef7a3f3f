""" ONNX export at any input size (docs/deploy.md): every head and features_only, through torch.onnx.export's
dynamo-based exporter and its TorchScript-based one, with a dynamic height and width, run under onnxruntime at sizes
that are and are not multiples of 32, also after `reparameterize_model` has folded the BatchNorms; and timm's own
`timm.utils.onnx.onnx_export`, with and without `reparameterize_model` first. The oracle is the eager model's output
on the same input.

They run in tox's `interop` env, which pins onnx, onnxruntime and onnxscript and sets HRNET_INTEROP=1: there a
missing package fails the tests instead of skipping them.
"""
import os
import warnings

import pytest
import torch

if os.environ.get('HRNET_INTEROP') != '1':
    for name in ('onnx', 'onnxruntime', 'onnxscript'):
        pytest.importorskip(name, reason=f'{name}: tox -e interop')
import onnxruntime  # noqa: E402

import timm  # noqa: E402
from timm.utils import reparameterize_model  # noqa: E402
from timm.utils.onnx import onnx_export  # noqa: E402

from common import HEADS, LOCATION_PARAMS  # noqa: E402

VARIANT = 'hrnet_w18_small'
SIZES = [(224, 224), (256, 192), (65, 97)]  # square, a pose frame, odd sides (not multiples of 32)
TOLERANCE = dict(rtol=1e-3, atol=1e-3)  # docs/deploy.md states it
KINDS = [pytest.param(dict(head=h), id=f'head={h!r}') for h in HEADS] + [
    pytest.param(dict(features_only=True, feature_location=p.values[0]), id=f'features_only-{p.id}')
    for p in LOCATION_PARAMS]
EXPORTERS = ['dynamo', 'torchscript', 'dynamo-fused']  # fused: reparameterize_model first


def _export(model: torch.nn.Module, path: str, exporter: str) -> None:
    x = torch.randn(1, 3, *SIZES[0])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation, tracer warnings
        if exporter.startswith('dynamo'):
            dim = torch.export.Dim.DYNAMIC
            torch.onnx.export(
                model, (x,), path, dynamo=True, dynamic_shapes=({0: dim, 2: dim, 3: dim},), input_names=['x'])
        else:
            torch.onnx.export(
                model, (x,), path, dynamo=False, input_names=['x'], opset_version=17,
                dynamic_axes={'x': {0: 'batch', 2: 'height', 3: 'width'}})


def _eager(model: torch.nn.Module, x: torch.Tensor) -> list:
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize('exporter', EXPORTERS)
@pytest.mark.parametrize('kind', KINDS)
def test_export_runs_at_any_size(kind, exporter, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(VARIANT, **kind).eval()
    if exporter.endswith('fused'):
        model = reparameterize_model(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    path = str(tmp_path / 'model.onnx')
    _export(model, path, exporter)
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        expected = _eager(model, x)
        assert len(outputs) == len(expected), size
        for out, exp in zip(outputs, expected):
            torch.testing.assert_close(torch.from_numpy(out), exp, **TOLERANCE, msg=f'{size}')


@pytest.mark.parametrize('reparam', [False, True], ids=['plain', 'reparameterized'])
def test_timm_onnx_export(reparam, tmp_path):
    """ timm's own exporter (onnx_export.py), dynamic size, with its check of onnxruntime against eager."""
    torch.manual_seed(0)
    model = timm.create_model(VARIANT).eval()
    if reparam:
        model = reparameterize_model(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    path = str(tmp_path / 'model.onnx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        onnx_export(model, path, batch_size=1, input_size=(3, 224, 224), dynamic_size=True, check_forward=True)
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    x = torch.randn(1, 3, *SIZES[-1])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), _eager(model, x)[0], **TOLERANCE)
