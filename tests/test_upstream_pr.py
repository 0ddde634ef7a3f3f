""" `timm-hrnet-patch upstream-diff`: the PR diff against a timm source tree (here the installed timm's, copied).

The full check, the diff applied to the 1.0.31 sdist and timm's own tests run on it, is `tox -e upstream`.
"""
import ast
import shutil
from pathlib import Path

import pytest

from target import skip_unless_package
skip_unless_package()

import timm  # noqa: E402
from timm_hrnet_patch import upstream  # noqa: E402
from timm_hrnet_patch.cli import main  # noqa: E402

PACKAGE = Path(upstream.__file__).parent
INSTALLED = Path(timm.__file__).parent / 'models' / 'hrnet.py'


def _timm_tree(tmp_path: Path) -> Path:
    """ A source tree holding the installed timm's hrnet.py at timm's repo path."""
    src = tmp_path / 'timm-src'
    (src / 'timm' / 'models').mkdir(parents=True)
    shutil.copy(INSTALLED, src / upstream.MODULE_PATH)
    return src


def _timm_names(path: Path) -> set:
    """ Names imported by a module's `from timm...` / relative imports, whatever its import block looks like."""
    return {a.asname or a.name for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('timm'))
            for a in node.names}


LACKING = sorted(_timm_names(PACKAGE / 'hrnet.py') - _timm_names(INSTALLED))


@pytest.mark.skipif(bool(LACKING), reason=f'timm {timm.__version__} lacks {LACKING}, the PR targets 1.0.31')
def test_diff_applies_and_only_swaps_the_import_block(tmp_path, capsys):
    src = _timm_tree(tmp_path)
    diff = tmp_path / 'hrnet.diff'
    assert main(['upstream-diff', '--timm-src', str(src), '-o', str(diff)]) == 0
    assert f'{upstream.MODULE_PATH}: +' in capsys.readouterr().err
    text = diff.read_text()
    assert text.startswith(f'diff --git a/{upstream.MODULE_PATH} b/{upstream.MODULE_PATH}\n')
    assert f'new file mode 100644\n--- /dev/null\n+++ b/{upstream.TEST_PATH}\n' in text
    upstream.git_apply(diff, src)  # tmp_path may lie inside a git checkout (tox's TMPDIR is in .tox)

    assert (src / upstream.TEST_PATH).read_text() == (PACKAGE / 'upstream_tests' / 'test_hrnet.py').read_text()
    patched = (src / upstream.MODULE_PATH).read_text()
    assert '_compat' not in patched and '_meta_load' not in patched and 'timm_hrnet_patch' not in patched
    theirs_imports = [line for line in INSTALLED.read_text().splitlines() if line.startswith(('from timm', 'from .'))]
    ours = [line for line in (PACKAGE / 'hrnet.py').read_text().splitlines()
            if not line.startswith(('from timm', 'from .', '    BasicBlock, Bottleneck'))]
    assert [line for line in patched.splitlines() if line.startswith(('from timm', 'from .'))] == theirs_imports
    assert [line for line in patched.splitlines() if not line.startswith(('from timm', 'from .'))] == ours
    compile(patched, upstream.MODULE_PATH, 'exec')

    # the diff of an already patched tree is empty
    assert upstream.file_diffs(src) == {}


def test_diff_needs_every_name_in_timms_imports(tmp_path):
    """ A timm whose hrnet.py imports all the fix needs but feature_take_indices (as 1.0.31's, less that)."""
    src = _timm_tree(tmp_path)
    (src / upstream.MODULE_PATH).write_text(
        '""" HRNet """\nimport torch\n\n'
        'from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD\n'
        'from timm.layers import create_classifier, get_device_dtype\n'
        'from ._builder import build_model_with_cfg, pretrained_cfg_for_features\n'
        'from ._features import FeatureInfo\n'
        'from ._registry import register_model, generate_default_cfgs\n'
        'from .resnet import BasicBlock, Bottleneck\n\n'
        "__all__ = ['HighResolutionNet']\n")
    with pytest.raises(SystemExit, match='does not import feature_take_indices, which the patched module needs'):
        main(['upstream-diff', '--timm-src', str(src)])


def test_diff_needs_a_timm_tree(tmp_path):
    with pytest.raises(SystemExit, match=f'is not a timm source tree: no {upstream.MODULE_PATH}'):
        main(['upstream-diff', '--timm-src', str(tmp_path)])
