""" Hostile checkpoints: a pickle whose unpickling would run code never runs it, through every path the package's
models load weights by (Hugging Face hub, pretrained_cfg_overlay file and url, `timm-hrnet-patch convert`), on
every torch (before 2.6 torch.load unpickles anything by default) and timm (before 1.0 timm does not ask for
weights_only)."""

import pytest
import torch

import timm


from common import checkpoint  # noqa: E402
from synthetic import serve_from_hub  # noqa: E402
from timm_hrnet_patch.cli import main  # noqa: E402

VARIANT = 'hrnet_w18_small'
REFUSED = r'Refused to unpickle the pretrained weights of hrnet_w18_small: .*could run code'


class _Payload:
    """ Unpickling it creates the file `marker`: the 'code' a hostile checkpoint carries."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


@pytest.fixture
def hostile(tmp_path):
    """ A real checkpoint plus the payload, and the marker path that proves whether the payload ran."""
    marker = tmp_path / 'payload-ran'
    return dict(checkpoint(VARIANT), payload=_Payload(str(marker))), marker


def test_payload_runs_when_unpickled_freely(hostile, tmp_path):
    """ Control: the file really carries code, which a plain unpickler runs."""
    state, marker = hostile
    torch.save(state, tmp_path / 'evil.pth')
    torch.load(tmp_path / 'evil.pth', weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize('kwargs', [{}, dict(head='incre'), dict(features_only=True)], ids=['cls', 'incre', 'feat'])
def test_file_overlay_refused(hostile, tmp_path, kwargs):
    state, marker = hostile
    torch.save(state, tmp_path / 'evil.pth')
    with pytest.raises(RuntimeError, match=REFUSED):
        timm.create_model(VARIANT, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'evil.pth')),
                          **kwargs)
    assert not marker.exists()


def test_hub_pickle_refused(hostile):
    state, marker = hostile
    serve_from_hub('timm/test-hostile-bin', state, pickled=True)
    with pytest.raises(RuntimeError, match=REFUSED):
        timm.create_model(VARIANT, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id='timm/test-hostile-bin'))
    assert not marker.exists()


def test_url_pickle_refused(hostile, tmp_path, monkeypatch):
    """ A url source whose file is already in torch.hub's cache: no download, the cached file is unpickled."""
    state, marker = hostile
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch-home'))
    cached = tmp_path / 'torch-home' / 'hub' / 'checkpoints' / 'evil-hrnet.pth'
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    overlay = dict(url='https://weights.invalid/evil-hrnet.pth', hf_hub_id=None)
    with pytest.raises(RuntimeError, match=REFUSED):
        timm.create_model(VARIANT, pretrained=True, pretrained_cfg_overlay=overlay)
    assert not marker.exists()


def test_convert_refuses(hostile, tmp_path):
    state, marker = hostile
    torch.save(state, tmp_path / 'evil.pth')
    with pytest.raises(SystemExit, match='not a checkpoint that can be read safely'):
        main(['convert', str(tmp_path / 'evil.pth'), str(tmp_path / 'out.safetensors'), '--variant', VARIANT])
    assert not marker.exists() and not (tmp_path / 'out.safetensors').exists()


def test_safe_pickle_still_loads(tmp_path):
    """ The guard refuses code, not pickles: a plain tensor pickle loads, and torch.load is restored afterwards."""
    load = torch.load
    torch.save(checkpoint(VARIANT), tmp_path / 'ok.pth')
    model = timm.create_model(VARIANT, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'ok.pth')))
    assert torch.equal(model.conv1.weight, checkpoint(VARIANT)['conv1.weight'])
    assert torch.load is load
