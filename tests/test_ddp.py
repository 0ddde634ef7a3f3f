""" DistributedDataParallel with find_unused_parameters=False: every head and a partial features_only trains,
with and without gradient checkpointing, and with frozen stages.

Two CPU processes (gloo) run every case in one process group, two training steps each: DDP raises in the second
step's forward when a parameter got no gradient in the first. After each step the ranks compare their gradients.
A control model with one parameter its forward never uses shows that the harness catches it. Slow: it starts two
interpreters (about 25 s here).
"""
import json
import os
import time
from typing import Dict, List

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import timm
from timm.utils.model import freeze

from common import HEADS, listed

CASES = {f'head={h!r}': dict(head=h) for h in HEADS}
CASES.update({
    "features_only incre out_indices=(1, 2)": dict(features_only=True, out_indices=(1, 2)),
    "features_only '' out_indices=(3,)": dict(features_only=True, feature_location='', out_indices=(3,)),
    "features_only incre out_indices=(0, 4)": dict(features_only=True, out_indices=(0, 4)),
    "features_only '' out_indices=(0,)": dict(features_only=True, feature_location='', out_indices=(0,)),
    # gradient checkpointing: every parameter still used, and the ranks' gradients still agree
    "head='concat' grad checkpointing": dict(head='concat', grad_checkpointing=True),
    "features_only incre out_indices=(1, 2) grad checkpointing": dict(
        features_only=True, out_indices=(1, 2), grad_checkpointing=True),
    # frozen stages (test_freeze.py): timm's freeze of the stem and layer1, DeepLabCut's eval-mode BatchNorm
    "head='concat' stem and layer1 frozen (timm.utils.freeze) grad checkpointing": dict(
        head='concat', freeze='stem', grad_checkpointing=True),
    "features_only incre out_indices=(1, 2) BatchNorm in eval mode": dict(
        features_only=True, out_indices=(1, 2), freeze='eval_bn'),
})
CONTROL = 'control: a parameter forward never uses'
_TIMEOUT_S = 600


def _train(kwargs: Dict, rank: int, control: bool = False) -> Dict:
    torch.manual_seed(0)  # the same initial weights on both ranks, as DDP's broadcast would make them
    kwargs = dict(kwargs)
    grad_checkpointing = kwargs.pop('grad_checkpointing', False)
    frozen = kwargs.pop('freeze', None)
    model = timm.create_model('hrnet_w18_small', **kwargs)
    model.set_grad_checkpointing(grad_checkpointing)
    if frozen == 'stem':
        freeze(model, ['conv1', 'bn1', 'conv2', 'bn2', 'layer1'])
    elif frozen == 'eval_bn':
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    if control:
        model.unused = torch.nn.Linear(1, 1)
    ddp = DistributedDataParallel(model, find_unused_parameters=False)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
    result = dict(steps=0, unused=[], grads_agree=True)
    for step in range(2):
        x = torch.randn(2, 3, 64 + 8 * step, 72, generator=torch.Generator().manual_seed(10 * rank + step))
        optimizer.zero_grad()
        sum(o.float().mean() for o in listed(ddp(x))).backward()
        result['unused'] = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        flat = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        result['grads_agree'] &= all(torch.equal(g, gathered[0]) for g in gathered)
        optimizer.step()
        result['steps'] = step + 1
    return result


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    results = {}
    for name, kwargs in list(CASES.items()) + [(CONTROL, {})]:
        try:
            results[name] = _train(kwargs, rank, control=name == CONTROL)
        except RuntimeError as e:  # raised on both ranks alike, in a local check before any collective
            results[name] = dict(error=str(e).splitlines()[0])
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(results, f)
    dist.destroy_process_group()


def _run_workers(out) -> Dict[str, List[Dict]]:
    """ Every case on both ranks: {case: [rank 0's result, rank 1's]}."""
    context = mp.start_processes(
        _worker, args=(2, str(out / 'init'), str(out)), nprocs=2, join=False, start_method='spawn')
    deadline = time.monotonic() + _TIMEOUT_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f'DDP workers did not finish in {_TIMEOUT_S} s')
    ranks = [json.loads((out / f'rank{r}.json').read_text()) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    return {name: [r[name] for r in ranks] for name in ranks[0]}


@pytest.mark.slow
@pytest.mark.torch
def test_ddp_every_parameter_used(tmp_path):
    """ One test, so that one pytest worker starts the two processes once (a module fixture would start them in
    every xdist worker); the failure message names each failing case."""
    results = _run_workers(tmp_path)
    expected = dict(steps=2, unused=[], grads_agree=True)
    failing = {case: ranks for case, ranks in results.items() if case != CONTROL and ranks != [expected] * 2}
    assert not failing and set(results) == set(CASES) | {CONTROL}
    for rank in results[CONTROL]:  # the harness catches an unused parameter
        assert 'error' in rank and 'finished reduction in the prior iteration' in rank['error']
