""" The fix as pull requests to timm: a series of patches against a timm release's source tree, one concern each,
in `git format-patch` form (`upstream_series/*.patch`, applied in order with `git am` or `git apply`).

The series' last state of `timm/models/hrnet.py` is this package's `hrnet.py` with its timm import block replaced by
the one of timm's own `hrnet.py` (relative internal imports, no `_compat`): `upstream_files` checks that, so the
series and the package cannot drift apart. The package's own policy lives in `_policy.py`, which the series
never touches. `tools/series.py` turns the series into a git repo to edit, and back into patches.
"""
import ast
import difflib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

__all__ = [
    'SDIST_VERSION', 'SERIES_DIR', 'fetch_sdist', 'series', 'series_tree', 'upstream_files', 'file_diffs',
    'write_series', 'git_apply', 'patch_stats', 'added_lines', 'added_tests',
]

SDIST_VERSION = '1.0.31'  # the timm release the series is made against
MODULE_PATH = 'timm/models/hrnet.py'
TEST_PATH = 'tests/test_models.py'
SERIES_PATHS = (MODULE_PATH, TEST_PATH)  # the files the series changes
_HERE = Path(__file__).parent
SERIES_DIR = _HERE / 'upstream_series'


def _pip() -> List[str]:
    """ This interpreter's pip, else the first on PATH (envs made by uv have none). Asked of pip's installed metadata,
    not the import system: on Python < 3.12, setuptools' distutils shim turns itself off for the rest of the process
    when anything looks up the module `pip` (importlib.util.find_spec), and a later setuptools import then fails
    (torch 2.2's torch.compile imports it through triton)."""
    try:
        importlib.metadata.distribution('pip')
    except importlib.metadata.PackageNotFoundError:
        return [shutil.which('pip3') or shutil.which('pip') or 'pip']
    return [sys.executable, '-m', 'pip']


def fetch_sdist(version: str = SDIST_VERSION, cache_dir: Optional[str] = None) -> Path:
    """ The unpacked timm sdist (`pip download --no-deps --no-binary :all: timm==VERSION`), downloaded once into
    cache_dir (default: ~/.cache/timm-hrnet-patch). Returns its root, which holds timm/ and tests/."""
    cache = Path(cache_dir or os.path.join(os.path.expanduser('~'), '.cache', 'timm-hrnet-patch'))
    root = cache / f'timm-{version}'
    if (root / MODULE_PATH).is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [*_pip(), 'download', '-q', '--no-deps', '--no-binary', ':all:', f'timm=={version}', '-d', tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob('timm-*.tar.gz'))
        if done.returncode or not archives:
            raise RuntimeError(f'could not download the timm {version} sdist ({" ".join(cmd)}): {done.stderr.strip()}')
        with tarfile.open(archives[0]) as tar:
            kwargs = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
            tar.extractall(tmp, **kwargs)
        try:
            os.replace(Path(tmp) / f'timm-{version}', root)
        except OSError:  # another process unpacked it first
            if not (root / MODULE_PATH).is_file():
                raise
    return root


def series() -> List[Path]:
    """ The series' patch files, in the order they apply."""
    return sorted(SERIES_DIR.glob('[0-9][0-9][0-9][0-9]-*.patch'))


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


def series_tree(timm_src: Path, dest: Path, upto: Optional[int] = None) -> Path:
    """ A tree at dest holding timm_src's files that the series changes, with its first `upto` patches (default: all)
    applied in order; CalledProcessError naming the patch that does not apply cleanly."""
    for path in SERIES_PATHS:
        if not (Path(timm_src) / path).is_file():
            raise ValueError(f'{timm_src} is not a timm source tree: no {path}')
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(timm_src) / path, dest / path)
    for patch in series()[:upto]:
        git_apply(patch, dest)
    return dest


def upstream_files(timm_src: Path) -> Dict[str, str]:
    """ The files the whole series leaves, by repo path: the patched timm/models/hrnet.py and tests/test_models.py.

    Raises:
        ValueError: the series' hrnet.py is not this package's model module (import block apart): they drifted.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tree = series_tree(timm_src, Path(tmp))
        files = {path: (tree / path).read_text() for path in SERIES_PATHS}
    ours = upstream_module((_HERE / 'hrnet.py').read_text(), files[MODULE_PATH])  # the series' own import block
    if files[MODULE_PATH] != ours:
        drift = ''.join(list(difflib.unified_diff(
            files[MODULE_PATH].splitlines(keepends=True), ours.splitlines(keepends=True),
            'series', 'timm_hrnet_patch/hrnet.py'))[:40])
        raise ValueError(
            f"the series' last {MODULE_PATH} is not timm_hrnet_patch/hrnet.py (import block apart): update the "
            f'series (tools/series.py, docs/upstream.md). First lines of the difference:\n{drift}')
    return files


def file_diffs(timm_src: Path) -> Dict[str, str]:
    """ The whole series as one git-style unified diff (3 lines of context) per file against the timm source tree at
    timm_src, by repo path; files the tree already has as patched are left out."""
    diffs = {}
    for path, new in upstream_files(timm_src).items():
        old = (Path(timm_src) / path).read_text()
        if old != new:
            diffs[path] = f'diff --git a/{path} b/{path}\n' + ''.join(difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=f'a/{path}', tofile=f'b/{path}'))
    return diffs


def write_series(timm_src: Path, out_dir: Path) -> List[Path]:
    """ Write the series' patches into out_dir (as NNNN-<slug>.patch), once they apply in order to timm_src's files
    and end at the package's model module (upstream_files)."""
    upstream_files(timm_src)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(patch, out_dir / patch.name)) for patch in series()]


def git_apply(diff: Path, tree: Path) -> None:
    """ `git apply --check`, then `git apply`, of diff in the source tree's root; CalledProcessError if any hunk does
    not apply. The tree may lie inside another git repo (a temp dir under a checkout, .tox in a clone), where git apply
    would silently skip the paths outside its cwd: git is kept from looking above the tree."""
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(Path(tree).resolve().parent))
    for extra in (['--check', '-v'], []):
        subprocess.run(['git', 'apply', *extra, str(diff)], cwd=tree, env=env, check=True, capture_output=True)


def patch_stats(patch: Path) -> Dict[str, object]:
    """ A patch's title (its Subject, less the [PATCH n/m] tag) and its added / removed lines per file."""
    text = patch.read_text()
    subject = re.search(r'^Subject: (?:\[PATCH[^\]]*\] )?(.*(?:\n [^\n]*)*)', text, re.M)[1].replace('\n', '')
    files: Dict[str, List[int]] = {}
    path = None
    for line in text[text.index('\ndiff --git '):].splitlines():
        if line.startswith('diff --git '):
            path = line.split(' b/', 1)[1]
            files[path] = [0, 0]
        elif line.startswith(('+', '-')) and not line.startswith(('+++ ', '--- ')):
            files[path][line[0] == '-'] += 1
    return {'title': subject, 'files': {p: tuple(n) for p, n in files.items()}}


def added_lines(patch: Path) -> Dict[str, Set[int]]:
    """ The line numbers, in the patched file, of the lines a patch adds, per file it changes."""
    added: Dict[str, Set[int]] = {}
    path, line_no = None, 0
    text = patch.read_text()
    for line in text[text.index('\ndiff --git '):].splitlines():
        hunk = re.match(r'@@ -\d+(?:,\d+)? \+(\d+)', line)
        if line.startswith('diff --git '):
            path = line.split(' b/', 1)[1]
            added[path] = set()
        elif hunk:
            line_no = int(hunk[1])
        elif line.startswith(('+++ ', '--- ')):
            continue
        elif line.startswith('+'):
            added[path].add(line_no)
            line_no += 1
        elif line.startswith(' '):
            line_no += 1
    return added


def added_tests(patch: Path) -> List[str]:
    """ Names of the test functions a patch adds to timm's tests."""
    return re.findall(r'^\+def (test_\w+)\(', patch.read_text(), re.M)


def changed_tests(old: str, new: str) -> List[str]:
    """ Names of the test functions of a test file's source `new` that `old` lacks or has otherwise, decorators (a
    generic test's parametrization) included."""
    def tests(source: str) -> Dict[str, str]:
        lines = source.splitlines()
        functions = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name.startswith('test_')]
        return {n.name: '\n'.join(lines[min([n.lineno] + [d.lineno for d in n.decorator_list]) - 1:n.end_lineno])
                for n in functions}
    before, after = tests(old), tests(new)
    return [name for name, text in after.items() if before.get(name) != text]
