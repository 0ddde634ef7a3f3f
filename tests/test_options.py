""" Training options in timm's idiom, as ResNet takes them (docs/training.md): norm_layer (by name or type,
FrozenBatchNorm2d and GroupNorm included), act_layer and drop_path_rate.

Oracles: the default model's modules (one norm per BatchNorm, one activation per ReLU); stochastic depth's rates
written out for hrnet_w18_small; the synthetic checkpoint's tensors; a training step without checkpointing.
"""
import functools

import pytest
import torch
import torch.nn as nn
from timm.layers import DropPath, GroupNorm, GroupNorm1, get_act_layer
from torchvision.ops.misc import FrozenBatchNorm2d

from common import assert_loaded, create, expected_state, listed
from test_training import assert_checkpointing_exact

VARIANT = 'hrnet_w18_small'
# norm_layer value: the class of every norm it builds, and whether pretrained weights load into it strictly
NORMS = {
    "'batchnorm2d'": ('batchnorm2d', nn.BatchNorm2d, True),
    'nn.BatchNorm2d': (nn.BatchNorm2d, nn.BatchNorm2d, True),
    "'frozenbatchnorm2d'": ('frozenbatchnorm2d', FrozenBatchNorm2d, True),
    'FrozenBatchNorm2d': (FrozenBatchNorm2d, FrozenBatchNorm2d, True),
    "'groupnorm1'": ('groupnorm1', GroupNorm1, False),
    'partial(GroupNorm, num_groups=2)': (functools.partial(GroupNorm, num_groups=2), GroupNorm, False),
}
ACTS = {"'silu'": ('silu', nn.SiLU), 'nn.SiLU': (nn.SiLU, nn.SiLU), "'gelu'": ('gelu', get_act_layer('gelu'))}


def _count(model: nn.Module, cls: type) -> int:
    return sum(type(m) is cls for m in model.modules())


@pytest.mark.parametrize('name', list(NORMS))
def test_norm_layer_builds_every_norm(name):
    norm_layer, cls, _ = NORMS[name]
    model = create(VARIANT, norm_layer=norm_layer)
    assert _count(model, cls) == _count(create(VARIANT), nn.BatchNorm2d)
    assert cls is nn.BatchNorm2d or _count(model, nn.BatchNorm2d) == 0
    out = model(torch.randn(2, 3, 64, 48))
    assert out.shape == (2, 1000) and out.isfinite().all()


@pytest.mark.parametrize('name', list(ACTS))
def test_act_layer_builds_every_activation(name):
    act_layer, cls = ACTS[name]
    model = create(VARIANT, head='concat', act_layer=act_layer)
    assert _count(model, cls) == _count(create(VARIANT, head='concat'), nn.ReLU) > 0
    assert _count(model, nn.ReLU) == 0


def test_drop_path_rate_increases_linearly_with_depth():
    """ hrnet_w18_small is 7 residual blocks deep: layer1's one, then two per module of stages 2-4 (one module
    each), every branch of a module at the rate of its block position: 0.3 * depth / 6."""
    model = create(VARIANT, drop_path_rate=0.3)
    assert model.layer1[0].drop_path is None
    for i, stage in enumerate((model.stage2, model.stage3, model.stage4)):
        for branch in stage[0].branches:
            assert [b.drop_path.drop_prob for b in branch] == pytest.approx([0.05 + 0.1 * i, 0.1 + 0.1 * i])
    assert sum(isinstance(m, DropPath) for m in create(VARIANT).modules()) == 0


def test_drop_path_rates_follow_the_blocks_in_order():
    """ hrnet_w18's residual block positions in order: layer1's 4, then 4 per module of stage 2's 1, stage 3's 4 and
    stage 4's 3 modules, 36 in all, at rates 0.35 * depth / 35; every branch of a module at its positions' rates."""
    model = create('hrnet_w18', drop_path_rate=0.35)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for b in model.layer1]
    for stage in (model.stage2, model.stage3, model.stage4):
        for module in stage:
            per_branch = [[b.drop_path.drop_prob for b in branch] for branch in module.branches]
            assert all(r == per_branch[0] for r in per_branch)
            rates += per_branch[0]
    assert rates == pytest.approx([0.01 * i for i in range(36)])


def test_drop_path_is_inactive_in_eval():
    model = create(VARIANT, head='concat', drop_path_rate=0.5)
    plain = create(VARIANT, head='concat')
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
        assert not torch.equal(model.train()(x), plain.train()(x))


@pytest.mark.parametrize('name', [n for n, (_, _, loads) in NORMS.items() if loads])
def test_pretrained_loads_strictly_into_batchnorm_parameters(name, no_key_warnings):
    model = create(VARIANT, pretrained=True, norm_layer=NORMS[name][0])
    held = set(model.state_dict())
    expected = {k: v for k, v in expected_state(VARIANT, 'classification').items()
                if k in held or not k.endswith('num_batches_tracked')}  # FrozenBatchNorm2d has no counter
    assert_loaded(model, expected)


@pytest.mark.parametrize('name', [n for n, (_, _, loads) in NORMS.items() if not loads])
def test_pretrained_refuses_norms_without_statistics(name):
    with pytest.raises(ValueError, match=f"norm_layer {NORMS[name][1].__name__} has no place"):
        create(VARIANT, pretrained=True, norm_layer=NORMS[name][0])
    model = create(VARIANT, pretrained=True, norm_layer=NORMS[name][0], pretrained_strict=False)
    expected = expected_state(VARIANT, 'classification')
    assert torch.equal(model.bn1.weight, expected['bn1.weight'])


@pytest.mark.parametrize('name', ["'batchnorm2d'", "'frozenbatchnorm2d'", "'groupnorm1'"])
def test_grad_checkpointing_is_exact_with_each_norm_and_drop_path(name):
    torch.manual_seed(0)
    model = create(VARIANT, head='concat', norm_layer=NORMS[name][0], drop_path_rate=0.2)
    assert_checkpointing_exact(model, torch.randn(2, 3, 72, 56))
    assert listed(model(torch.randn(1, 3, 64, 64)))
