""" The aten ops a forward dispatches: what the hardware runs, without timing noise."""
from typing import List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

Op = Tuple[str, Tuple[Tuple[int, ...], ...]]


class _Recorder(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.ops: List[Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        self.ops.append((str(func), tuple(tuple(t.shape) for t in tensors)))
        return func(*args, **(kwargs or {}))


def dispatched_ops(model: torch.nn.Module, x: torch.Tensor) -> List[Op]:
    """ (op, shapes of its tensor arguments) for each aten op that model(x) dispatches, in order, under inference_mode.
    Scalar arguments are left out: F.interpolate to a size and nn.Upsample by the same scale factor compare equal."""
    with torch.inference_mode(), _Recorder() as recorder:
        model(x)
    return recorder.ops


def first_difference(actual: List[Op], expected: List[Op]) -> str:
    """ Where two op lists part, for an assertion message ('' when equal)."""
    if actual == expected:
        return ''
    i = next((i for i, (a, e) in enumerate(zip(actual, expected)) if a != e), min(len(actual), len(expected)))
    return (f'{len(actual)} ops vs {len(expected)}, first difference at op {i}: '
            f'{actual[i] if i < len(actual) else None} vs {expected[i] if i < len(expected) else None}')
