""" Concurrency and re-entry: create_model from several threads at once, importing the patch again, and the start-up
hook with timm absent, broken or already imported."""
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import timm


from common import assert_loaded, expected_state, listed, output_shapes, served_checkpoint  # noqa: E402

HOOK_DIR = Path(__file__).resolve().parents[1]  # where _timm_hrnet_patch_hook.py lies in the checkout
VARIANT = 'hrnet_w18_small'
CASES = [('classification', True), ('incre', False), ('', True), ('incre', True)]


def _python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          **kwargs)


def test_create_model_from_four_threads():
    served_checkpoint(VARIANT)

    def build(case):
        head, pretrained = case
        model = timm.create_model(VARIANT, pretrained=pretrained, head=head).eval()
        with torch.no_grad():
            return model, listed(model(torch.randn(1, 3, 64, 64)))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(build, CASES * 2))
    for (head, pretrained), (model, out) in zip(CASES * 2, results):
        assert [tuple(t.shape) for t in out] == output_shapes(VARIANT, head, 1, 64, 64)
        if pretrained:
            assert_loaded(model, expected_state(VARIANT, head))
        assert not any(t.is_meta for t in model.state_dict().values())
    assert torch.load.__module__ == 'torch.serialization'  # the weights_only guard let go of torch.load


def test_importing_again_changes_nothing():
    out = _python('''
        import importlib, warnings
        warnings.filterwarnings('error', category=UserWarning)  # e.g. "Overwriting ... in registry"
        import timm, timm_hrnet_patch
        before = (timm.list_models('hrnet*'), timm.list_pretrained('hrnet*'))
        import timm_hrnet_patch
        importlib.reload(timm_hrnet_patch.hrnet)
        importlib.reload(timm_hrnet_patch)
        assert (timm.list_models('hrnet*'), timm.list_pretrained('hrnet*')) == before
        assert timm_hrnet_patch.is_active()
        print(type(timm.create_model('hrnet_w18_small', head='incre')).__module__, len(before[0]))
    ''', '-W', 'ignore::FutureWarning')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['timm_hrnet_patch.model', '11']


def test_hook_with_timm_absent():
    """ No site-packages (-S): the hook is installed, `import timm` fails as it would without it."""
    out = _python(f'''
        import sys; sys.path.insert(0, {str(HOOK_DIR)!r})
        import _timm_hrnet_patch_hook as hook
        hook.install()
        try:
            import timm
        except ModuleNotFoundError as e:
            print('absent:', e.name, hook.waiting(), hook.patched_timm())
    ''', '-S')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'absent: timm False False'


def test_hook_with_timm_broken(tmp_path):
    """ A timm whose import fails: the hook neither hides nor replaces timm's own error, the interpreter goes on."""
    (tmp_path / 'timm').mkdir()
    (tmp_path / 'timm' / '__init__.py').write_text("raise ImportError('timm is broken here')\n")
    out = _python(f'''
        import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(HOOK_DIR)!r}]
        import _timm_hrnet_patch_hook as hook
        hook.install()
        try:
            import timm
        except ImportError as e:
            print('broken:', e, hook.patched_timm(), 'timm' in sys.modules)
        print('alive')
    ''')
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ['broken: timm is broken here False False', 'alive']


def test_hook_with_timm_already_imported():
    """ timm imported first: install() adds nothing (too late), timm keeps its own HRNet until the patch is imported."""
    out = _python(f'''
        import sys; sys.path.insert(0, {str(HOOK_DIR)!r})
        import timm
        import _timm_hrnet_patch_hook as hook
        hook.install()
        print(hook.waiting(), type(timm.create_model('hrnet_w18_small')).__module__)
        import timm_hrnet_patch
        print(type(timm.create_model('hrnet_w18_small')).__module__)
    ''', '-W', 'ignore', env=dict(os.environ, TIMM_HRNET_PATCH='0'))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ['False timm.models.hrnet', 'timm_hrnet_patch.model']


def test_hook_when_the_patch_fails(tmp_path):
    """ timm imports, the patch does not: a RuntimeWarning says why, and timm keeps its own HRNet."""
    (tmp_path / 'timm_hrnet_patch').mkdir()
    (tmp_path / 'timm_hrnet_patch' / '__init__.py').write_text("raise ValueError('patch is broken here')\n")
    out = _python(f'''
        import sys, warnings; sys.path[:0] = [{str(tmp_path)!r}, {str(HOOK_DIR)!r}]
        import _timm_hrnet_patch_hook as hook
        hook.install()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import timm
        print([str(w.message).split(';')[0] for w in caught if w.category is RuntimeWarning])
        print(type(timm.create_model('hrnet_w18_small')).__module__)
    ''', '-W', 'ignore', env=dict(os.environ, TIMM_HRNET_PATCH='1'))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 'could not patch timm (ValueError: patch is broken here)' in lines[0], lines
    assert lines[1] == 'timm.models.hrnet'


def test_hook_after_a_find_spec_probe():
    """ `importlib.util.find_spec('timm')` before the import (transformers probes so): the import still patches."""
    out = _python(f'''
        import importlib.util, sys; sys.path.insert(0, {str(HOOK_DIR)!r})
        import _timm_hrnet_patch_hook as hook
        hook.install()
        assert importlib.util.find_spec('timm') is not None and 'timm' not in sys.modules
        print(hook.waiting())
        import timm
        print(hook.waiting(), hook.patched_timm(), type(timm.create_model('hrnet_w18_small')).__module__)
    ''', '-W', 'ignore', env=dict(os.environ, TIMM_HRNET_PATCH='1'))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ['True', 'False True timm_hrnet_patch.model']


def test_hook_with_two_finders():
    """ A second finder (install() after reloading the hook module): they skip each other, timm imports patched."""
    out = _python(f'''
        import importlib, importlib.util, sys; sys.path.insert(0, {str(HOOK_DIR)!r})
        import _timm_hrnet_patch_hook as hook
        hook.install()
        importlib.reload(hook)
        sys.meta_path.insert(0, hook._TimmFinder())
        assert importlib.util.find_spec('timm') is not None
        import timm
        print(hook.waiting(), type(timm.create_model('hrnet_w18_small')).__module__)
    ''', '-W', 'ignore', env=dict(os.environ, TIMM_HRNET_PATCH='1'))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ['False timm_hrnet_patch.model']
