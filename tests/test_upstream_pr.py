""" The upstream series (timm_hrnet_patch/upstream_series) and `timm-hrnet-patch upstream-diff`, on the timm 1.0.31
sdist's files: the series applies in order, ends at the package's model module, and carries none of the package's
policy. `tox -e upstream` applies it step by step to the whole sdist and runs timm's tests at each step.
"""
import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


from timm_hrnet_patch import upstream  # noqa: E402
from timm_hrnet_patch.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(upstream.__file__).parent
# what the package has and timm must never get: its name, its policy module and compat, the strict alias, its docs
PACKAGE_ONLY = re.compile(r'timm_hrnet_patch|timm-hrnet-patch|_policy|_compat|alias strict|strict=False\)|docs/|'
                          r'check_input|check_values|head_hint')
# other codebases, which timm's code does not name
OTHER_CODEBASES = re.compile(r'mmseg|mmpose|mmcv|openmmlab|transformers|timmbackbone|deeplabcut|segmentation.models|'
                             r'upstream', re.I)


@pytest.fixture(scope='module')
def sdist():
    return upstream.fetch_sdist()


def test_series_applies_in_order_and_ends_at_the_package_module(sdist, tmp_path):
    """ Each patch applies to the one before (git apply --check), and the last hrnet.py is the package's module with
    timm's import block: the drift check that upstream_files makes, against a module this test writes out itself."""
    patches = upstream.series()
    assert [p.name[:5] for p in patches] == [f'{i:04d}-' for i in range(1, len(patches) + 1)]
    tree = upstream.series_tree(sdist, tmp_path / 'tree')
    ours = (PACKAGE / 'hrnet.py').read_text().splitlines()
    theirs = (tree / upstream.MODULE_PATH).read_text().splitlines()

    def block(lines):  # the timm import block: from its first `from timm` or `from .` line to the next blank line
        start = next(i for i, line in enumerate(lines) if line.startswith(('from timm', 'from .')))
        return start, lines.index('', start)

    (o_start, o_end), (t_start, t_end) = block(ours), block(theirs)
    expected = ours[:o_start] + theirs[t_start:t_end] + ours[o_end:]
    assert theirs == expected


def test_lint_judges_the_lines_a_patch_adds(sdist, tmp_path):
    """ added_lines counts what patch_stats counts, and flake8 flags a long line the patch adds, not timm's own."""
    sys.path.insert(0, str(ROOT / 'tools'))
    import upstream_env
    for patch in upstream.series():
        files = upstream.patch_stats(patch)['files']
        assert {p: len(n) for p, n in upstream.added_lines(patch).items()} == {p: n[0] for p, n in files.items()}
    tree = upstream.series_tree(sdist, tmp_path / 'tree', upto=0)
    module = tree / upstream.MODULE_PATH
    module.write_text(module.read_text() + 'X = ' + '1 + ' * 40 + '1\n')
    diff = subprocess.run(['git', 'diff', '--no-index', str(sdist / upstream.MODULE_PATH), str(module)],
                          capture_output=True, text=True).stdout
    patch = tmp_path / 'long.patch'
    patch.write_text('Subject: [PATCH] Add a long line\n\n' + re.sub(r'(?m)^(diff --git|---|\+\+\+) .*$', lambda m: {
        'diff --git': f'diff --git a/{upstream.MODULE_PATH} b/{upstream.MODULE_PATH}',
        '---': f'--- a/{upstream.MODULE_PATH}', '+++': f'+++ b/{upstream.MODULE_PATH}'}[m[1]], diff))
    findings = upstream_env.lint_step(tree, patch)  # timm's own line 5 is too long as well, but not the patch's
    assert {f.split(': ', 1)[1].rsplit(':', 2)[0] for f in findings} == {
        f'{upstream.MODULE_PATH}:{len(module.read_text().splitlines())}'}, findings
    assert any(' E501 ' in f for f in findings), findings


def _package_imports(module: Path) -> set:
    """ The modules of this package that `module` imports, anywhere in it (relative imports or by name)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('timm_hrnet_patch')):
            found |= {node.module or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith('timm_hrnet_patch')}
    return found


def test_model_module_imports_nothing_of_the_package_but_compat():
    """ The model module is timm's code, the package builds on it: of the package it imports `_compat` alone, and
    `_compat` imports nothing of the package, so no package module sits inside the model and there is no circle."""
    assert _package_imports(PACKAGE / 'hrnet.py') == {'_compat'}
    assert _package_imports(PACKAGE / '_compat.py') == set()


def test_drift_is_an_error(sdist, tmp_path, monkeypatch):
    """ A package module the series does not end at: upstream-diff refuses, naming the difference."""
    module = (PACKAGE / 'hrnet.py').read_text()
    assert module.count("_logger = logging.getLogger(__name__)") == 1
    (tmp_path / 'hrnet.py').write_text(module.replace("_logger = logging.getLogger(__name__)", "_DRIFT = 0.2"))
    monkeypatch.setattr(upstream, '_HERE', tmp_path)
    with pytest.raises(SystemExit, match=r"(?s)the series' last timm/models/hrnet.py is not .*_DRIFT = 0.2"):
        main(['upstream-diff', '--timm-src', str(sdist), '-o', str(tmp_path / 'x.diff')])


def test_upstream_diff_series_is_git_am_ready(sdist, tmp_path, capsys):
    """ --series DIR writes the patches, each with its commit message, and git am applies them in order."""
    out = tmp_path / 'series'
    assert main(['upstream-diff', '--timm-src', str(sdist), '--series', str(out)]) == 0
    assert f'git am {out}/*.patch' in capsys.readouterr().err
    written = sorted(out.iterdir())
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in upstream.series()]
    repo = upstream.series_tree(sdist, tmp_path / 'repo', upto=0)
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'init.defaultBranch=main']
    env = {'GIT_CEILING_DIRECTORIES': str(tmp_path), 'PATH': '/usr/bin:/bin'}
    for cmd in (['init', '-q'], ['add', '-A'], ['commit', '-qm', 'timm'], ['am', '-q', *map(str, written)]):
        subprocess.run(git + cmd, cwd=repo, env=env, check=True)
    log = subprocess.run(git + ['log', '--format=%s%n%b', 'HEAD~1..'], cwd=repo, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert log.startswith(upstream.patch_stats(written[-1])['title'])
    for path, text in upstream.upstream_files(sdist).items():
        assert (repo / path).read_text() == text


def test_one_diff_is_the_whole_series(sdist, tmp_path):
    diff = tmp_path / 'hrnet.diff'
    assert main(['upstream-diff', '--timm-src', str(sdist), '-o', str(diff)]) == 0
    tree = upstream.series_tree(sdist, tmp_path / 'tree', upto=0)
    upstream.git_apply(diff, tree)
    for path, text in upstream.upstream_files(sdist).items():
        assert (tree / path).read_text() == text


def test_series_carries_no_package_policy():
    """ No line a patch adds names the package, its policy, its docs or another codebase; PR 1 is the follow-up to
    #2139 alone, in at most 30 changed lines of hrnet.py, and no PR changes more than 120; every title is a plain
    sentence, as timm's commits are ("Fix ...", "Add ...")."""
    for patch in upstream.series():
        added = [line for line in patch.read_text().splitlines() if line.startswith('+') and not line.startswith('+++')]
        leaks = [line for line in added if PACKAGE_ONLY.search(line)]
        assert not leaks, f'{patch.name} adds package-only lines: {leaks}'
        others = [line for line in added if OTHER_CODEBASES.search(line)]
        assert not others, f'{patch.name} names other codebases: {others}'
        assert sum(upstream.patch_stats(patch)['files'][upstream.MODULE_PATH]) <= 120, patch.name
    first = upstream.patch_stats(upstream.series()[0])
    assert first['title'].endswith('(follow-up to #2139)') and 'Fixes #2139' not in upstream.series()[0].read_text()
    assert sum(first['files'][upstream.MODULE_PATH]) <= 30
    titles = [upstream.patch_stats(patch)['title'] for patch in upstream.series()]
    assert all(re.match(r'(Fix|Add|Support|Build|Load|Remove|Make) [A-Za-z\']', t) for t in titles), titles


def test_docs_show_the_series_stat():
    """ docs/UPSTREAM_PR.md's table is what `python tools/series.py stat` prints."""
    printed = subprocess.run([sys.executable, str(ROOT / 'tools' / 'series.py'), 'stat'], check=True,
                             capture_output=True, text=True).stdout
    assert printed.strip() in (ROOT / 'docs' / 'UPSTREAM_PR.md').read_text()


def test_module_needs_every_name_in_timms_imports():
    """ A timm whose hrnet.py imports all the series needs but feature_take_indices (as its end's, less that)."""
    theirs = ('""" HRNet """\nimport torch\n\nfrom timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD\n'
              'from timm.layers import DropPath, LayerType, calculate_drop_path_rates, create_classifier, '
              'get_act_layer, get_device_dtype, get_norm_layer\n'
              'from ._builder import build_model_with_cfg, pretrained_cfg_for_features\n'
              'from ._features import FeatureInfo\nfrom ._manipulate import checkpoint\n'
              'from ._registry import register_model, generate_default_cfgs\n'
              'from .resnet import BasicBlock, Bottleneck\n\n')
    with pytest.raises(ValueError, match='does not import feature_take_indices, which the patched module needs'):
        upstream.upstream_module((PACKAGE / 'hrnet.py').read_text(), theirs)


def test_diff_needs_a_timm_tree(tmp_path):
    with pytest.raises(SystemExit, match=f'is not a timm source tree: no {upstream.MODULE_PATH}'):
        main(['upstream-diff', '--timm-src', str(tmp_path)])


def test_series_cache_keys_follow_their_inputs(tmp_path, monkeypatch):
    """ `tox -e upstream` reuses a step's results while its inputs are those of the passing run that left them: the
    key of a step changes with its patch, any patch before it, the sdist and the env's settings, and with nothing
    else (a later patch, a setting the runs do not read)."""
    spec = importlib.util.spec_from_file_location('upstream_env', ROOT / 'tools' / 'upstream_env.py')
    env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(env)
    src = tmp_path / 'timm-src'
    (src / 'timm').mkdir(parents=True)
    (src / 'timm' / 'hrnet.py').write_text('release')
    patches = [tmp_path / f'{i:04d}.patch' for i in range(1, 4)]
    for i, patch in enumerate(patches):
        patch.write_text(f'patch {i}')
    keys = env.step_keys(src, patches)
    assert len(set(keys)) == 3
    patches[1].write_text('patch 1, changed')
    changed = env.step_keys(src, patches)
    assert changed[0] == keys[0] and changed[1] != keys[1] and changed[2] != keys[2]
    monkeypatch.setenv('PYTHONHASHSEED', '1234')  # tox's, new each run: not read by the runs
    assert env.step_keys(src, patches) == changed
    monkeypatch.setenv('TORCH_HRNET_TEST_SETTING', '1')  # a prefix the runs read (torch's, timm's, pytest's, ...)
    assert set(env.step_keys(src, patches)).isdisjoint(changed)
    monkeypatch.delenv('TORCH_HRNET_TEST_SETTING')
    assert env.step_keys(src, patches) == changed
    (src / 'timm' / 'hrnet.py').write_text('another release')
    assert set(env.step_keys(src, patches)).isdisjoint(changed)

    (tmp_path / 'cache').mkdir()
    (tmp_path / 'cache' / 'step-2.json').write_text(json.dumps({'key': keys[1], 'step': {}, 'before': {}}))
    assert env._cached(tmp_path / 'cache', 2, keys[1])['key'] == keys[1]
    assert env._cached(tmp_path / 'cache', 2, changed[1]) is None
    assert env._cached(tmp_path / 'cache', 1, keys[0]) is None


def test_finding_pip_leaves_distutils_to_setuptools():
    """ fetch_sdist's pip lookup leaves `import distutils` resolving as it did: looking the module up through the
    import system turns setuptools' distutils shim off for the process (Python < 3.12), after which torch 2.2's
    torch.compile failed on importing setuptools. The oracle is a process that does not look pip up."""
    code = 'import warnings; warnings.simplefilter("ignore"); {}import distutils.core; print(distutils.core.__file__)'
    if sys.version_info >= (3, 12):
        pytest.skip('Python 3.12 has no distutils, and setuptools no shim to turn off')
    run = [subprocess.run([sys.executable, '-c', code.format(pre)], capture_output=True, text=True, check=True)
           for pre in ('', 'from timm_hrnet_patch import upstream; upstream._pip(); ')]
    assert run[1].stdout == run[0].stdout, (run[0].stdout, run[1].stdout)


def test_changed_tests_sees_a_generic_tests_new_parametrization():
    """ The harness proves a step's generic-test changes too: a new parametrization or body counts, nothing else."""
    old = ("@pytest.mark.parametrize('m', ['a'])\ndef test_generic(m):\n    pass\n\n\n"
           "def test_same():\n    pass\n\n\ndef helper():\n    pass\n")
    new = old.replace("['a']", "['a', 'hrnet_w18_small']").replace('helper():\n    pass', 'helper():\n    x = 1')
    assert upstream.changed_tests(old, new) == ['test_generic']
    assert upstream.changed_tests(old, new + '\n\ndef test_new():\n    pass\n') == ['test_generic', 'test_new']
    assert upstream.changed_tests(old, old) == []
