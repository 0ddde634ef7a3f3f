""" Hypothesis profiles and strategies: the one place they are defined and composed.

Profiles, selected with the HYPOTHESIS_PROFILE environment variable:
- 'ci' (default): derandomized, no deadline, few examples. Every run draws the same examples, so rerunning a
  failing test id reproduces it, on one process or under xdist.
- 'dev': random examples, more of them, and the example database, to explore.
- 'fuzz': random examples, 500 of them (tests/test_fuzz.py's count; 24 under 'ci').
A failure prints the falsifying example and a @reproduce_failure blob.
"""
import itertools
import os
import zlib
from typing import Callable, Dict, NamedTuple, Optional, Tuple, TypeVar

import torch
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st

import timm
from target import package_model

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(  # no shrinking: each example builds models, a failure reports the example as drawn
    'ci', derandomize=True, deadline=None, max_examples=3, database=None, print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate], suppress_health_check=_SLOW_OK)
settings.register_profile('dev', deadline=None, max_examples=25, print_blob=True, suppress_health_check=_SLOW_OK)
settings.register_profile(  # the long checkpoint fuzz: HYPOTHESIS_PROFILE=fuzz pytest tests/test_fuzz.py
    'fuzz', deadline=None, max_examples=500, database=None, print_blob=True, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))
FUZZ_EXAMPLES = max(24, settings().max_examples)  # fuzzed checkpoints per run: a few dozen in CI

_F = TypeVar('_F', bound=Callable)


def wide(variant: str) -> bool:
    """ hrnet_w30 to hrnet_w64: hrnet_w18's arch cfg with wider branches. The w18 family holds every structure the
    variants have, so the wide variants run no code path of their own: their cases draw fewer and smaller inputs
    (tests/common.py's MAX_SIDE), and they are marked slow."""
    return not variant.startswith('hrnet_w18')


def for_case(*case) -> Callable[[_F], _F]:
    """ Seed a @given function with its matrix case (derandomized profiles only); a case whose first item is a wide
    variant draws two thirds of the profile's examples (two under 'ci': Hypothesis' simplest, then one drawn), the
    w18 family all of them.

    Derandomized Hypothesis seeds from the test function, so every parametrized case would get the same examples.
    Seeding from the case gives each case its own examples, still the same in every run.
    """
    def decorate(fn: _F) -> _F:
        if case and isinstance(case[0], str) and case[0].startswith('hrnet_') and wide(case[0]):
            fn = settings(max_examples=max(2, settings().max_examples * 2 // 3))(fn)
        return seed(zlib.crc32(repr(case).encode()))(fn) if settings().derandomize else fn
    return decorate


class Input(NamedTuple):
    """ An image batch spec: draws print as these numbers, the tensor is made from them."""
    batch: int
    chans: int
    height: int
    width: int
    seed: int

    def make(self, device: str = 'cpu') -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.batch, self.chans, self.height, self.width, generator=g).to(device)


# an explicit example beside the drawn ones where a test checks more than shapes: batch 2, odd sides, small maps
ODD_INPUT = Input(batch=2, chans=3, height=47, width=33, seed=0)

batches = st.integers(1, 3)
in_chans = st.sampled_from([1, 3, 4])
num_classes = st.sampled_from([0, 1, 1000]) | st.integers(2, 2000)
global_pools = st.sampled_from(['avg', ''])
HEADS = package_model._HEADS
heads = st.sampled_from(HEADS)
invalid_heads = st.one_of(st.text(max_size=12).filter(lambda h: h not in HEADS), st.integers(), st.booleans())
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def sides(multiple_of: int = 1, low: int = 16, high: int = 256) -> st.SearchStrategy[int]:
    """ Input heights/widths in [low, high]: any integer, or only multiples of `multiple_of`."""
    return st.integers(-(-low // multiple_of), high // multiple_of).map(lambda k: k * multiple_of)


@st.composite
def inputs(draw, chans: int = 3, multiple_of: int = 1, high: int = 256) -> Input:
    size = sides(multiple_of, high=high)
    return Input(draw(batches), chans, draw(size), draw(size), draw(st.integers(0, 2 ** 31 - 1)))


def dtypes(device: str) -> st.SearchStrategy[torch.dtype]:
    """ Compute dtypes to run a forward in: float32 on CPU; on CUDA also bfloat16 and float16 under autocast."""
    return st.sampled_from(CUDA_DTYPES) if device == 'cuda' else st.just(torch.float32)


@st.composite
def construction_kwargs(draw) -> Dict:
    """ create_model kwargs around the matrix. May hold global_pool='' with num_classes>0 (builds, cannot classify)."""
    return dict(head=draw(heads), num_classes=draw(num_classes), global_pool=draw(global_pools),
                in_chans=draw(in_chans))


class Corruption(NamedTuple):
    """ Keys to drop, keys to add, and a key to reshape (or None) in a checkpoint."""
    drop: Tuple[str, ...]
    extra: Tuple[str, ...]
    reshape: Optional[str]


@st.composite
def corruptions(draw, keys) -> Corruption:
    """ A non-empty change to a checkpoint with the given keys."""
    keys = sorted(keys)
    drop = draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))
    names = st.from_regex(r'\A[a-z_]{1,8}(\.[0-9a-z_]{1,6}){1,3}\Z').filter(lambda k: not k.startswith('module.'))
    extra = draw(st.lists(names.filter(lambda k: k not in keys), max_size=3, unique=True))
    reshape = draw(st.none() | st.sampled_from([k for k in keys if k not in drop and k.endswith('weight')]))
    if not (drop or extra or reshape):
        drop = [draw(st.sampled_from(keys))]
    return Corruption(tuple(drop), tuple(extra), reshape)


@st.composite
def builds(draw) -> Tuple[str, Dict]:
    """ (variant, create_model kwargs) of one build, stem_width included."""
    stem = draw(st.sampled_from([{}, dict(stem_width=32)]))
    return draw(st.sampled_from(timm.list_models('hrnet*'))), dict(draw(construction_kwargs()), **stem)


class Perturbation(NamedTuple):
    """ A change to a checkpoint: keys dropped, renamed, reshaped, cast and added; then the state dict wrapped in a
    container (with training state beside it) and its keys prefixed, as training scripts save them. `lossy`: the
    keys the change makes unloadable for the model it was drawn for (empty: it must load exactly)."""
    drop: Tuple[str, ...]
    rename: Tuple[Tuple[str, str], ...]
    reshape: Tuple[str, ...]
    cast: Tuple[Tuple[str, torch.dtype], ...]
    junk: Tuple[str, ...]
    prefix: str
    container: Optional[str]
    lossy: Tuple[str, ...]

    def apply(self, state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict]:
        """ (the changed state dict, what is saved: it wrapped and prefixed)."""
        sd = {k: v for k, v in state_dict.items() if k not in self.drop}
        for old, new in self.rename:
            sd[new] = sd.pop(old)
        for k in self.reshape:
            sd[k] = sd[k].flatten()[:max(1, sd[k].numel() - 1)].clone()
        for k, dtype in self.cast:
            sd[k] = sd[k].to(dtype)
        sd.update({k: torch.zeros(2) for k in self.junk})
        saved = {self.prefix + k: v for k, v in sd.items()}
        if self.container:
            saved = {self.container: saved, 'epoch': 7, 'optimizer': {'lr': 0.1}, 'arch': 'hrnet'}
        return sd, saved


_LOSSLESS_DTYPES = (torch.float16, torch.bfloat16, torch.float64)  # float32 weights in these load exactly (float32)
_LOSSY_DTYPES = (torch.int64, torch.bool)  # a float weight in an integer or bool tensor cannot load


@st.composite
def perturbations(draw, state_dict: Dict[str, torch.Tensor], model_keys) -> Perturbation:
    """ A change to a checkpoint for a model with model_keys, wrapped as the loader takes it (a 'state_dict' or
    'model' container, a 'module.' prefix). Half are lossless: float weights cast to float dtypes that hold float32's
    values. Half are lossy, by hand: one to four of a required key dropped or renamed to an unknown one, a loaded
    key reshaped, a float weight cast to an integer or bool dtype, an unknown key added; their keys are `lossy`."""
    keys = sorted(state_dict)
    loaded = sorted(k for k in keys if k in model_keys)
    floats = [k for k in loaded if state_dict[k].is_floating_point() and not k.endswith('.num_batches_tracked')]
    required = [k for k in loaded if not k.endswith('.num_batches_tracked')]  # torch fills in absent counters
    unknown = st.from_regex(r'\A[a-z]{1,8}(\.[0-9a-z_]{1,6}){1,2}\Z').map(lambda k: 'junk_' + k)
    wrap = dict(prefix=draw(st.sampled_from(['', 'module.'])),
                container=draw(st.sampled_from([None, 'state_dict', 'model'])))
    if draw(st.booleans()):  # must load
        cast = draw(st.lists(st.tuples(st.sampled_from(floats), st.sampled_from(_LOSSLESS_DTYPES)), max_size=3,
                             unique_by=lambda c: c[0]))
        return Perturbation(drop=(), rename=(), reshape=(), cast=tuple(cast), junk=(), lossy=(), **wrap)
    picked = draw(st.lists(st.sampled_from(required), min_size=1, max_size=4, unique=True))
    ops = [draw(st.sampled_from(['drop', 'rename', 'reshape', 'cast'] if k in floats else ['drop', 'rename']))
           for k in picked]
    rename = tuple((k, draw(unknown)) for k, op in zip(picked, ops) if op == 'rename')
    junk = tuple(draw(st.lists(unknown.filter(lambda k: k not in dict(rename).values()), max_size=1)))
    return Perturbation(
        drop=tuple(k for k, op in zip(picked, ops) if op == 'drop'),
        rename=rename,
        reshape=tuple(k for k, op in zip(picked, ops) if op == 'reshape'),
        cast=tuple((k, draw(st.sampled_from(_LOSSY_DTYPES))) for k, op in zip(picked, ops) if op == 'cast'),
        junk=junk,
        lossy=tuple(picked) + tuple(new for _, new in rename) + junk,
        **wrap,
    )


# features_only out_indices: 1 to 5 distinct taps (0 the stem, 1-4 the strides 4-32), negative ones from the end
out_indices = st.lists(st.integers(-5, 4), min_size=1, max_size=5, unique_by=lambda i: i % 5).map(tuple)

# every kind of model: each head, and features_only at each feature_location
model_kinds = st.sampled_from(
    [dict(head=h) for h in HEADS]
    + [dict(features_only=True, feature_location=loc) for loc in package_model._FEATURE_LOCATIONS])

# models a checkpoint loads into: every head, and features_only taking part of the outputs
load_targets = st.sampled_from(
    [dict(head=h) for h in HEADS]
    + [dict(features_only=True, out_indices=(1, 2)), dict(features_only=True, feature_location='', out_indices=(0, 4))])


@st.composite
def trained_models(draw) -> Tuple[Dict, Optional[Tuple[int, ...]]]:
    """ (create_model kwargs, prune_intermediate_layers indices or None) of a model to train: any head, or
    features_only at any location and out_indices; any output_stride; some pruned to a subset of the taps."""
    kind = dict(draw(model_kinds), output_stride=draw(st.sampled_from(package_model._OUTPUT_STRIDES)))
    if kind.get('features_only'):
        return dict(kind, out_indices=draw(out_indices)), None
    return kind, draw(st.none() | st.lists(st.integers(0, 4), min_size=1, max_size=4, unique=True).map(tuple))


# every configuration timm's own HRNet has (the releases' `hrnet_*` kwargs): its heads, num_classes=0, and
# features_only with each non-empty out_indices subset at each feature_location, every other subset written with
# negative indices (-5 is the stem, -1 stride 32)
STOCK_CONFIGS = [dict(head=h) for h in ('classification', 'incre', '')] + [dict(num_classes=0)] + [
    dict(features_only=True, feature_location=loc, out_indices=tuple(i - 5 if n % 2 else i for i in taps))
    for loc in ('incre', '')
    for n, taps in enumerate(t for r in range(1, 6) for t in itertools.combinations(range(5), r))]
stock_configs = st.sampled_from(STOCK_CONFIGS)
