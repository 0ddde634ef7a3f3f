""" Fuzzed checkpoints through timm's real file loading path: a real state dict with keys dropped, renamed,
reshaped, cast and added, wrapped in containers and prefixes (strategies.perturbations), saved as a .pth and
loaded with create_model(pretrained=True, pretrained_cfg_overlay=dict(file=...)) into every head and a partial
features_only model.

Each result either loads with every model tensor equal to the saved one under its key (cast to the model's dtype;
only BatchNorm counters may be absent), or raises a RuntimeError / ValueError. A model that loads with any tensor
that is not the checkpoint's must never come back. The 'ci' profile runs 24 examples; the 'fuzz' profile 500:
HYPOTHESIS_PROFILE=fuzz pytest -s -p no:xdist tests/test_fuzz.py
"""
import collections

import torch
from hypothesis import given, settings

import timm

import strategies
from conftest import checkpoint

VARIANT = 'hrnet_w18_small'


def test_fuzzed_checkpoint_loads_exactly_or_raises(tmp_path):
    full = checkpoint(VARIANT)
    path = tmp_path / 'fuzzed.pth'
    outcomes = collections.Counter()

    @settings(max_examples=strategies.FUZZ_EXAMPLES)
    @given(kwargs=strategies.load_targets, change=strategies.perturbations(full))
    def check(kwargs, change):
        state_dict, saved = change.apply(full)
        torch.save(saved, str(path))
        try:
            model = timm.create_model(VARIANT, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        except (RuntimeError, ValueError) as e:
            outcomes[f'raised {type(e).__name__}'] += 1
            return
        for k, v in model.state_dict().items():
            if k not in state_dict:
                assert k.endswith('.num_batches_tracked'), f'{k} is not in the checkpoint, yet the model loaded'
                continue
            assert not v.is_meta and torch.equal(v, state_dict[k].to(v.dtype)), f'{k} is not the checkpoint\'s'
        outcomes['loaded'] += 1

    check()
    print(f'\nfuzzed checkpoints: {sum(outcomes.values())} examples, {dict(outcomes)}')
    assert outcomes['loaded'] and sum(outcomes.values()) - outcomes['loaded']  # both outcomes were exercised
