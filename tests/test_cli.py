""" The `timm-hrnet-patch` command: check (table, JSON, exit status, weights source) and convert."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch


import timm  # noqa: E402
import timm_hrnet_patch  # noqa: E402
from timm_hrnet_patch.cli import main  # noqa: E402

from target import package_model  # noqa: E402
from common import HEADS, assert_loaded, checkpoint, expected_state, serve_from_hub, served_checkpoint  # noqa: E402

VARIANT = 'hrnet_w18_small'
KINDS = len(HEADS) + len(package_model._FEATURE_LOCATIONS)  # every head, and features_only at each location


def test_readme_gives_the_check_count():
    """ README's figures for `check`: 2 (pretrained or not) x every variant x KINDS cases per device."""
    cases = 2 * len(timm.list_models('hrnet*')) * KINDS
    readme = (Path(__file__).parents[1] / 'README.md').read_text()
    assert f'ending in `{cases}/{cases} ok, 0 failed` on a CPU-only machine ({2 * cases} with CUDA)' in readme


def _check_in_subprocess(cache, *args):
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HUGGINGFACE_HUB_CACHE=str(cache), HF_HUB_OFFLINE='1')
    return subprocess.run([sys.executable, '-m', 'timm_hrnet_patch', *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_check_synthetic_weights_table_and_json(tmp_path):
    """ With an empty HF cache the pretrained cases use synthetic weights made from upstream's model."""
    out = _check_in_subprocess(tmp_path / 'hf', '--variants', VARIANT, '--json', str(tmp_path / 'r.json'))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f'timm {timm.__version__}' in out.stdout and 'patch active: True' in out.stdout
    assert f'{KINDS * 2}/{KINDS * 2} ok, 0 failed' in out.stdout
    assert 'check: 100%' in out.stderr  # the progress bar
    rows = json.loads((tmp_path / 'r.json').read_text())['rows']
    assert len(rows) == KINDS * 2 and {r['status'] for r in rows} == {'ok'}
    assert {(r['pretrained'], r['weights']) for r in rows} == {(False, '-'), (True, 'synthetic')}
    incre = [r for r in rows if r['kwargs'] == {'head': 'incre'}][0]
    assert incre['shapes'] == '128x56x56 256x28x28 512x14x14 1024x7x7'
    assert [r['shapes'] for r in rows if r['kwargs'].get('head') == 'classification'] == ['1000', '1000']


def test_check_uses_hf_cache_and_fails_on_a_bad_checkpoint(tmp_path, capsys):
    served_checkpoint(VARIANT)  # this process's HF cache now holds the variant's weights
    assert main(['--variants', VARIANT, '--heads', 'incre', '--json', str(tmp_path / 'r.json')]) == 0
    rows = json.loads((tmp_path / 'r.json').read_text())['rows']
    assert {(r['pretrained'], r['weights']) for r in rows} == {(False, '-'), (True, 'hf-cache')}
    assert len(rows) == 4  # head 'incre' and features_only 'incre', each with and without weights

    broken = {k: v for k, v in checkpoint(VARIANT).items() if not k.startswith('stage4.')}
    serve_from_hub(timm.models.get_pretrained_cfg(VARIANT).hf_hub_id, broken, cache=str(tmp_path / 'hf'))
    out = _check_in_subprocess(tmp_path / 'hf', '--variants', VARIANT, '--heads', '')
    assert out.returncode == 1
    assert '2/4 ok, 2 failed' in out.stdout and 'FAIL' in out.stdout and 'missing keys' in out.stdout


def test_check_amp_and_channels_last(tmp_path, capsys):
    """ --amp bfloat16 --channels-last: every row ran in bfloat16 with channels_last maps (recorded per row in the
    JSON, from the outputs themselves); the plain check's rows are float32 and contiguous."""
    served_checkpoint(VARIANT)
    for args, dtypes, channels_last in [([], ['torch.float32'], False),
                                        (['--amp', 'bfloat16', '--channels-last'], ['torch.bfloat16'], True)]:
        assert main(['--variants', VARIANT, '--heads', 'concat,incre', '--size', '64',
                     '--json', str(tmp_path / 'r.json'), *args]) == 0
        rows = json.loads((tmp_path / 'r.json').read_text())['rows']
        assert len(rows) == 6 and all(r['status'] == 'ok' and r['dtypes'] == dtypes for r in rows)
        assert all(r['channels_last'] == channels_last for r in rows)
    assert 'forward: autocast to bfloat16, channels_last' in capsys.readouterr().out


@pytest.mark.parametrize('args, message', [
    (['--variants', 'resnet50'], 'matched no HRNet model'),
    (['--heads', 'bogus'], "unknown head(s) ['bogus']"),
])
def test_check_rejects_bad_options(args, message):
    with pytest.raises(SystemExit, match=message.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[')):
        main(args)


@pytest.mark.parametrize('head', HEADS)
def test_convert_msra_release(head, tmp_path, capsys):
    """ An MSRA HRNet-Image-Classification .pth: timm's key names, no BatchNorm num_batches_tracked."""
    sd = {k: v for k, v in checkpoint(VARIANT).items() if not k.endswith('num_batches_tracked')}
    torch.save(sd, tmp_path / 'hrnet_w18_small_v1.pth')
    dst = tmp_path / 'out.safetensors'
    assert main(['convert', str(tmp_path / 'hrnet_w18_small_v1.pth'), str(dst), '--variant', VARIANT,
                 '--head', head]) == 0
    printed = capsys.readouterr().out
    assert 'layout timm (timm or HRNet-Image-Classification model), detected' in printed
    assert 'loads strictly' in printed and 'num_batches_tracked counters' in printed
    if head != 'classification':
        assert 'dropped: keys of modules this head does not build (' in printed
        assert ('final_layer (6)' in printed) and ('incre_modules (' in printed) == (head not in ('incre',))
        assert ('stage4.0.fuse_layers.1 (' in printed) == (head == 'high_res')
    model = timm.create_model(VARIANT, pretrained=True, head=head, pretrained_cfg_overlay=dict(file=str(dst)))
    expected = {k: v if not k.endswith('num_batches_tracked') else torch.tensor(0)
                for k, v in expected_state(VARIANT, head).items()}
    assert_loaded(model, expected)


def test_convert_training_checkpoint(tmp_path, capsys):
    sd = checkpoint(VARIANT)
    torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in sd.items()}}, tmp_path / 'ckpt.pth')
    assert main(['convert', str(tmp_path / 'ckpt.pth'), str(tmp_path / 'out.safetensors'), '--variant', VARIANT]) == 0
    printed = capsys.readouterr().out
    assert "dropped: entries beside 'state_dict' (training state) (1): epoch" in printed
    assert "'module.' prefixes" in printed
    out = safetensors.torch.load_file(str(tmp_path / 'out.safetensors'))
    assert out.keys() == sd.keys() and all(torch.equal(out[k], v) for k, v in sd.items())


@pytest.mark.parametrize('content, message', [
    (b'not a checkpoint\n', 'is not a checkpoint that can be read safely'),
    ('other-variant', r'does not fit hrnet_w18_small .*unexpected keys'),
    ([1, 2, 3], 'holds a list, not a state dict'),
])
def test_convert_refuses_and_writes_nothing(content, message, tmp_path):
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.safetensors'
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        torch.save(checkpoint('hrnet_w18') if content == 'other-variant' else content, src)
    with pytest.raises(SystemExit, match=message):
        main(['convert', str(src), str(dst), '--variant', VARIANT])
    assert not dst.exists()


def test_is_active_reports_the_registry():
    code = ('import importlib, warnings, timm_hrnet_patch as p, timm.models.hrnet as up; print(p.is_active()); '
            'warnings.simplefilter("ignore"); importlib.reload(up); print(p.is_active())')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.stdout.split() == ['True', 'False'], out.stderr
    assert timm_hrnet_patch.is_active()
