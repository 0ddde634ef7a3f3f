""" Fuzzed checkpoints through timm's real file loading path: a real state dict with keys dropped, renamed,
reshaped, cast and added, wrapped in containers and prefixes (strategies.perturbations), saved as a .pth and
loaded with create_model(pretrained=True, pretrained_cfg_overlay=dict(file=...)) into every head and a partial
features_only model.

Each example knows its outcome, derived by hand from what it changed: a lossless change must load, with every model
tensor equal to the saved one under its key (cast to the model's dtype; only BatchNorm counters may be absent); a
lossy one must raise a RuntimeError that names one of the keys it made unloadable. The 'ci' profile runs 24
examples; the 'fuzz' profile 500: HYPOTHESIS_PROFILE=fuzz pytest -s -p no:xdist tests/test_fuzz.py
"""
import collections

import pytest
import torch
from hypothesis import given, settings, strategies as st

import timm

import strategies
from common import checkpoint

VARIANT = 'hrnet_w18_small'


def test_fuzzed_checkpoint_loads_exactly_or_raises(tmp_path):
    full = checkpoint(VARIANT)
    path = tmp_path / 'fuzzed.pth'
    outcomes = collections.Counter()
    model_keys = {}

    @settings(max_examples=strategies.FUZZ_EXAMPLES)
    @given(kwargs=strategies.load_targets, data=st.data())
    def check(kwargs, data):
        key = repr(sorted(kwargs.items()))
        if key not in model_keys:
            with torch.device('meta'):
                model_keys[key] = set(timm.create_model(VARIANT, **kwargs).state_dict())
        change = data.draw(strategies.perturbations(full, model_keys[key]))
        state_dict, saved = change.apply(full)
        torch.save(saved, str(path))
        load = lambda: timm.create_model(  # noqa: E731
            VARIANT, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        if change.lossy:
            with pytest.raises(RuntimeError) as info:
                load()
            assert any(k in str(info.value) for k in change.lossy), (change, str(info.value)[:500])
            outcomes['lossy: raised naming a changed key'] += 1
            return
        model = load()
        for k, v in model.state_dict().items():
            if k not in state_dict:
                assert k.endswith('.num_batches_tracked'), f'{k} is not in the checkpoint, yet the model loaded'
                continue
            assert not v.is_meta and torch.equal(v, state_dict[k].to(v.dtype)), f'{k} is not the checkpoint\'s'
        outcomes['lossless: loaded exactly'] += 1

    check()
    print(f'\nfuzzed checkpoints: {sum(outcomes.values())} examples, {dict(outcomes)}')
    assert len(outcomes) == 2  # both kinds were drawn
