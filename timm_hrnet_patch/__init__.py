""" timm-hrnet-patch: a fixed HRNet for timm, registered under timm's own model names.

Importing this package replaces timm's `hrnet_*` entrypoints, so `timm.create_model('hrnet_w18', ...)`,
`timm.list_models('hrnet*')` and `timm.models.hrnet_w18(...)` give the patched models. Installed, its start-up
hook (`_timm_hrnet_patch_hook`) imports it with timm, so scripts need no change; TIMM_HRNET_PATCH=0 turns that off.
"""
import timm.models

from . import layouts, model
from ._policy import ENTRYPOINTS, register
from .features import HighResolutionNetFeatures
from .layouts import UnknownLayoutError, checkpoint_filter_fn
from .model import HighResolutionNet
from .state_dict import full_state_dict

# public names for the package modules' private tables
CHECKPOINT_LAYOUTS = layouts._CHECKPOINT_LAYOUTS  # checkpoint layout name: CheckpointLayout (docs/checkpoints.md)
FEATURE_LOCATIONS = model._FEATURE_LOCATIONS  # valid features_only feature_location values
HEAD_SPECS = model._HEAD_SPECS  # head: what it builds and returns (docs/heads.md)
HEADS = model._HEADS  # valid head values
map_checkpoint = layouts._map_checkpoint  # a checkpoint of any layout in timm's keys

register()  # the model module's entrypoints again, with the package's policy around them

__version__ = '0.1.0'
__all__ = [
    'CHECKPOINT_LAYOUTS', 'FEATURE_LOCATIONS', 'HEAD_SPECS', 'HEADS', 'HighResolutionNet', 'HighResolutionNetFeatures',
    'UnknownLayoutError', 'checkpoint_filter_fn', 'full_state_dict', 'is_active', 'map_checkpoint', '__version__']


def is_active() -> bool:
    """ True when timm's registry gives this package's entrypoint for every hrnet_* model name."""
    names = timm.models.list_models('hrnet*')
    return bool(names) and all(timm.models.model_entrypoint(n) is ENTRYPOINTS.get(n) for n in names)
