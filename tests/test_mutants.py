""" tools/mutation_check.py stays usable: every mutant's anchor is in its file exactly once, its replacement changes
the file, and the tests it names exist. (Running the mutants is too slow for CI: docs/testing.md has the score.)"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from mutation_check import MUTANTS  # noqa: E402


@pytest.mark.parametrize('mutant', MUTANTS, ids=[m.behaviour for m in MUTANTS])
def test_mutant_anchor_is_found_once(mutant):
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.old) == 1, f'{mutant.path}: anchor found {text.count(mutant.old)} times'
    assert mutant.new != mutant.old
    assert all((ROOT / t).is_file() for t in mutant.tests.split()), mutant.tests


def test_every_documented_area_has_a_mutant():
    """ At least one mutant per area of docs/testing.md's list: heads, output_stride, layouts, bad input, loading,
    the hook, convert, check."""
    behaviours = ' '.join(m.behaviour for m in MUTANTS)
    for area in ("head 'classification'", "head 'incre'", "head ''", "head 'high_res'", "head 'concat'",
                 'output_stride', 'every parameter used', 'layout hrnet-seg', 'layout pose_hrnet',
                 'layout mmpretrain', 'layout mmseg', 'layout mmpose:', 'layout mmpose-0.x', 'bad input',
                 'safe loading', 'start-up hook', 'convert', 'check'):
        assert area in behaviours, area
