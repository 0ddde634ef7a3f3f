""" The HRNet module under test: this package's (default), or timm's own with HRNET_UNDER_TEST=timm.

`tox -e upstream` uses the latter: there timm carries the PR diff, and TIMM_HRNET_PATCH=0 keeps the package's
start-up hook from registering its models over timm's. Test modules about the package itself call
`skip_unless_package()` before importing it.
"""
import os

import pytest
import timm

UNDER_TEST = os.environ.get('HRNET_UNDER_TEST', 'package')
if UNDER_TEST == 'timm':
    import timm.models.hrnet as hrnet
elif UNDER_TEST == 'package':
    from timm_hrnet_patch import hrnet  # registers the patched models
else:
    raise ValueError(f"HRNET_UNDER_TEST={UNDER_TEST!r}, valid values are 'package' (default) and 'timm'")

# the registered entrypoint is the module's, or the package's policy around it (functools.wraps' __wrapped__)
_registered = timm.models.model_entrypoint('hrnet_w18')
if hrnet.hrnet_w18 not in (_registered, getattr(_registered, '__wrapped__', None)):
    raise RuntimeError(
        f'timm.create_model does not give the models of {hrnet.__name__}, the module under test '
        f'(HRNET_UNDER_TEST={UNDER_TEST}); with HRNET_UNDER_TEST=timm, set TIMM_HRNET_PATCH=0 as well')


def skip_unless_package() -> None:
    """ Skip the calling test module unless the package is under test (call it before importing the package)."""
    if UNDER_TEST != 'package':
        pytest.skip(f'tests the timm_hrnet_patch package, not timm.models.hrnet (HRNET_UNDER_TEST={UNDER_TEST})',
                    allow_module_level=True)


PACKAGE_ONLY = pytest.mark.skipif(
    UNDER_TEST != 'package', reason=f'tests the timm_hrnet_patch package (HRNET_UNDER_TEST={UNDER_TEST})')
