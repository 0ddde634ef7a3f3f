""" Installing the package overrides timm's HRNet through the start-up hook: in a new venv made here, once for an
editable install and once for a wheel. Slow: each makes a venv and installs timm into it (torch comes from the
base interpreter's site-packages)."""
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from target import skip_unless_package
skip_unless_package()

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(
    '.git', '.tox', 'build', 'dist', '*.egg-info', '__pycache__', '.hypothesis', '.pytest_cache')
STARTUP = "import sys; print(sorted(m for m in ('torch', 'timm', 'timm_hrnet_patch') if m in sys.modules))"
BUILD = ("import sys, timm; m = timm.create_model('hrnet_w18_small', head='incre'); "
         "print(type(m).__module__, 'timm_hrnet_patch' in sys.modules)")


def _run(cmd, **env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **env))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['editable', 'wheel'])
def test_install_overrides_timm(kind, tmp_path):
    src, venv = tmp_path / 'src', tmp_path / 'venv'
    shutil.copytree(REPO, src, ignore=SKIP)
    _run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)])
    py = str(venv / 'bin' / 'python')
    pip = [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
    _run([*pip, f"timm=={version('timm')}", f"huggingface_hub=={version('huggingface_hub')}"])
    if kind == 'editable':
        _run([*pip, '--no-build-isolation', '--no-deps', '-e', str(src)])
    else:
        _run([py, '-m', 'pip', 'wheel', '-q', '--no-build-isolation', '--no-deps', '-w', str(tmp_path), str(src)])
        _run([*pip, '--no-deps', str(next(tmp_path.glob('timm_hrnet_patch-*.whl')))])
    site = Path(_run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']))
    assert (site / 'timm_hrnet_patch.pth').is_file()

    # start-up imports neither torch nor timm (nor the patch); the finder waits for timm, once, even if re-installed
    assert _run([py, '-c', STARTUP]) == '[]'
    assert _run([py, '-c', 'import _timm_hrnet_patch_hook as h, sys; h.install(); h.install(); '
                 'print(sum(isinstance(f, h._TimmFinder) for f in sys.meta_path))']) == '1'
    # `import timm` alone gives the patched model; switched off, timm's own
    assert _run([py, '-W', 'ignore', '-c', BUILD]) == 'timm_hrnet_patch.hrnet True'
    assert _run([py, '-W', 'ignore', '-c', BUILD], TIMM_HRNET_PATCH='0') == 'timm.models.hrnet False'
    assert _run([py, '-W', 'ignore', '-c', 'import timm, timm_hrnet_patch as p; import timm; print(p.is_active())']) \
        == 'True'
    cli = str(venv / 'bin' / 'timm-hrnet-patch')
    report = _run([cli, 'check', '--variants', 'hrnet_w18_small', '--heads', 'incre'])
    assert f'start-up hook: {site / "timm_hrnet_patch.pth"}, enabled, patched timm at import: yes; ' \
        'patch active: True' in report
    assert '4/4 ok, 0 failed' in report

    _run([py, '-m', 'pip', 'uninstall', '-y', '-q', 'timm-hrnet-patch'])
    assert not (site / 'timm_hrnet_patch.pth').exists() and not list(site.glob('_timm_hrnet_patch_hook*'))
    assert _run([py, '-W', 'ignore', '-c', BUILD]) == 'timm.models.hrnet False'
