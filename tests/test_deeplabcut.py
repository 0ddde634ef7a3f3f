""" DeepLabCut 3 on this package's model (tests/deeplabcut_models.py: each HRNet backbone mode and HRNetCoAM, which
calls transition1..3 and stage2..4 on lists and reads stageN_cfg). The oracle is the same code on timm's own HRNet,
in a fresh process with TIMM_HRNET_PATCH=0: state dicts saved there load here strictly and give its outputs bit for
bit, and the other way round. Runs in tox's `interop` env (HRNET_INTEROP=1: a missing client fails).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if os.environ.get('HRNET_INTEROP') != '1':
    pytest.importorskip('deeplabcut', reason='deeplabcut: tox -e interop')
import deeplabcut_models as dlc  # noqa: E402

from common import assert_same, listed  # noqa: E402

SCRIPT = Path(dlc.__file__)


def stock_run(tmp_path: Path, state_dicts: dict = None) -> dict:
    """ deeplabcut_models.run() on timm's own HRNet, in a fresh process."""
    args = [sys.executable, str(SCRIPT), str(tmp_path / 'stock.pt')]
    if state_dicts is not None:
        torch.save(state_dicts, tmp_path / 'ours.pt')
        args.append(str(tmp_path / 'ours.pt'))
    # as many threads as this process (an xdist worker has fewer): CPU kernels split their sums by thread, and the
    # outputs are compared bit for bit
    env = dict(os.environ, TIMM_HRNET_PATCH='0', OMP_NUM_THREADS=str(torch.get_num_threads()))
    subprocess.run(args, check=True, env=env)
    return torch.load(tmp_path / 'stock.pt', weights_only=False)


def test_state_dicts_both_ways(tmp_path):
    stock = stock_run(tmp_path)
    ours = dlc.run({name: sd for name, (sd, _) in stock.items()})  # strict
    for name, (_, out) in ours.items():
        assert_same(listed(out), listed(stock[name][1]), name)
    back = stock_run(tmp_path, {name: sd for name, (sd, _) in ours.items()})  # strict
    for name, (_, out) in back.items():
        assert_same(listed(out), listed(ours[name][1]), name)


@pytest.mark.parametrize('name', list(dlc.BACKBONES))
def test_training_step(name):
    """ DeepLabCut's defaults freeze BatchNorm (weights and statistics): a step leaves the statistics as they were.
    Every trainable parameter gets a gradient but those that only compute the maps it discards: all but the stride 4
    one, except DEKR's, which takes all four."""
    model = dlc.build(name)
    model.train()  # DeepLabCut's train() returns None
    stats = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k}
    sum(o.float().square().mean() for o in listed(model(*dlc.inputs(name)))).backward()
    assert [k for k, v in model.state_dict().items() if 'running' in k and not torch.equal(v, stats[k])] == []
    last = model.model.stage4_cfg['num_modules'] - 1
    discarded = () if model.interpolate_branches else tuple(
        p for b in (1, 2, 3) for p in (f'model.stage4.{last}.fuse_layers.{b}.', f'model.incre_modules.{b}.'))
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None
            and not n.startswith(discarded)] == []
