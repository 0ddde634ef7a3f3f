""" The coverage matrix: every variant x head x pretrained x device, and features_only, in every run.

The matrix is explicit parametrization, so no combination is left to chance. Each case builds its model, loading
the synthetic checkpoint strictly through timm's offline hub path when pretrained, and checks every loaded tensor.
Hypothesis then draws the values around the case (batch, any input size in 16-256, 16-96 for the wide variants,
dtype on CUDA), with examples seeded by the case under the 'ci' profile (fewer for the wide variants, see
strategies.for_case); forward's shapes are checked on each. forward_features + forward_head and
forward_intermediates, each a forward more, are checked against forward on one more input per case, of odd sides
(strategies.ODD_INPUT).
"""
import copy
from typing import List

import pytest
import torch
from hypothesis import example, given

import strategies
from common import (
    CONTRACT, DEVICES, HEAD_MODULES, HEAD_PARAMS, LOCATION_PARAMS, MAX_SIDE, PRETRAINED_PARAMS, REDUCTIONS,
    VARIANT_PARAMS,
    assert_loaded, assert_same, create, expected_state, listed, map_shapes, output_shapes, reductions)

# CPU-vs-CUDA tolerance on the relative error norm |cuda - cpu| / |cpu|, per compute dtype (TF32 off, common.py).
# Measured on CPU autocast with the synthetic checkpoints: bfloat16 <= 0.11, float16 <= 0.023; on an H200 (torch
# 2.11): bfloat16 up to 0.252 (hrnet_w48_ssld, 'incre', pretrained).
RTOL = {torch.float32: 0.03, torch.bfloat16: 0.3, torch.float16: 0.06}


def _run(fn, x, dtype: torch.dtype, device: str = 'cpu'):
    with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        return fn(x)


def _assert_matches_cpu(out: List[torch.Tensor], reference: List[torch.Tensor], dtype, pretrained: bool) -> None:
    """ CUDA outputs against the float32 CPU ones. Randomly initialised nets (eval mode, untrained BN statistics)
    overflow float16, so for them float16 is checked for shape and dtype only. CUDA's autocast upsamples in float32
    (its float32 op list), so a map that sums an upsampled one comes out in float32."""
    assert all(o.dtype in (dtype, torch.float32) for o in out), [o.dtype for o in out]
    if dtype == torch.float16 and not pretrained:
        return
    for o, r in zip(out, reference):
        error = (o.float().cpu() - r).norm() / r.norm()
        assert error <= RTOL[dtype], f'relative error {error:.3g} on CUDA in {dtype}'


def _on(model: torch.nn.Module, device: str) -> torch.nn.Module:
    return model if device == 'cpu' else copy.deepcopy(model).to(device)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('pretrained', PRETRAINED_PARAMS)
@pytest.mark.parametrize('head', HEAD_PARAMS)
@pytest.mark.parametrize('variant', VARIANT_PARAMS)
def test_model(variant, head, pretrained, device, no_key_warnings):
    cpu_model = create(variant, pretrained, head=head)
    contract = CONTRACT[head]
    assert {k.split('.', 1)[0] for k in cpu_model.state_dict()} & set(HEAD_MODULES) == set(contract['modules'])
    if pretrained:
        assert_loaded(cpu_model, expected_state(variant, head))
    model = _on(cpu_model, device)
    channels = [f['num_chs'] for f in model.feature_info]
    assert [f['reduction'] for f in model.feature_info] == reductions(head)
    assert model.num_branches == len(contract['branches'])  # stock's: the final-stage maps the head taps

    @strategies.for_case(variant, head, pretrained, device)
    @given(spec=strategies.inputs(high=MAX_SIDE[variant]), dtype=strategies.dtypes(device))
    @example(spec=strategies.ODD_INPUT, dtype=torch.float32)
    def check(spec, dtype):
        x = spec.make(device)
        out = listed(_run(model, x, dtype, device))
        assert [tuple(o.shape) for o in out] == output_shapes(variant, head, spec.batch, spec.height, spec.width)
        if device != 'cpu':
            _assert_matches_cpu(out, listed(_run(cpu_model, x.cpu(), torch.float32)), dtype, pretrained)
        if spec != strategies.ODD_INPUT:  # the drawn inputs: forward's shapes; the methods below on the odd one
            return
        feats = _run(model.forward_features, x, dtype, device)
        assert_same(listed(_run(model.forward_head, feats, dtype, device)), out)
        maps = _run(lambda t: model.forward_intermediates(t, intermediates_only=True), x, dtype, device)
        expected_maps = map_shapes(variant, head, spec.batch, spec.height, spec.width)
        assert [tuple(m.shape) for m in maps] == expected_maps and [s[1] for s in expected_maps] == channels
        if contract['output'] == 'maps':  # the maps are the outputs (and the features)
            assert_same(listed(feats), out)
            assert_same(maps[1:], out)
        elif contract['output'] == 'first':
            assert_same(maps[1:], out)
        elif contract['output'] == 'concat':  # the stride 4 map comes first, as it is
            assert_same([out[0][:, :channels[1]]], maps[1:2])

    check()


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('pretrained', PRETRAINED_PARAMS)
@pytest.mark.parametrize('feature_location', LOCATION_PARAMS)
@pytest.mark.parametrize('variant', VARIANT_PARAMS)
def test_features_only(variant, feature_location, pretrained, device, no_key_warnings):
    cpu_model = create(variant, pretrained, features_only=True, feature_location=feature_location)
    if pretrained:
        assert_loaded(cpu_model, expected_state(variant, feature_location))
    model = _on(cpu_model, device)
    assert model.feature_info.reduction() == REDUCTIONS

    @strategies.for_case(variant, feature_location, pretrained, device)
    @given(spec=strategies.inputs(high=MAX_SIDE[variant]), dtype=strategies.dtypes(device))
    def check(spec, dtype):
        x = spec.make(device)
        out = _run(model, x, dtype, device)
        expected = map_shapes(variant, feature_location, spec.batch, spec.height, spec.width)
        assert [tuple(o.shape) for o in out] == expected
        assert model.feature_info.channels() == [s[1] for s in expected]
        if device != 'cpu':
            _assert_matches_cpu(out, _run(cpu_model, x.cpu(), torch.float32), dtype, pretrained)

    check()


@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('variant', VARIANT_PARAMS)
def test_output_stride(variant, output_stride, no_key_warnings):
    """ output_stride 16 and 8, for every head and features_only: the stride 2 convolutions below it run at stride 1
    and the later ones dilate, so the parameters are unchanged (the checkpoint loads strictly), feature_info reports
    the real strides and any input size works."""
    models = {}

    @strategies.for_case(variant, output_stride)
    @given(kind=strategies.model_kinds, spec=strategies.inputs(high=96))
    def check(kind, spec):
        head = kind.get('head', kind.get('feature_location'))
        key = tuple(sorted(kind.items()))
        if key not in models:
            models[key] = create(variant, True, output_stride=output_stride, **kind)
            assert_loaded(models[key], expected_state(variant, head))
        model = models[key]
        with torch.inference_mode():
            out = listed(model(spec.make()))
        shape = (variant, head, spec.batch, spec.height, spec.width)
        if kind.get('features_only'):
            assert model.feature_info.reduction() == reductions(head, output_stride)
            assert [tuple(o.shape) for o in out] == map_shapes(*shape, output_stride=output_stride)
        else:
            assert [f['reduction'] for f in model.feature_info] == reductions(head, output_stride)
            assert [tuple(o.shape) for o in out] == output_shapes(*shape, output_stride=output_stride)

    check()
