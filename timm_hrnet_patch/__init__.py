""" timm-hrnet-patch: a fixed HRNet for timm, registered under timm's own model names.

Importing this package replaces timm's `hrnet_*` entrypoints, so `timm.create_model('hrnet_w18', ...)`,
`timm.list_models('hrnet*')` and `timm.models.hrnet_w18(...)` give the patched models. Installed, its start-up
hook (`_timm_hrnet_patch_hook`) imports it with timm, so scripts need no change; TIMM_HRNET_PATCH=0 turns that off.
"""
import timm.models

from . import hrnet
from .hrnet import (
    CHECKPOINT_LAYOUTS, FEATURE_LOCATIONS, HEAD_SPECS, HEADS, HighResolutionNet, HighResolutionNetFeatures,
    UnknownLayoutError, checkpoint_filter_fn, map_checkpoint)

__version__ = '0.1.0'
__all__ = [
    'CHECKPOINT_LAYOUTS', 'FEATURE_LOCATIONS', 'HEAD_SPECS', 'HEADS', 'HighResolutionNet', 'HighResolutionNetFeatures',
    'UnknownLayoutError', 'checkpoint_filter_fn', 'is_active', 'map_checkpoint', '__version__']


def is_active() -> bool:
    """ True when timm's registry gives this package's entrypoint for every hrnet_* model name."""
    names = timm.models.list_models('hrnet*')
    return bool(names) and all(timm.models.model_entrypoint(n) is getattr(hrnet, n, None) for n in names)
