""" Drop-in for timm's own HRNet (the oracle: timm's module of the env's release, in this process).

State dicts saved by timm's own model load strictly into the package's model of the same configuration, which then
computes its outputs (except head='incre', whose own output is the bug fixed here); the package's state dicts load
back into timm's own model, non-strict with no unexpected key and the same outputs, or strictly through
full_state_dict. The API parity table is docs/dropin.md's, read here.
"""
import copy
import functools
import inspect
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given


import timm  # noqa: E402
import strategies  # noqa: E402
from common import VARIANTS, assert_same, listed  # noqa: E402
from synthetic import upstream  # noqa: E402  (timm's own module: the registry holds ours)
from timm_hrnet_patch import full_state_dict  # noqa: E402

# every configuration on the w18 family (every arch cfg's structure) as the env's HRNET_VARIANTS selects it (tox:
# all of it on the oldest and newest stack, hrnet_w18_small between), a few drawn ones on each wide variant
STRUCTURES = [v for v in VARIANTS if not strategies.wide(v)]
WIDE = [v for v in VARIANTS if strategies.wide(v)]
X = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))  # sides timm's own model takes
TRUNK = ('conv2.', 'bn2.', 'layer1.', 'transition', 'stage')


def config_id(config: dict) -> str:
    return '-'.join(f'{k}={v}' for k, v in config.items() if k != 'features_only') or 'default'


def stock(variant: str, config: dict, seed: int = 0) -> torch.nn.Module:
    """ timm's own model of the configuration in eval mode, its BatchNorm parameters and statistics random (each
    key its own values)."""
    torch.manual_seed(seed)
    model = getattr(upstream, variant)(**config)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def other_weights(model: torch.nn.Module) -> torch.nn.Module:
    """ A copy of the model with every parameter scaled: weights that a load must overwrite."""
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.data.mul_(1.5)
    return model


def forward(model: torch.nn.Module) -> list:
    with torch.no_grad():
        return listed(model(X))


def not_built(config: dict, last: int) -> tuple:
    """ Key prefixes of what the package leaves unbuilt (a contract, from the configuration alone): the incre
    modules and the last (`last`) stage 4 module's fuse layers of the branches out_indices does not take, or the trunk
    and incre modules with none taken."""
    taken = {i % 5 - 1 for i in config.get('out_indices', range(5)) if i % 5}
    if not taken:
        return TRUNK + ('incre_modules.',)
    return tuple(p for b in set(range(4)) - taken for p in (f'incre_modules.{b}.', f'stage4.{last}.fuse_layers.{b}.'))


def check_both_ways(variant: str, config: dict) -> None:
    theirs = stock(variant, config)
    # what the configuration computes with a state dict, by timm's own module: its model of the configuration, or
    # for head='incre' (whose own output is the raw branch maps) its features_only model at 'incre' (same keys)
    oracle = stock(variant, dict(features_only=True, out_indices=(1, 2, 3, 4))) if config.get('head') == 'incre' \
        else copy.deepcopy(theirs)

    def computes(state_dict: dict) -> list:
        oracle.load_state_dict(state_dict)
        return forward(oracle)

    saved = theirs.state_dict()
    ours = timm.create_model(variant, **config).eval()
    ours.load_state_dict(saved)  # strict
    out = forward(ours)
    assert_same(out, computes(saved), 'stock -> package')
    ours_sd = ours.state_dict()
    lacked = set(saved) - set(ours_sd)
    unbuilt = not_built(config, theirs.stage4_cfg['num_modules'] - 1)
    assert [k for k in lacked if not k.startswith(unbuilt)] == []

    back = other_weights(theirs)
    result = back.load_state_dict(ours_sd, strict=False)
    # torch does not report the BatchNorm counters of modules the state dict has none of: it fills them in
    assert not result.unexpected_keys
    assert set(result.missing_keys) == {k for k in lacked if not k.endswith('.num_batches_tracked')}
    assert_same(computes(back.state_dict()), out, 'package -> stock, strict=False')

    back = other_weights(theirs)
    back.load_state_dict(full_state_dict(ours))  # strict
    back_sd = back.state_dict()
    assert all(torch.equal(back_sd[k], v) for k, v in ours_sd.items())
    assert_same(computes(back_sd), out, 'package -> stock, full_state_dict')


# hrnet_w18_ssld is hrnet_w18's arch cfg with bias-free classifier convs: its other configurations are hrnet_w18's
CASES = [pytest.param(v, c, id=f'{v}-{config_id(c)}') for v in STRUCTURES for c in strategies.STOCK_CONFIGS
         if not (v.endswith('_ssld') and c.get('features_only'))]


@pytest.mark.parametrize('variant, config', CASES)
def test_state_dicts_both_ways(variant, config):
    check_both_ways(variant, config)


@pytest.mark.slow
@pytest.mark.parametrize('variant', WIDE)
def test_state_dicts_both_ways_wide(variant):
    """ The wide variants are hrnet_w18's structure: a few drawn configurations each."""

    @strategies.for_case(variant)
    @given(config=strategies.stock_configs)
    def check(config):
        check_both_ways(variant, config)

    check()


def test_full_state_dict_of_a_wrapper():
    """ HRNets inside another module: their keys under its names, a strict load into the same wrapper of stock's."""
    config = dict(features_only=True, out_indices=(1,))
    ours = torch.nn.ModuleDict(dict(backbone=timm.create_model('hrnet_w18_small', **config)))
    theirs = torch.nn.ModuleDict(dict(backbone=stock('hrnet_w18_small', config)))
    theirs.load_state_dict(full_state_dict(ours))
    ours.load_state_dict(theirs.state_dict())


# ---- API parity: docs/dropin.md's table ----

DOC = Path(__file__).resolve().parents[1] / 'docs' / 'dropin.md'
ROW = re.compile(r'^\| `(?P<name>[\w.]+)` \| (?P<status>same|differs) \|', re.M)
PARITY = {m['name']: m['status'] for m in ROW.finditer(DOC.read_text())}
PARITY_CONFIGS = [dict(head='classification'), dict(head='incre'), dict(head=''), dict(num_classes=0),
                  dict(features_only=True), dict(features_only=True, feature_location='', out_indices=(0, 2))]
MODULE = {n for n in dir(torch.nn.Module()) if not n.startswith('_')}


def public(obj) -> set:
    return {n for n in dir(obj) if not n.startswith('_')} - MODULE


def summary(value):
    """ A comparable digest: tensors by shape and sums, modules by type and parameter shapes, FeatureInfo by its
    dicts, lists and tuples item by item."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.double().sum().item(), value.double().abs().sum().item()
    if isinstance(value, torch.nn.Module):
        return type(value).__name__, tuple((k, tuple(v.shape)) for k, v in value.state_dict().items())
    if hasattr(value, 'get_dicts'):
        return [{k: d[k] for k in ('num_chs', 'reduction', 'module')} for d in value.get_dicts()]
    if isinstance(value, (list, tuple)):
        return [summary(v) for v in value]
    return value


def signature(method) -> list:
    """ How a call binds: the parameters' names and kinds (a default is a result, compared as one: timm 1.0 keeps the
    pooling on reset_classifier where 0.9 defaulted to 'avg')."""
    return [(p.name, p.kind) for p in inspect.signature(method).parameters.values()]


def outcome(fn):
    """ ('ok', digest of fn()) or ('raises', exception type) of a call on a copy."""
    try:
        return 'ok', summary(fn())
    except Exception as e:  # the outcome compared is the exception's type, whatever it is
        return 'raises', type(e).__name__


def result(model: torch.nn.Module, name: str):
    """ What `name` gives on the model: a method's outcome on typical arguments (after a call that changes the
    model, what the model then computes), an attribute's digest."""
    m = copy.deepcopy(model)
    calls = {
        'forward': lambda: m(X),
        'forward_features': lambda: m.forward_features(X),
        'forward_head': lambda: m.forward_head(m.forward_features(X)),
        'forward_intermediates': lambda: m.forward_intermediates(X, intermediates_only=True),
        'prune_intermediate_layers': lambda: (m.prune_intermediate_layers([0, 1]), m.forward_intermediates(X, [0, 1])),
        'reset_classifier': lambda: (m.reset_classifier(10), m(X)),
        'set_grad_checkpointing': lambda: (m.set_grad_checkpointing(True), m(X)),
        'get_classifier': lambda: m.get_classifier(),
        'group_matcher': lambda: m.group_matcher(),
        'init_weights': lambda: None,  # re-initialises: the outcome is random weights
        'get_num_in_chs': lambda: m.get_num_in_chs(),
        'stages': lambda: m.stages(m.act2(m.bn2(m.conv2(m.act1(m.bn1(m.conv1(X))))))),
    }
    torch.manual_seed(0)  # a new classifier's init
    with torch.no_grad():
        return outcome(calls.get(name, lambda: getattr(m, name)))


@functools.lru_cache(maxsize=None)
def parity_pairs() -> list:
    """ (what, timm's object, the package's) with the same weights: the model of each configuration, its last
    stage 4 module. Built once per process; result() works on copies."""
    pairs = []
    for config in PARITY_CONFIGS:
        theirs = stock('hrnet_w18_small', config)
        ours = timm.create_model('hrnet_w18_small', **config).eval()
        ours.load_state_dict(theirs.state_dict())
        what = config_id(config)
        pairs += [(what, theirs, ours), (f'{what} stage4[-1]', theirs.stage4[-1], ours.stage4[-1])]
    return pairs


def test_parity_table_lists_every_public_name():
    """ Every public name of timm's own model, features wrapper and HighResolutionModule has a row, and the
    internals downstream code reads too."""
    names = {'stage1_cfg', 'stage2_cfg', 'stage3_cfg', 'stage4_cfg', 'transition1', 'transition2', 'transition3',
             'stage2', 'stage3', 'stage4', 'conv1', 'bn1', 'act1', 'conv2', 'bn2', 'act2', 'layer1', 'incre_modules',
             'downsamp_modules', 'final_layer', 'fuse_layers', 'pretrained_cfg', 'in_chans', 'forward'}
    for _, theirs, _ in parity_pairs():
        names |= public(theirs)
    assert sorted(names - set(PARITY)) == []


@pytest.mark.parametrize('name', sorted(PARITY))
def test_parity(name):
    """ A 'same' row: the package's name has stock's signature and result in every configuration. A 'differs' row:
    the same signature, and a result that differs in one configuration at least (or the row is stale)."""
    differs, seen = [], False
    for what, theirs, ours in parity_pairs():
        if not hasattr(theirs, name) and not hasattr(type(theirs), name):
            continue  # not on this release, or not on this object
        seen = True
        assert hasattr(ours, name), what
        if callable(getattr(theirs, name)) and not isinstance(getattr(theirs, name), torch.nn.Module):
            assert signature(getattr(theirs, name)) == signature(getattr(ours, name)), what
        if result(theirs, name) != result(ours, name):
            differs.append(what)
    if not seen:
        pytest.skip(f"timm {timm.__version__}'s HRNet has no {name}")
    assert bool(differs) == (PARITY[name] == 'differs'), differs


def test_last_module_surgery():
    """ mmpose-style surgery on the last stage 4 module, as mmpose's HRModule is built with multiscale_output=False
    (mmpose/models/backbones/hrnet.py): keep fuse_layers[0], set multi_scale_output=False. The model then computes
    stock's one map, and state dicts load strictly both ways."""
    theirs = stock('hrnet_w18_small', dict(head=''))
    ours = timm.create_model('hrnet_w18_small', head='').eval()
    for model in (theirs, ours):
        model.stage4[-1].fuse_layers = model.stage4[-1].fuse_layers[:1]
        model.stage4[-1].multi_scale_output = False
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert_same(listed(ours(X)), listed(theirs(X)))
