""" Checkpoint layouts of the MSRA and OpenMMLab releases (layouts._CHECKPOINT_LAYOUTS, sources in docs/checkpoints.md).

Each layout's test checkpoint is the synthetic timm checkpoint renamed through the inverse of the layout's mapping,
with its own task's head keys (as the sources name them) and its container added. It must be detected, round-trip
key for key and tensor for tensor, load through create_model(pretrained=True, pretrained_cfg_overlay=dict(file=))
and through `convert`, and a head it lacks must fail with an error that names the head it fits.
"""
import gzip
import logging
import re
from pathlib import Path
from typing import Dict, Optional

import pytest
import torch
import torch.nn.functional as F

import timm

from common import assert_loaded, expected_state
from target import hrnet, layouts, package_model
from timm_hrnet_patch.cli import main as cli

VARIANT = 'hrnet_w18_small'
LAYOUTS = list(layouts._CHECKPOINT_LAYOUTS.values())
LAYOUT_PARAMS = [pytest.param(layout, id=layout.name) for layout in LAYOUTS]


def _bn(prefix: str, chs: int) -> Dict[str, tuple]:
    return {f'{prefix}{n}': (chs,) for n in ('weight', 'bias', 'running_mean', 'running_var')} | {
        f'{prefix}num_batches_tracked': ()}


# each release's own task head for VARIANT (16-128 channels, 19 classes, 17 joints), keys as its source names them
# (docs/checkpoints.md), and the container it saves in
FOREIGN_HEADS = {
    'timm': {},
    # seg_hrnet.py's last_layer, and Cityscapes' class weights in the loss (FullModel)
    'hrnet-seg': {'model.last_layer.0.weight': (240, 240, 1, 1), 'model.last_layer.0.bias': (240,),
                  **_bn('model.last_layer.1.', 240), 'model.last_layer.3.weight': (19, 240, 1, 1),
                  'model.last_layer.3.bias': (19,), 'loss.criterion.weight': (19,)},
    'pose_hrnet': {'final_layer.weight': (17, 16, 1, 1), 'final_layer.bias': (17,)},
    'mmpretrain': {},
    # fcn_hr18.py: FCNHead with one conv
    'mmseg': {'decode_head.convs.0.conv.weight': (240, 240, 3, 3), **_bn('decode_head.convs.0.bn.', 240),
              'decode_head.conv_seg.weight': (19, 240, 1, 1), 'decode_head.conv_seg.bias': (19,)},
    'mmpose': {'head.final_layer.weight': (17, 16, 1, 1), 'head.final_layer.bias': (17,)},
    'mmpose-0.x': {'keypoint_head.final_layer.weight': (17, 16, 1, 1), 'keypoint_head.final_layer.bias': (17,)},
}
# seg_hrnet_ocr.py's heads (a sample of their keys) in place of last_layer
OCR_HEAD = {'model.conv3x3_ocr.0.weight': (512, 240, 3, 3), **_bn('model.conv3x3_ocr.1.', 512),
            'model.ocr_distri_head.object_context_block.f_pixel.1.0.weight': (256,),
            'model.ocr_distri_head.conv_bn_dropout.0.weight': (512, 1024, 1, 1),
            'model.cls_head.weight': (19, 512, 1, 1), 'model.aux_head.3.bias': (19,), 'loss.criterion.weight': (19,)}
CONTAINERS = {'hrnet-seg': None, 'pose_hrnet': None, 'timm': None}  # the others: mmengine's {'meta', 'state_dict'}


# each layout's keys for timm's, written out from the sources (docs/checkpoints.md) and not from the package's table:
# (timm key prefix as a regex, its prefix), the first that matches applies
INVERSE = {
    'timm': [],
    'hrnet-seg': [('', 'model.')],
    'pose_hrnet': [],
    'mmpretrain': [
        (r'incre_modules\.', 'neck.0.increase_layers.'),
        (r'downsamp_modules\.(\d+)\.0\.', r'neck.0.downsample_layers.\1.conv.'),
        (r'downsamp_modules\.(\d+)\.1\.', r'neck.0.downsample_layers.\1.bn.'),
        (r'final_layer\.0\.', 'neck.0.final_layer.conv.'),
        (r'final_layer\.1\.', 'neck.0.final_layer.bn.'),
        (r'classifier\.', 'head.fc.'),
        ('', 'backbone.'),
    ],
    'mmseg': [('', 'backbone.')],
    'mmpose': [('', 'backbone.')],
    'mmpose-0.x': [('', 'backbone.')],
}
# the convs a layout has without bias (mmpretrain's neck: ConvModule(bias=False)): timm's bias key, its BatchNorm's
# running_mean key
NO_BIAS = {'mmpretrain': (r'(downsamp_modules\.\d+|final_layer)\.0\.bias', r'\1.1.running_mean')}


def _folded(state_dict: Dict[str, torch.Tensor], name: str, keep_bias: bool) -> Dict[str, torch.Tensor]:
    """ Each conv bias the layout lacks folded into its BatchNorm's running_mean (the eval output is unchanged; in
    training BN cancels it), and dropped, or kept as zero (`keep_bias`: what the model holds after loading)."""
    state_dict = dict(state_dict)
    if name in NO_BIAS:
        bias, mean = NO_BIAS[name]
        for key in [k for k in state_dict if re.fullmatch(bias, k)]:
            state_dict[re.sub(bias, mean, key)] = state_dict[re.sub(bias, mean, key)] - state_dict[key]
            if keep_bias:
                state_dict[key] = torch.zeros_like(state_dict[key])
            else:
                del state_dict[key]
    return state_dict


def to_layout(state_dict: Dict[str, torch.Tensor], layout: layouts._CheckpointLayout) -> Dict[str, torch.Tensor]:
    """ A timm state dict in `layout`'s keys (INVERSE), the biases it lacks folded (NO_BIAS)."""
    def renamed(key: str) -> str:
        pattern, its = next(((p, i) for p, i in INVERSE[layout.name] if re.match(p, key)), ('', ''))
        return re.sub('^' + pattern, its, key, count=1)
    return {renamed(k): v for k, v in _folded(state_dict, layout.name, keep_bias=False).items()}


def foreign_checkpoint(layout: layouts._CheckpointLayout, head: Optional[Dict[str, tuple]] = None) -> dict:
    """ What a user of that release holds: its state dict with its own head keys (`head`, default the layout's
    FOREIGN_HEADS), in its container."""
    torch.manual_seed(0)
    state_dict = to_layout(expected_state(VARIANT, layout.head), layout)
    head = FOREIGN_HEADS[layout.name] if head is None else head
    state_dict.update({k: torch.randn(shape) if shape else torch.tensor(3) for k, shape in head.items()})
    if layout.name in CONTAINERS:
        return state_dict
    return {'meta': {'mmengine_version': '0.10.4', 'epoch': 210}, 'state_dict': state_dict}


@pytest.fixture(scope='session')
def foreign_file(tmp_path_factory):
    """ foreign_file(name): the path of layout `name`'s foreign_checkpoint, saved once per session (per worker)."""
    directory = tmp_path_factory.mktemp('layouts')
    paths: Dict[str, Path] = {}

    def saved(name: str) -> str:
        if name not in paths:
            paths[name] = directory / f'{name}.pth'
            torch.save(foreign_checkpoint(layouts._CHECKPOINT_LAYOUTS[name]), str(paths[name]))
        return str(paths[name])
    return saved


def expected_after_load(layout: layouts._CheckpointLayout) -> Dict[str, torch.Tensor]:
    """ What the model holds after loading the layout's checkpoint: the timm state, each bias the layout lacks
    zero and folded into its BatchNorm's running_mean."""
    return _folded(expected_state(VARIANT, layout.head), layout.name, keep_bias=True)


def test_every_layout_has_a_test_checkpoint():
    assert set(FOREIGN_HEADS) == set(INVERSE) == set(SOURCE_UPSAMPLING) == set(layouts._CHECKPOINT_LAYOUTS)
    for layout in LAYOUTS:
        assert layout.head in package_model._HEAD_SPECS
        assert all(key.startswith(tuple(p for p, _ in layout.drops)) for key in FOREIGN_HEADS[layout.name])


@pytest.mark.parametrize('layout', LAYOUT_PARAMS)
def test_round_trip(layout):
    """ timm -> layout -> timm is equal key for key; layout -> timm -> layout too. Where the layout lacks conv
    biases, timm's come back zero, folded into running_mean, and the model computes the same."""
    timm_state = expected_state(VARIANT, layout.head)
    foreign = foreign_checkpoint(layout)
    detected, mapped, notes = layouts._map_checkpoint(foreign)
    assert detected is layout
    assert set(mapped) == set(timm_state)
    expected = expected_after_load(layout)
    assert all(torch.equal(mapped[k], expected[k]) for k in timm_state)
    folded = [k for k in timm_state if not torch.equal(mapped[k], timm_state[k])]
    if layout.name not in NO_BIAS:
        assert not folded
    else:
        bias, mean = NO_BIAS[layout.name]
        biases = [k for k in folded if k.endswith('.bias')]
        assert biases and all(not mapped[k].any() for k in biases)
        assert sorted(notes[f'added: zero biases of convs {layout.name} has without bias (the same function)']) == \
            sorted(biases)
        assert sorted(k for k in folded if not k.endswith('.bias')) == sorted(re.sub(bias, mean, k) for k in biases)
    inner = foreign.get('state_dict', foreign)
    again = to_layout(mapped, layout)
    assert set(again) == set(inner) - set(FOREIGN_HEADS[layout.name])
    assert all(torch.equal(again[k], inner[k]) for k in again)
    dropped = {k for reason, keys in notes.items() if reason.endswith(f'({layout.name})') for k in keys}
    assert dropped == set(FOREIGN_HEADS[layout.name])


def test_ocr_checkpoint(tmp_path, caplog):
    """ HRNet-OCR's segmentation heads are dropped as well, each module named in the log."""
    path = tmp_path / 'ocr.pth'
    torch.save(foreign_checkpoint(layouts._CHECKPOINT_LAYOUTS['hrnet-seg'], OCR_HEAD), str(path))
    caplog.set_level(logging.INFO, logger=hrnet.__name__)
    model = timm.create_model(VARIANT, pretrained=True, head='concat', pretrained_cfg_overlay=dict(file=str(path)))
    assert_loaded(model, expected_state(VARIANT, 'concat'))
    for what, count in [('OCR head', 9), ('OCR auxiliary head', 1), ('loss class weights', 1)]:
        assert f'dropped: {what} (hrnet-seg) ({count})' in caplog.text


def test_folded_biases_compute_the_same():
    """ mmpretrain's neck convs have no bias: timm's biases folded into running_mean give the same eval output."""
    layout = layouts._CHECKPOINT_LAYOUTS['mmpretrain']
    original = timm.create_model(VARIANT).eval()
    original.load_state_dict(expected_state(VARIANT, 'classification'))
    converted = timm.create_model(VARIANT).eval()
    converted.load_state_dict(layouts.checkpoint_filter_fn(foreign_checkpoint(layout), converted))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('layout', LAYOUT_PARAMS)
def test_create_model_loads_the_file(layout, foreign_file, caplog):
    path = foreign_file(layout.name)
    caplog.set_level(logging.INFO, logger=hrnet.__name__)
    model = timm.create_model(VARIANT, pretrained=True, head=layout.head, pretrained_cfg_overlay=dict(file=str(path)))
    assert_loaded(model, expected_after_load(layout))
    if layout.name != 'timm':
        assert f'({layout.name} layout)' in caplog.text


@pytest.mark.skipif(
    not hasattr(timm.models._features, 'FeatureGetterNet'), reason="this timm has no feature_cls='getter'")
@pytest.mark.parametrize('layout', LAYOUT_PARAMS)
def test_feature_wrapper_loads_the_file(layout, foreign_file):
    """ timm's generic feature wrapper (feature_cls='getter') loads the HRNet it wraps through the same filter."""
    path = foreign_file(layout.name)
    model = timm.create_model(
        VARIANT, pretrained=True, head=layout.head, features_only=True, feature_cls='getter', out_indices=(0, 1),
        pretrained_cfg_overlay=dict(file=path))  # (every head has the stem and branch 0: 'high_res' no more)
    expected = expected_after_load(layout)
    held = {k.split('.', 1)[1]: v for k, v in model.state_dict().items()}  # the wrapper's 'model.' prefix
    assert held and set(held) <= set(expected)
    for k, v in held.items():
        assert torch.equal(v, expected[k]), k


@pytest.mark.parametrize('layout', LAYOUT_PARAMS)
def test_convert_then_load(layout, foreign_file, tmp_path, capsys):
    src, dst = foreign_file(layout.name), tmp_path / 'converted.safetensors'
    assert cli(['convert', str(src), str(dst), '--variant', VARIANT, '--head', layout.head]) == 0
    out = capsys.readouterr().out
    assert f'layout {layout.name} ({layout.what}), detected' in out
    for what in {w for p, w in layout.drops if any(k.startswith(p) for k in FOREIGN_HEADS[layout.name])}:
        count = sum(1 for k in FOREIGN_HEADS[layout.name] for p, w in layout.drops if w == what and k.startswith(p))
        assert f'dropped: {what} ({layout.name}) ({count}): ' in out
    model = timm.create_model(VARIANT, pretrained=True, head=layout.head, pretrained_cfg_overlay=dict(file=str(dst)))
    assert_loaded(model, expected_after_load(layout))


def test_convert_with_a_forced_layout(tmp_path, capsys):
    """ An OpenMMLab backbone saved alone matches no signature (no task head to tell): --layout names it."""
    src, dst = tmp_path / 'backbone.pth', tmp_path / 'converted.safetensors'
    layout = layouts._CHECKPOINT_LAYOUTS['mmseg']
    torch.save({'state_dict': to_layout(expected_state(VARIANT, ''), layout)}, str(src))
    with pytest.raises(SystemExit, match='layout not recognised.*backbone.conv1.weight'):
        cli(['convert', str(src), str(dst), '--variant', VARIANT, '--head', ''])
    assert cli(['convert', str(src), str(dst), '--variant', VARIANT, '--head', '', '--layout', 'mmseg']) == 0
    assert 'layout mmseg' in capsys.readouterr().out
    model = timm.create_model(VARIANT, pretrained=True, head='', pretrained_cfg_overlay=dict(file=str(dst)))
    assert_loaded(model, expected_state(VARIANT, ''))


@pytest.mark.parametrize('name, head, fits', [
    ('pose_hrnet', 'classification', "head='high_res'"),
    ('mmpose', '', "head='high_res'"),
    ('hrnet-seg', 'incre', "head='concat' (also fits '', 'high_res')"),
    ('mmseg', 'classification', "head='concat'"),
])
def test_a_head_the_checkpoint_lacks(name, head, fits, foreign_file):
    path = foreign_file(name)
    with pytest.raises(RuntimeError, match=rf'{re.escape(name)} layout\).*missing keys.*It has the modules of '
                                           rf'{re.escape(fits)}'):
        timm.create_model(VARIANT, pretrained=True, head=head, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.mark.parametrize('name, keys', [
    ('Lightning module holding the model as self.model', lambda sd: {'model.' + k: v for k, v in sd.items()}),
    ("timm's features_only getter (FeatureGetterNet.model)", lambda sd: {'model.' + k: v for k, v in sd.items()}),
    ('backbone + linear head wrapper', lambda sd: {**{'backbone.' + k: v for k, v in sd.items()},
                                                   'head.fc.weight': torch.zeros(3, 2048)}),
])
def test_other_wrappers_are_not_taken_for_a_release(name, keys):
    """ A 'model.' or 'backbone.' prefix alone does not make a seg or pose release: no layout is guessed."""
    state = keys(expected_state(VARIANT, 'classification'))
    with pytest.raises(layouts.UnknownLayoutError, match='layout not recognised'):
        layouts._map_checkpoint({'state_dict': state, 'epoch': 3})


def test_unknown_layout_non_strict(caplog):
    """ strict=False loads anyway, keys as they are, with the warnings that say so."""
    state = {f'encoder.{k}': v for k, v in expected_state(VARIANT, '').items()}
    model = timm.create_model(VARIANT, head='')
    with caplog.at_level(logging.WARNING):
        assert layouts.checkpoint_filter_fn(state, model, strict=False) == {}
    assert 'layout not recognised' in caplog.text and 'Loading non-strict: missing weights keep' in caplog.text


def test_features_only_hint_and_no_hint_for_another_variant(foreign_file):
    path = foreign_file('pose_hrnet')
    with pytest.raises(RuntimeError, match=r"with features_only, use feature_location='', out_indices=\(0, 1\)"):
        timm.create_model(VARIANT, pretrained=True, features_only=True, feature_location='', out_indices=(1, 2),
                          pretrained_cfg_overlay=dict(file=str(path)))
    other = to_layout(expected_state('hrnet_w18_small_v2', 'high_res'), layouts._CHECKPOINT_LAYOUTS['pose_hrnet'])
    with pytest.raises(RuntimeError, match='missing keys') as e:
        layouts.checkpoint_filter_fn(other, timm.create_model(VARIANT))
    assert 'It has the modules' not in str(e.value)


def test_convert_no_bias_layout_to_an_ssld_variant(tmp_path, capsys):
    src, dst = tmp_path / 'mmpretrain.pth', tmp_path / 'ssld.safetensors'
    torch.save({'state_dict': to_layout(expected_state('hrnet_w18_ssld', 'classification'),
                                        layouts._CHECKPOINT_LAYOUTS['mmpretrain'])}, str(src))
    assert cli(['convert', str(src), str(dst), '--variant', 'hrnet_w18_ssld']) == 0
    assert 'zero biases' not in capsys.readouterr().out
    model = timm.create_model('hrnet_w18_ssld', pretrained=True, pretrained_cfg_overlay=dict(file=str(dst)))
    assert_loaded(model, expected_state('hrnet_w18_ssld', 'classification'))


def test_unknown_layout_names_keys_and_layouts():
    state = {f'encoder.{k}': v for k, v in expected_state(VARIANT, '').items()}
    with pytest.raises(RuntimeError, match='layout not recognised, first keys: encoder.conv1.weight') as e:
        layouts.checkpoint_filter_fn(state, timm.create_model(VARIANT))
    assert all(name in str(e.value) for name in layouts._CHECKPOINT_LAYOUTS)
    with pytest.raises(ValueError, match="Unknown HRNet checkpoint layout 'detectron'"):
        layouts._map_checkpoint(state, 'detectron')


# the fuse layers' upsampling of each mode, as the sources call F.interpolate / nn.Upsample (docs/checkpoints.md)
UPSAMPLING = {'nearest': dict(mode='nearest'), 'bilinear': dict(mode='bilinear', align_corners=False),
              'bilinear_aligned': dict(mode='bilinear', align_corners=True)}


@pytest.mark.parametrize('mode', list(UPSAMPLING))
def test_upsample_modes(mode):
    """ The last stage 4 module on odd-sized maps: each output is the ReLU of its own map plus the others brought to
    its size, upsampled as the mode's source does. The whole model differs from the nearest one but for 'nearest'."""
    assert set(UPSAMPLING) == set(package_model._UPSAMPLE_MODES)
    torch.manual_seed(0)
    model = timm.create_model(VARIANT, head='concat', upsample_mode=mode).eval()
    module = model.stage4[-1]
    xs = [torch.randn(1, c, h, w) for c, (h, w) in zip([16, 32, 64, 128], [(15, 13), (8, 7), (4, 4), (2, 2)])]
    with torch.no_grad():
        got = module([x.clone() for x in xs])
        ys = [branch(x) for branch, x in zip(module.branches, xs)]
        for i in range(4):
            terms = [module.fuse_layers[i][j](ys[j]) for j in range(4)]
            terms = [F.interpolate(t, size=ys[i].shape[-2:], **UPSAMPLING[mode]) if j > i else t
                     for j, t in enumerate(terms)]
            assert torch.equal(got[i], torch.relu(sum(terms))), (mode, i)
        nearest = timm.create_model(VARIANT, head='concat').eval()
        nearest.load_state_dict(model.state_dict())
        x = torch.randn(1, 3, 60, 52)
        assert (mode == 'nearest') == torch.equal(model.forward_features(x), nearest.forward_features(x))
        branches = timm.create_model(VARIANT, head='', upsample_mode=mode).eval()
        branches.load_state_dict(model.state_dict())
        yl = branches.forward_features(x)
        aligned = UPSAMPLING[mode].get('align_corners', False)  # 'concat' is bilinear in every mode
        assert torch.equal(model.forward_features(x), torch.cat([yl[0]] + [
            F.interpolate(y, size=yl[0].shape[-2:], mode='bilinear', align_corners=aligned) for y in yl[1:]], dim=1))


# how each release's models upsample in their fuse layers, from their sources (docs/checkpoints.md): mmseg's
# HRModule resize(mode='bilinear', align_corners=False) (mmseg hr18s's backbone equals hrnet_w18_small_v2 with
# 'bilinear' bit for bit); HRNet-Semantic-Segmentation's F.interpolate(mode='bilinear',
# align_corners=config.MODEL.ALIGN_CORNERS), True by default; the others nn.Upsample(mode='nearest')
SOURCE_UPSAMPLING = {'hrnet-seg': ('bilinear_aligned', 'bilinear'), 'mmseg': ('bilinear',), 'timm': ('nearest',),
                     'pose_hrnet': ('nearest',), 'mmpretrain': ('nearest',), 'mmpose': ('nearest',),
                     'mmpose-0.x': ('nearest',)}


@pytest.mark.parametrize('name', list(SOURCE_UPSAMPLING))
def test_upsample_mode_of_the_source(name, foreign_file, caplog):
    """ The weights of a model that upsampled otherwise load, with a warning naming the source's mode; with its
    modes (two for hrnet-seg, whose configs set align_corners either way), silently."""
    layout = layouts._CHECKPOINT_LAYOUTS[name]
    modes = SOURCE_UPSAMPLING[name]
    path = foreign_file(name)
    other = 'nearest' if modes[0] != 'nearest' else 'bilinear'
    for mode in (other, *modes):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            model = timm.create_model(VARIANT, pretrained=True, head=layout.head, upsample_mode=mode,
                                      pretrained_cfg_overlay=dict(file=str(path)))
        assert_loaded(model, expected_after_load(layout))
        warned = [r.getMessage() for r in caplog.records if 'upsample_mode' in r.getMessage()]
        assert len(warned) == (mode == other), (mode, warned)
        if warned:
            assert f'Create the model with upsample_mode={modes[0]!r}' in warned[0]


def test_no_bias_layout_into_a_model_without_those_biases():
    """ hrnet_w18_ssld's head convs have no bias either: the zero biases are not added to it."""
    state = expected_state('hrnet_w18_ssld', 'classification')
    assert not any(k.endswith('.0.bias') and k.startswith(('downsamp_modules.', 'final_layer.')) for k in state)
    model = timm.create_model('hrnet_w18_ssld')
    loaded = layouts.checkpoint_filter_fn(to_layout(state, layouts._CHECKPOINT_LAYOUTS['mmpretrain']), model)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())


RELEASE_KEYS = Path(__file__).parent / 'data' / 'release_keys'
RELEASES = {  # file: (layout, timm variant, head), see data/release_keys/README.md
    'hrnet-image-classification': ('timm', 'hrnet_w48', 'classification'),
    'hrnet-seg': ('hrnet-seg', 'hrnet_w48', 'concat'),
    'hrnet-seg-ocr': ('hrnet-seg', 'hrnet_w48', 'concat'),
    'pose_hrnet': ('pose_hrnet', 'hrnet_w48', 'high_res'),
    'mmpretrain': ('mmpretrain', 'hrnet_w18', 'classification'),
    'mmpose': ('mmpose', 'hrnet_w32', 'high_res'),
    'mmseg-hr18s': ('mmseg', 'hrnet_w18_small_v2', 'concat'),
    'mmseg-hr18': ('mmseg', 'hrnet_w18', 'concat'),
    'mmseg-hr48': ('mmseg', 'hrnet_w48', 'concat'),
}


@pytest.mark.parametrize('release', list(RELEASES))
def test_release_keys(release):
    """ The keys of a model built by the release's own code map onto exactly timm's model: every key, every shape."""
    layout, variant, head = RELEASES[release]
    with gzip.open(RELEASE_KEYS / f'{release}.txt.gz', 'rt') as f:
        lines = f.read().splitlines()
        shapes = {k: tuple(int(d) for d in dims.split(',') if d) for k, dims in (line.split(' ') for line in lines)}
    state = {k: torch.empty(shape, device='meta') for k, shape in shapes.items()}
    detected, mapped, notes = layouts._map_checkpoint(state)
    assert detected.name == layout
    with torch.device('meta'):
        model = timm.create_model(variant, head=head)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dropped = [k for reason, keys in notes.items() if reason.startswith('dropped: ') for k in keys]
    assert len(dropped) + len(mapped) - sum(len(k) for r, k in notes.items() if r.startswith('added: ')) == len(state)
