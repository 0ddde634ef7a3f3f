""" Profile of the suite from tox's junit files: the slowest tests, and each test file's share of each env's time.

    python tools/suite_profile.py [--top 20] [TOX_DIR]    # TOX_DIR: default .tox (after `tox`)

Reads TOX_DIR/<env>/log/junit-suite.xml of every env that has one (tox writes them: tox.ini's --junitxml). Times
are pytest's per-test durations (setup, call and teardown), summed over the xdist workers, so a file's share is of
the env's test time, not of its wall time.
"""
import argparse
import collections
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple


def read(junit: Path) -> List[Tuple[str, str, float]]:
    """ (file, test id, seconds) of every test case in a junit file."""
    cases = []
    for case in ET.parse(junit).iter('testcase'):
        if not case.get('classname'):
            continue  # a collection-level entry (e.g. a skipped module), no test of a file
        module = case.get('classname').split('.')
        name = f"{'/'.join(module)}.py::{case.get('name')}"
        cases.append((f"{'/'.join(module)}.py", name, float(case.get('time') or 0)))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('tox_dir', nargs='?', default='.tox')
    parser.add_argument('--top', type=int, default=20)
    args = parser.parse_args(argv)
    envs: Dict[str, List[Tuple[str, str, float]]] = {
        j.parent.parent.name: read(j) for j in sorted(Path(args.tox_dir).glob('*/log/junit-suite.xml'))}
    if not envs:
        raise SystemExit(f'no {args.tox_dir}/<env>/log/junit-suite.xml: run tox first')

    print(f'## The {args.top} slowest tests\n')
    print('| env | test | s |\n| --- | --- | --- |')
    every = sorted(((s, env, name) for env, cases in envs.items() for _, name, s in cases), reverse=True)
    for s, env, name in every[:args.top]:
        print(f'| {env} | `{name}` | {s:.1f} |')

    files = sorted({f for cases in envs.values() for f, _, _ in cases})
    print('\n## Each file\'s share of each env\'s test time\n')
    print('| file | ' + ' | '.join(envs) + ' |\n| --- |' + ' --- |' * len(envs))
    totals = {env: sum(s for _, _, s in cases) for env, cases in envs.items()}
    per_file = {env: collections.Counter() for env in envs}
    for env, cases in envs.items():
        for f, _, s in cases:
            per_file[env][f] += s
    for f in files:
        cells = [f'{100 * per_file[env][f] / totals[env]:.0f}%' if f in per_file[env] else '-' for env in envs]
        print(f'| `{f}` | ' + ' | '.join(cells) + ' |')
    print('| total test time (s) | ' + ' | '.join(f'{totals[env]:.0f}' for env in envs) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
