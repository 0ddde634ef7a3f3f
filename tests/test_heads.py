""" Head contract: construction, forward shapes, feature_info, input sizes, errors and purity."""
import copy
import re

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import timm
from timm.models import adapt_input_conv

import strategies
from synthetic import upstream
from target import hrnet
from common import (
    CONTRACT, DEVICES, HEADS, INCRE_CHS, PRETRAINED_PARAMS, VARIANT_PARAMS, assert_same, branch_chs,
    create, expected_state, listed, output_shapes)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('pretrained', PRETRAINED_PARAMS)
@pytest.mark.parametrize('variant', VARIANT_PARAMS)
def test_construction_kwargs(variant, pretrained, device):
    """ num_classes, global_pool and in_chans around every variant, for any head: shapes, and with pretrained
    weights the trunk equals the checkpoint, conv1 adapted as timm adapts it and the classifier new when resized."""

    @strategies.for_case(variant, pretrained, device)
    @given(kwargs=strategies.construction_kwargs(), data=st.data())
    def check(kwargs, data):
        head, num_classes, global_pool, in_chans = (
            kwargs[k] for k in ('head', 'num_classes', 'global_pool', 'in_chans'))
        model = create(variant, pretrained, **kwargs).to(device)
        spec = data.draw(strategies.inputs(chans=in_chans, high=96))
        if head == 'classification' and num_classes and not global_pool:  # builds as timm's, cannot classify
            error = rf"global_pool='' .* classifier \(num_classes={num_classes}\) needs pooled features"
            with pytest.raises(ValueError, match=error):
                model(spec.make(device))
            return
        with torch.inference_mode():
            out = model(spec.make(device))
        if head != 'classification':
            num_classes, global_pool = 0, 'avg'  # ignored by the feature heads
        assert [tuple(o.shape) for o in listed(out)] == \
            output_shapes(variant, head, spec.batch, spec.height, spec.width, num_classes, global_pool)
        if pretrained:
            expected = dict(expected_state(variant, head))
            expected['conv1.weight'] = adapt_input_conv(in_chans, expected['conv1.weight'])
            if head == 'classification' and num_classes != 1000:
                del expected['classifier.weight'], expected['classifier.bias']
            model_sd = model.state_dict()
            for k, v in expected.items():
                torch.testing.assert_close(model_sd[k].cpu(), v, rtol=0, atol=0, msg=k)
            new = {'classifier.weight', 'classifier.bias'} if num_classes not in (0, 1000) else set()
            assert set(model_sd) - set(expected) == new

    check()


@given(head=strategies.invalid_heads)
def test_invalid_head(head):
    with pytest.raises(ValueError, match=r"Unknown HRNet head .*'classification', 'incre', ''") as info:
        timm.create_model('hrnet_w18_small', head=head)
    assert repr(head) in str(info.value)


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
    with pytest.raises(ValueError, match=r'supports output_stride \(8, 16, 32\), got 64'):
        timm.create_model('hrnet_w18_small', output_stride=64)


@given(calls=st.lists(strategies.builds(), min_size=1, max_size=4))
def test_construction_is_pure(calls):
    """ No build leaks into the arch cfgs or into later builds: afterwards each variant's default model has
    upstream's exact key and shape layout (the ssld head convs without bias included)."""
    before = copy.deepcopy(hrnet.cfg_cls)
    with torch.device('meta'):
        for variant, kwargs in calls:
            model = timm.create_model(variant, **kwargs)
            assert model.conv1.out_channels == kwargs.get('stem_width', 64)
        assert hrnet.cfg_cls == before
        layouts = {v: {k: t.shape for k, t in timm.create_model(v).state_dict().items()} for v, _ in calls}
        for variant, layout in layouts.items():  # upstream's module built from its own entrypoint, on meta too
            assert layout == {k: t.shape for k, t in getattr(upstream, variant)().state_dict().items()}


@pytest.mark.parametrize('feature_location', ['incre', ''])
def test_features_only_out_indices(feature_location):
    model = timm.create_model('hrnet_w18', features_only=True, feature_location=feature_location, out_indices=(1, 4))
    chs = INCRE_CHS if feature_location == 'incre' else branch_chs('hrnet_w18')
    assert model.feature_info.channels() == [chs[0], chs[3]]
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [chs[0], chs[3]]


def _unused(model: torch.nn.Module, x: torch.Tensor) -> list:
    """ Names of the parameters without a gradient after one training forward and backward."""
    model.zero_grad(set_to_none=True)
    sum(o.sum() for o in listed(model.train()(x))).backward()
    return [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.parametrize('head', HEADS)
def test_every_parameter_gets_a_gradient(head):
    """ Each head builds only what its output uses (DDP with find_unused_parameters=False)."""
    assert _unused(timm.create_model('hrnet_w18_small', head=head), torch.randn(2, 3, 64, 64)) == []


@pytest.mark.parametrize('feature_location', ['incre', ''])
def test_features_only_builds_what_out_indices_take(feature_location):
    """ features_only with any out_indices (negative ones from the end, transformers' default (-1,) among them):
    the maps are the full model's at those taps, in tap order, and every parameter gets a gradient."""
    full = timm.create_model('hrnet_w18_small', features_only=True, feature_location=feature_location).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        taps = full(x)

    @example(out_indices=(-1,))
    @example(out_indices=(0,))
    @example(out_indices=(-4, 3))
    @example(out_indices=(2, -1, 0))
    @given(out_indices=strategies.out_indices)
    def check(out_indices):
        model = timm.create_model(
            'hrnet_w18_small', features_only=True, feature_location=feature_location, out_indices=out_indices)
        model.load_state_dict({k: v for k, v in full.state_dict().items() if k in model.state_dict()})
        with torch.no_grad():
            maps = model.eval()(x)
        expected = [taps[i] for i in sorted(i % 5 for i in out_indices)]
        assert len(maps) == len(expected) and all(torch.equal(a, b) for a, b in zip(maps, expected)), out_indices
        assert _unused(model, x) == [], out_indices

    check()


def dilated_by_surgery(model: torch.nn.Module, output_stride: int) -> torch.nn.Module:
    """ The stride 32 model made dilated in place, from its module names alone (not the package's dilation code): a
    3x3 conv from branch src to branch dst (nominal strides 4 * 2 ** b) dilates as src's maps do, by
    max(1, 4 * 2 ** src // output_stride), and a stride 2 one runs at stride 1 where dst's maps stay at src's
    resolution. Branch pairs: layer1 and branch b's blocks and incre module (b, b); transition t's conv to its new
    branch (t - 1, t), to an old one (i, i); a fuse layer's k-th conv down from branch j (j + k, j + k + 1); the
    classification head's i-th downsample (i, i + 1)."""
    patterns = [
        (r'layer1\.', lambda m: (0, 0)),
        (r'(?:stage\d\.\d+\.branches|incre_modules)\.(\d)\.', lambda m: (int(m[1]), int(m[1]))),
        (r'transition(\d)\.(\d)\.0\.0$', lambda m: (int(m[1]) - 1, int(m[1]))),
        (r'transition\d\.(\d)\.0$', lambda m: (int(m[1]), int(m[1]))),
        (r'stage\d\.\d+\.fuse_layers\.\d\.(\d)\.(\d)\.0$',
         lambda m: (int(m[1]) + int(m[2]), int(m[1]) + int(m[2]) + 1)),
        (r'downsamp_modules\.(\d)\.0$', lambda m: (int(m[1]), int(m[1]) + 1)),
    ]
    dilation = [max(1, 4 * 2 ** b // output_stride) for b in range(4)]
    for name, conv in model.named_modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3) and name not in ('conv1', 'conv2'):
            src, dst = next(f(m) for p, f in patterns for m in [re.match(p, name)] if m)
            conv.dilation = conv.padding = (dilation[src], dilation[src])
            if dst > src and dilation[dst] > dilation[src]:
                conv.stride = (1, 1)
    return model


@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('head', HEADS)
def test_output_stride_is_the_dilated_network(head, output_stride):
    """ output_stride 16 / 8 computes what the stride 32 network dilated by surgery computes, on the same weights: the
    right convolutions dilate by the right factor (shapes alone would pass a model that does not dilate)."""
    model = timm.create_model('hrnet_w18_small', head=head, output_stride=output_stride).eval()
    reference = timm.create_model('hrnet_w18_small', head=head)
    reference.load_state_dict(model.state_dict())
    reference = dilated_by_surgery(reference, output_stride).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out, expected = listed(model(x)), listed(reference(x))
    assert len(out) == len(expected)
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('head', HEADS)
def test_forward_intermediates(head):
    model = timm.create_model('hrnet_w18_small', head=head).eval()
    x = torch.randn(1, 3, 64, 64)
    last = len(CONTRACT[head]['branches'])
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        feats = model.forward_features(x)
        only = model.forward_intermediates(x, indices=[0, last], intermediates_only=True)
    assert [t.shape[1] for t in intermediates] == [f['num_chs'] for f in model.feature_info]
    assert_same(listed(final), listed(feats))
    if CONTRACT[head]['output'] == 'maps':
        assert_same(intermediates[1:], feats)
    assert_same(only, [intermediates[0], intermediates[last]])


# (head, tap index): every head, at the stem, at a middle tap and at its last tap
PRUNE_CASES = sorted({
    (h, i) for h in HEADS for i in (0, len(CONTRACT[h]['branches']) // 2 + 1, len(CONTRACT[h]['branches']))})


@pytest.mark.parametrize('head,index', PRUNE_CASES)
def test_prune_intermediate_layers(head, index):
    """ Pruning keeps what the taken output needs: its tap is unchanged, the model becomes a feature-map head
    (forward_features gives the taken map, in a list, or the stem map) and every parameter left trains."""
    model = timm.create_model('hrnet_w18_small', head=head).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[index], intermediates_only=True)[0]
        model.prune_intermediate_layers([index])
        final, intermediates = model.forward_intermediates(x, indices=[index])
        feats = model.forward_features(x)
    assert torch.equal(intermediates[0], expected)
    assert model.head == ('incre' if CONTRACT[head]['incre'] else '')
    assert model.final_layer is None and model.num_classes == 0 and model.num_features == expected.shape[1]
    if index == 0:
        assert torch.equal(final, feats) and torch.equal(model(x), feats) and torch.equal(feats, expected)
    else:
        assert len(feats) == len(final) == 1 and torch.equal(feats[0], expected) and torch.equal(final[0], expected)
    other = 1 if index != 1 else 0
    if other:
        with pytest.raises(ValueError, match=rf'indices \[{other}\] are not computed by this model'):
            model.forward_intermediates(x, indices=[other])
    assert _unused(model, x) == []


def test_reset_classifier():
    x = torch.randn(2, 3, 64, 64)
    model = timm.create_model('hrnet_w18_small').eval()
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0, '')
    assert model(x).shape == (2, 2048, 2, 2)
    model.reset_classifier(3)  # keeps global_pool='': builds, as in timm, but cannot classify
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 2048, 2, 2)
    with pytest.raises(ValueError, match=r"global_pool='' .* classifier \(num_classes=3\) needs pooled features"):
        model(x)
    for head in HEADS[1:]:
        model = timm.create_model('hrnet_w18_small', head=head)
        model.reset_classifier(0)
        assert [tuple(o.shape) for o in listed(model(x))] == output_shapes('hrnet_w18_small', head, 2, 64, 64)
        with pytest.raises(ValueError, match=f"head={head!r} outputs feature maps and has no classifier"):
            model.reset_classifier(10)


@pytest.mark.parametrize('coarse', [True, False])
def test_group_matcher(coarse):
    """ timm's parameter groups (layer-wise lr decay) from group_matcher are the ones written out here by module name:
    the stem; per stage (coarse) or per block / HighResolutionModule, a transition with its stage's last; the head."""
    model = timm.create_model('hrnet_w18')
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=coarse))
    last = {}  # stage number: index of its last block (layer1) or HighResolutionModule
    for name, _ in model.named_parameters():
        m = re.match(r'(?:layer|stage)(\d+)\.(\d+)\.', name)
        if m:
            last[m[1]] = max(last.get(m[1], 0), int(m[2]))

    def group(name):
        if re.match(r'(conv|bn)[12]\.', name):
            return 'stem'
        m = re.match(r'(layer|stage|transition)(\d+)(?:\.(\d+))?', name)
        if m is None:
            return 'head'
        return m[2] if coarse else f'{m[2]}.{last[m[2]] if m[1] == "transition" else m[3]}'

    expected = {}
    for name, _ in model.named_parameters():
        expected.setdefault(group(name), set()).add(name)
    assert sorted(map(sorted, groups.values())) == sorted(map(sorted, expected.values()))
    assert set(next(iter(groups.values()))) == expected['stem']


@pytest.mark.parametrize('head', HEADS)
def test_device_dtype_kwargs(head):
    model = timm.create_model('hrnet_w18_small', head=head, device='meta', dtype=torch.bfloat16)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {('meta', torch.bfloat16)}
    model = timm.create_model('hrnet_w18_small', head=head, dtype=torch.float64).eval()
    out = model(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    assert (out if head == 'classification' else out[0]).dtype == torch.float64


@pytest.mark.parametrize('head', HEADS)
def test_fx_symbolic_trace(head):
    """ torch.fx traces every head (timm's FX feature extraction). The package's input check is a forward pre-hook,
    which a traced graph does not record."""
    model = timm.create_model('hrnet_w18_small', head=head).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        expected, got = listed(model(x)), listed(traced(x))
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))


def test_features_return_layers():
    """ The package's features_only model (features.py) follows timm's FeatureDictNet protocol, as transformers'
    TimmBackbone uses it: return_layers picks the maps by module name, in feature order, None in the slot of a map
    the model was not built for; None goes back to out_indices; a name that is not a feature module raises."""
    model = timm.create_model('hrnet_w18_small', features_only=True, out_indices=(1, 3, 4)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        model.return_layers = {'stage4': '4', 'stem': '0'}
        picked = model(x)
        model.return_layers = {'stage2': '2', 'stage3': '3'}
        unbuilt = model(x)
        model.return_layers = None
        again = model(x)
    assert [t.shape[1] for t in plain] == [128, 512, 1024] and [t.shape[1] for t in picked] == [64, 1024]
    assert torch.equal(picked[1], plain[2]) and all(torch.equal(a, b) for a, b in zip(again, plain))
    assert unbuilt[0] is None and torch.equal(unbuilt[1], plain[1]) and len(unbuilt) == 2
    model.return_layers = {'layer1': 'x'}
    with pytest.raises(ValueError, match=r"return_layers \['layer1'\] are not feature modules"):
        model(x)
