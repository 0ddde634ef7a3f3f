""" Installing the package: its declared dependencies, and the start-up hook that overrides timm's HRNet.

The hook tests make a new venv here, once for an editable install and once for a wheel. The venv reuses the
running env's packages (torch, timm, ...) through symbolic links, so nothing large is installed or left behind.
"""
import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(
    '.git', '.tox', '.venv*', 'build', 'dist', '*.egg-info', '__pycache__', '.hypothesis', '.pytest_cache')
OWN = ('timm_hrnet_patch', '_timm_hrnet_patch_hook', '__editable__.timm_hrnet_patch', '__editable___timm_hrnet_patch')
VENV_LIMIT = 100 * 2 ** 20  # what one install test may leave on disk: a venv with pip, not torch
STARTUP = "import sys; print(sorted(m for m in ('torch', 'timm', 'timm_hrnet_patch') if m in sys.modules))"
BUILD = ("import sys, timm; m = timm.create_model('hrnet_w18_small', head='incre'); "
         "print(type(m).__module__, 'timm_hrnet_patch' in sys.modules)")
# after BUILD, in the same process: the files imported, and is_active() after importing the package and timm again
WHERE = ("; import timm_hrnet_patch as p, _timm_hrnet_patch_hook as h, timm; "
         "print(p.is_active(), p.__file__, h.__file__)")


def _run(cmd, **env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **env))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def _norm(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def _disk_usage(path: Path) -> int:
    """ Bytes of the files under path, links not followed."""
    return sum(f.lstat().st_size for f in path.rglob('*') if f.is_file() and not f.is_symlink())


def _running_env_packages() -> Path:
    """ A folder of links to everything in the running env's site-packages but this package's own files, put on the
    venv's sys.path by a .pth: the venv imports (and pip sees) torch, timm and the rest without installing them, and
    finds this package only where the test installs it. The linked folder is not a site dir: its .pth files (the
    running env's start-up hook, editable finders) do not run in the venv.

    One folder per running env, in the temp dir, made once and kept: its path names the modules that the venvs
    import, so the bytecode of torch and timm compiled for it (PYTHONPYCACHEPREFIX) serves every install test."""
    site_dirs = sorted({sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']})
    entries = sorted({e.name: e for d in site_dirs for e in Path(d).iterdir()
                      if not e.name.startswith(OWN) and e.suffix != '.pth'}.items())
    key = hashlib.sha256(repr([(name, str(e)) for name, e in entries]).encode()).hexdigest()[:12]
    links = Path(tempfile.gettempdir()) / f'hrnet-patch-running-env-{key}'
    if not links.is_dir():
        made = Path(tempfile.mkdtemp(prefix=f'{links.name}-', dir=links.parent))
        for name, entry in entries:
            (made / name).symlink_to(entry)
        try:
            made.rename(links)
        except OSError:  # another test process made it first
            shutil.rmtree(made)
    return links


def test_declared_dependencies_cover_imports():
    """ Every third-party module the package imports is a declared dependency of the installed distribution."""
    imported = set()
    for path in [*(REPO / 'timm_hrnet_patch').glob('*.py'), REPO / '_timm_hrnet_patch_hook.py']:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add(node.module.split('.')[0])
    third_party = imported - set(sys.stdlib_module_names) - {'timm_hrnet_patch', '_timm_hrnet_patch_hook'}
    dists = packages_distributions()
    needed = {_norm(dists[m][0]) for m in third_party}
    declared = {_norm(re.split(r'[<>=!~;\[ ]', r)[0]) for r in distribution('timm-hrnet-patch').requires or ()
                if 'extra ==' not in r}
    assert {'torch', 'timm', 'safetensors', 'tqdm', 'huggingface-hub'} <= needed  # the scan sees the imports
    assert needed <= declared, f'imported but not declared in pyproject.toml: {sorted(needed - declared)}'


def test_declared_floors_are_the_seed_env():
    """ The lowest torch and timm the metadata admits are exactly the versions tox's `seed` env tests."""
    floors = dict(re.fullmatch(r'(torch|timm)>=(\S+)', r).groups()
                  for r in distribution('timm-hrnet-patch').requires or () if re.match(r'(torch|timm)>=', r))
    seed = dict(re.findall(r'^\s+seed[\w,]*: (torch|timm)==(\S+)$', (REPO / 'tox.ini').read_text(), re.M))
    assert set(floors) == {'torch', 'timm'} and floors == seed, (floors, seed)


@pytest.mark.slow
@pytest.mark.packaging
@pytest.mark.parametrize('kind', ['editable', 'wheel'])
def test_install_overrides_timm(kind, tmp_path, monkeypatch):
    src, venv = tmp_path / 'src', tmp_path / 'venv'
    monkeypatch.chdir(tmp_path)  # not the checkout: `python -c` would import the package from the cwd
    shutil.copytree(REPO, src, ignore=SKIP)
    _run([sys.executable, '-m', 'venv', str(venv)])
    py = str(venv / 'bin' / 'python')
    site = Path(_run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']))
    (site / '_running_env.pth').write_text(f'{_running_env_packages()}\n')
    # build isolation: the build uses the backend that pyproject.toml [build-system] requires (hatchling)
    pip = [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-deps']
    if kind == 'editable':
        _run([*pip, '-e', str(src)])
    else:
        _run([py, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', str(tmp_path), str(src)])
        _run([*pip, str(next(tmp_path.glob('timm_hrnet_patch-*.whl')))])
    assert (site / 'timm_hrnet_patch.pth').is_file(), f'the {kind} install has no start-up hook .pth in {site}'

    # start-up imports neither torch nor timm (nor the patch); the finder waits for timm, once, even if re-installed
    assert _run([py, '-c', STARTUP]) == '[]'
    assert _run([py, '-c', 'import _timm_hrnet_patch_hook as h, sys; h.install(); h.install(); '
                 'print(sum(isinstance(f, h._TimmFinder) for f in sys.meta_path))']) == '1'
    # `import timm` alone gives the patched model, from the package installed here; switched off, timm's own
    built, where = _run([py, '-W', 'ignore', '-c', BUILD + WHERE]).splitlines()
    assert built == 'timm_hrnet_patch.model True' and where.startswith('True '), (built, where)
    installed_from = src if kind == 'editable' else site
    assert all(Path(p).is_relative_to(installed_from) for p in where.split()[1:]), where
    assert _run([py, '-W', 'ignore', '-c', BUILD], TIMM_HRNET_PATCH='0') == 'timm.models.hrnet False'
    cli = str(venv / 'bin' / 'timm-hrnet-patch')
    report = _run([cli, 'check', '--variants', 'hrnet_w18_small', '--heads', 'incre'])
    assert f'start-up hook: {site / "timm_hrnet_patch.pth"}, enabled, patched timm at import: yes; ' \
        'patch active: True' in report
    assert '4/4 ok, 0 failed' in report

    _run([py, '-m', 'pip', 'uninstall', '-y', '-q', 'timm-hrnet-patch'])
    assert not (site / 'timm_hrnet_patch.pth').exists() and not list(site.glob('_timm_hrnet_patch_hook*'))
    assert _run([py, '-W', 'ignore', '-c', BUILD]) == 'timm.models.hrnet False'
    # the footprint: pip and the package, no second torch (pytest deletes tmp_path once the test has passed)
    assert _disk_usage(tmp_path) < VENV_LIMIT, f'{kind} install test left {_disk_usage(tmp_path) / 2 ** 20:.0f} MiB'
