""" BatchNorm freezing as fine-tuning users do it, with the package's checkpointing: timm's own
`timm.utils.freeze` / `freeze_batch_norm_2d` (FrozenBatchNorm2d), and DeepLabCut's way (its backbones'
`freeze_bn_stats`: BatchNorm layers in eval mode inside a training model). A training step leaves the frozen
statistics (and frozen weights) as they were, with and without gradient checkpointing; the frozen model computes
what the model did in eval mode. DDP with frozen stages is in test_ddp.py.
"""
import copy

import pytest
import torch
import torch.nn as nn

import timm
from timm.utils.model import FrozenBatchNorm2d, freeze, freeze_batch_norm_2d  # the class timm's freeze makes

from common import listed

VARIANT = 'hrnet_w18_small'
STEM = ['conv1', 'bn1', 'conv2', 'bn2', 'layer1']


def _timm_all(model: nn.Module) -> nn.Module:
    return freeze_batch_norm_2d(model)


def _timm_stem(model: nn.Module) -> nn.Module:
    freeze(model, STEM)
    return model


def _eval_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return model


FREEZES = {'freeze_batch_norm_2d': _timm_all, 'timm.utils.freeze(stem, layer1)': _timm_stem, 'eval BatchNorm': _eval_bn}


def _frozen_state(model: nn.Module) -> dict:
    """ Buffers of every BatchNorm (running statistics, counters), and every tensor of the frozen ones."""
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.rsplit('.', 1)[-1] in ('running_mean', 'running_var', 'num_batches_tracked')
            or isinstance(model.get_submodule(k.rsplit('.', 1)[0]), FrozenBatchNorm2d)}


def _step(model: nn.Module, x: torch.Tensor) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(o.float().square().mean() for o in listed(model(x))).backward()
    optimizer.step()


@pytest.mark.parametrize('checkpointing', [False, True], ids=['plain', 'checkpointed'])
@pytest.mark.parametrize('how', list(FREEZES))
def test_training_step_keeps_frozen_statistics(how, checkpointing):
    torch.manual_seed(0)
    model = timm.create_model(VARIANT, head='concat').train()
    model = FREEZES[how](model)
    frozen = _frozen_state(model)
    if how != 'eval BatchNorm':  # the BatchNorms that timm's freeze left trainable update their statistics
        frozen = {k: v for k, v in frozen.items()
                  if isinstance(model.get_submodule(k.rsplit('.', 1)[0]), FrozenBatchNorm2d)}
    assert frozen
    model.set_grad_checkpointing(checkpointing)
    _step(model, torch.randn(2, 3, 64, 48))
    after = model.state_dict()
    changed = [k for k, v in frozen.items() if not torch.equal(after[k], v)]
    assert not changed, changed


@pytest.mark.parametrize('how', list(FREEZES))
def test_checkpointing_gives_the_same_step(how):
    """ With frozen BatchNorm, a checkpointed training step gives the gradients and state of a plain one."""
    torch.manual_seed(0)
    plain = FREEZES[how](timm.create_model(VARIANT, head='concat').train())
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    x = torch.randn(2, 3, 64, 48)
    for m in (plain, checkpointed):
        sum(o.square().mean() for o in listed(m(x))).backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, msg=name)
    for (name, b), c in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        assert torch.equal(b, c), name


@pytest.mark.parametrize('how', list(FREEZES))
def test_frozen_model_computes_the_eval_model(how):
    """ Freezing after loading keeps what the loaded model computes in eval mode: the same weights, statistics."""
    torch.manual_seed(0)
    model = timm.create_model(VARIANT, head='concat')
    for m in model.modules():  # statistics that are not the init's
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = model.eval()(x)
        frozen = FREEZES[how](copy.deepcopy(model).train())
        if how == 'timm.utils.freeze(stem, layer1)':
            frozen.eval()  # the stages after layer1 are still trainable BatchNorms
        # FrozenBatchNorm2d folds the statistics into a scale and shift: float32 rounding, not a different function
        torch.testing.assert_close(frozen(x), expected, rtol=1e-3, atol=1e-3)
