""" Registration under timm's own names, tags and pretrained cfgs, whatever the import order."""
import subprocess
import sys
import textwrap

import pytest


import timm  # noqa: E402
import timm.models.hrnet as upstream  # noqa: E402
from timm_hrnet_patch import hrnet  # noqa: E402
from timm_hrnet_patch._policy import ENTRYPOINTS  # noqa: E402

UPSTREAM_VARIANTS = sorted(n for n in dir(upstream) if n.startswith('hrnet_') and callable(getattr(upstream, n)))


def test_all_upstream_variants_registered():
    assert len(UPSTREAM_VARIANTS) == 11
    assert timm.list_models('hrnet*') == UPSTREAM_VARIANTS
    for name in UPSTREAM_VARIANTS:
        assert timm.models.model_entrypoint(name) is ENTRYPOINTS[name]
        assert getattr(timm.models, name) is ENTRYPOINTS[name]
        assert ENTRYPOINTS[name].__wrapped__ is getattr(hrnet, name)  # the model module's, the policy around it


def test_pretrained_tags_and_cfgs_match_upstream():
    tags = timm.list_pretrained('hrnet*')
    assert tags == sorted(f'{arch}.{tag}' for arch, d in upstream.default_cfgs.items() for tag in d.tags)
    assert len(tags) == len(set(tags)) == 14
    for name in tags:
        ours = timm.models.get_pretrained_cfg(name).to_dict()
        arch, tag = name.split('.')
        theirs = upstream.default_cfgs[arch].cfgs[tag].to_dict()
        ours.pop('license', None), theirs.pop('license', None)  # timm < 1.0 has no license entries for hrnet
        assert {k: v for k, v in ours.items() if k not in ('architecture', 'tag', 'hf_hub_id')} == \
            {k: v for k, v in theirs.items() if k not in ('architecture', 'tag', 'hf_hub_id')}
        assert ours['hf_hub_id'] == f'timm/{name}'


@pytest.mark.slow
@pytest.mark.parametrize('first', ['timm', 'timm_hrnet_patch'])
def test_import_order_and_no_overwrite_warning(first):
    other = 'timm_hrnet_patch' if first == 'timm' else 'timm'
    code = textwrap.dedent(f'''
        import warnings
        warnings.filterwarnings('error', category=UserWarning)  # e.g. "Overwriting ... in registry"
        import {first}
        import {other}
        import timm, timm_hrnet_patch.hrnet as patched, timm_hrnet_patch.model as package_model
        m = timm.create_model('hrnet_w18_small', head='incre')
        assert type(m) is package_model.HighResolutionNet, type(m)
        assert timm.models.hrnet_w18.__wrapped__ is patched.hrnet_w18
        assert timm.list_models('hrnet*') == sorted(set(timm.list_models('hrnet*')))
        print('ok', len(timm.list_models('hrnet*')), len(timm.list_pretrained('hrnet*')))
    ''')
    out = subprocess.run([sys.executable, '-W', 'ignore::FutureWarning', '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['ok', '11', '14']


def test_registry_module_listing():
    assert set(timm.list_models(module='hrnet')) == set(UPSTREAM_VARIANTS)
    assert timm.models.is_model('hrnet_w18') and timm.models.is_model_pretrained('hrnet_w18')
