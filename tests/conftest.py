""" The offline Hugging Face cache, the run's header and the fixtures. What the tests share is in common.py.

The HF cache env vars must be set before huggingface_hub is imported (it reads them once), so this runs at
conftest import, before any test module imports timm. Each process (each xdist worker) gets its own cache dir.
This file imports neither torch nor timm: xdist's controller imports it too, before it starts the workers, and
runs no test (importing both took it about 5 s of each env's run here).
"""
import atexit
import logging
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version

import pytest

_HF_CACHE = tempfile.mkdtemp(prefix='hrnet-patch-hf-')
atexit.register(shutil.rmtree, _HF_CACHE, ignore_errors=True)
os.environ['HF_HUB_CACHE'] = os.environ['HUGGINGFACE_HUB_CACHE'] = _HF_CACHE
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['HF_HUB_DISABLE_TELEMETRY'] = '1'


def pytest_report_header(config) -> str:
    """ The stack under test, in the header of each run's log (each tox env's), from the installed metadata."""
    stack = []
    for dist in ('timm', 'torch', 'huggingface_hub', 'segmentation-models-pytorch', 'transformers'):
        try:
            stack.append(f'{dist} {version(dist)}')
        except PackageNotFoundError:  # the clients: in the interop env
            pass
    return ', '.join(stack)


@pytest.fixture
def no_key_warnings(caplog):
    """ Fails the test if timm logs anything about keys (missing, unexpected, ...) at INFO or above."""
    caplog.set_level(logging.INFO, logger='timm')
    yield
    noisy = [r.getMessage() for r in caplog.records if 'keys' in r.getMessage().lower()]
    assert not noisy
