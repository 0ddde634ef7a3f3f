""" Edit the upstream series (timm_hrnet_patch/upstream_series) as a git repo, and print its statistics.

    python tools/series.py checkout DIR   # the timm sdist in a new git repo at DIR, the series applied with git am
    python tools/series.py export DIR     # DIR's commits since the sdist back into the series (git format-patch),
                                          # and timm_hrnet_patch/hrnet.py rewritten from the series' last hrnet.py
    python tools/series.py stat           # a table of the series: title, files, lines (docs/UPSTREAM_PR.md)

In DIR, work as on any branch: commit, `git rebase -i` to fix an earlier PR, `git commit --fixup`. The package's
hrnet.py is the series' last hrnet.py with the package's import block (timm and `_compat`), so export keeps the
two one source; change the package module through the series, or change it and then the last patch that touches it.
"""
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timm_hrnet_patch import upstream  # noqa: E402

PACKAGE_MODULE = Path(upstream.__file__).parent / 'hrnet.py'
BASE_TAG = 'timm-sdist'


def _git(tree: Path, *args: str, **kwargs) -> str:
    return subprocess.run(['git', *args], cwd=tree, check=True, text=True, capture_output=True, **kwargs).stdout


def checkout(tree: Path) -> None:
    if tree.exists():
        raise SystemExit(f'error: {tree} exists')
    shutil.copytree(upstream.fetch_sdist(), tree)
    _git(tree, 'init', '-q')
    _git(tree, 'add', '-A')
    who = ['-c', 'user.name=timm-hrnet-patch', '-c', 'user.email=timm-hrnet-patch@localhost']  # committer, if unset
    _git(tree, *who, 'commit', '-qm', f'timm {upstream.SDIST_VERSION} sdist')
    _git(tree, 'tag', BASE_TAG)
    _git(tree, *who, 'am', '-q', *map(str, upstream.series()))
    print(f'{tree}: timm {upstream.SDIST_VERSION} and the {len(upstream.series())} patches of the series')


def export(tree: Path) -> None:
    for patch in upstream.series():
        patch.unlink()
    _git(tree, 'format-patch', '-q', '--zero-commit', '--no-signature', '-o', str(upstream.SERIES_DIR), BASE_TAG)
    lines = (tree / upstream.MODULE_PATH).read_text().splitlines(keepends=True)
    ours = PACKAGE_MODULE.read_text().splitlines(keepends=True)
    s_start, s_end = upstream._import_block(lines, upstream.MODULE_PATH)
    o_start, o_end = upstream._import_block(ours, str(PACKAGE_MODULE))
    PACKAGE_MODULE.write_text(''.join(lines[:s_start] + ours[o_start:o_end] + lines[s_end:]))
    print(f'{len(upstream.series())} patches in {upstream.SERIES_DIR}; {PACKAGE_MODULE} from the last hrnet.py')


def stat() -> None:
    """ One row per patch: number, title, files, lines of timm/models/hrnet.py and of the tests, +added / -removed."""
    print('| PR | title | files | hrnet.py | tests | new tests |')
    print('| --- | --- | --- | --- | --- | --- |')
    for i, patch in enumerate(upstream.series(), 1):
        stats = upstream.patch_stats(patch)
        files = stats['files']
        model = files.get(upstream.MODULE_PATH, (0, 0))
        tests = [sum(n[k] for p, n in files.items() if p.startswith('tests/')) for k in (0, 1)]
        print(f"| {i} | {stats['title']} | {', '.join(f'`{p}`' for p in files)} | +{model[0]} / -{model[1]} "
              f"| +{tests[0]} / -{tests[1]} | {', '.join(f'`{t}`' for t in upstream.added_tests(patch))} |")


if __name__ == '__main__':
    commands = {'checkout': 2, 'export': 2, 'stat': 1}
    if len(sys.argv) < 2 or commands.get(sys.argv[1]) != len(sys.argv) - 1:
        raise SystemExit(__doc__)
    {'checkout': checkout, 'export': export, 'stat': stat}[sys.argv[1]](*map(Path, sys.argv[2:]))
