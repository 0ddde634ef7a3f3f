""" The fix as a pull request to timm: a unified diff of this package's model module against a timm source tree's
`timm/models/hrnet.py`, plus a new test file for timm's `tests/`, in timm's repo paths (`git apply` in the root).

The upstream module is this package's `hrnet.py` with its timm import block replaced by the one of timm's own
`hrnet.py` (relative internal imports, no `_compat` / `_meta_load`): everything else is the fix.
"""
import ast
import difflib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

__all__ = ['SDIST_VERSION', 'fetch_sdist', 'upstream_files', 'file_diffs', 'git_apply']

SDIST_VERSION = '1.0.31'  # the timm release the PR is made against
MODULE_PATH = 'timm/models/hrnet.py'
TEST_PATH = 'tests/test_hrnet.py'
_HERE = Path(__file__).parent


def fetch_sdist(version: str = SDIST_VERSION, cache_dir: Optional[str] = None) -> Path:
    """ The unpacked timm sdist (`pip download --no-deps --no-binary :all: timm==VERSION`), downloaded once into
    cache_dir (default: ~/.cache/timm-hrnet-patch). Returns its root, which holds timm/ and tests/."""
    cache = Path(cache_dir or os.path.join(os.path.expanduser('~'), '.cache', 'timm-hrnet-patch'))
    root = cache / f'timm-{version}'
    if (root / MODULE_PATH).is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--no-binary', ':all:',
               f'timm=={version}', '-d', tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob('timm-*.tar.gz'))
        if done.returncode or not archives:
            raise RuntimeError(f'could not download the timm {version} sdist ({" ".join(cmd)}): {done.stderr.strip()}')
        with tarfile.open(archives[0]) as tar:
            kwargs = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
            tar.extractall(tmp, **kwargs)
        os.replace(Path(tmp) / f'timm-{version}', root)
    return root


def _import_block(lines: List[str], path: str) -> Tuple[int, int]:
    """ [start, end) of the module's timm import block: the run of lines from its first `from timm` / `from .`
    import up to the next blank line."""
    start = next((i for i, line in enumerate(lines) if line.startswith(('from timm', 'from .'))), None)
    if start is None:
        raise ValueError(f'{path}: no timm import block (a line starting with "from timm" or "from .")')
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return start, end


def _imported_names(block: List[str]) -> Set[str]:
    return {a.asname or a.name for node in ast.parse(''.join(block)).body for a in node.names}


def upstream_module(ours: str, theirs: str, theirs_path: str = MODULE_PATH) -> str:
    """ Our module's source with its timm import block replaced by timm's (`theirs`).

    Raises:
        ValueError: timm's import block lacks a name ours imports (the target timm is too old for the fix).
    """
    ours_lines, theirs_lines = ours.splitlines(keepends=True), theirs.splitlines(keepends=True)
    o_start, o_end = _import_block(ours_lines, 'timm_hrnet_patch/hrnet.py')
    t_start, t_end = _import_block(theirs_lines, theirs_path)
    lacking = _imported_names(ours_lines[o_start:o_end]) - _imported_names(theirs_lines[t_start:t_end])
    if lacking:
        raise ValueError(
            f'{theirs_path} does not import {", ".join(sorted(lacking))}, which the patched module needs: '
            f'make the PR against timm {SDIST_VERSION} or later')
    return ''.join(ours_lines[:o_start] + theirs_lines[t_start:t_end] + ours_lines[o_end:])


def upstream_files(timm_src: Path) -> Dict[str, str]:
    """ The PR's files, by repo path: the patched timm/models/hrnet.py and the new tests/test_hrnet.py."""
    theirs = (Path(timm_src) / MODULE_PATH).read_text()
    return {
        MODULE_PATH: upstream_module((_HERE / 'hrnet.py').read_text(), theirs, str(Path(timm_src) / MODULE_PATH)),
        TEST_PATH: (_HERE / 'upstream_tests' / 'test_hrnet.py').read_text(),
    }


def file_diffs(timm_src: Path) -> Dict[str, str]:
    """ Each PR file's git-style unified diff (3 lines of context) against the timm source tree at timm_src, by repo
    path; files the tree already has as patched are left out."""
    diffs = {}
    for path, new in upstream_files(timm_src).items():
        old_file = Path(timm_src) / path
        old = old_file.read_text() if old_file.exists() else None
        if old == new:
            continue
        header = f'diff --git a/{path} b/{path}\n' + ('new file mode 100644\n' if old is None else '')
        diffs[path] = header + ''.join(difflib.unified_diff(
            (old or '').splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile='/dev/null' if old is None else f'a/{path}',
            tofile=f'b/{path}',
        ))
    return diffs


def git_apply(diff: Path, tree: Path) -> None:
    """ `git apply --check`, then `git apply`, of diff in the source tree's root; CalledProcessError if any hunk does not
    apply. The tree may lie inside another git repo (a temp dir under a checkout, .tox in a clone), where git apply
    would silently skip the paths outside its cwd: git is kept from looking above the tree."""
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(Path(tree).resolve().parent))
    for extra in (['--check', '-v'], []):
        subprocess.run(['git', 'apply', *extra, str(diff)], cwd=tree, env=env, check=True)
