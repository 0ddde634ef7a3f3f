""" timm-hrnet-patch: a fixed HRNet for timm, registered under timm's own model names.

Importing this package replaces timm's `hrnet_*` entrypoints, so `timm.create_model('hrnet_w18', ...)`,
`timm.list_models('hrnet*')` and `timm.models.hrnet_w18(...)` give the patched models.
"""
from .hrnet import HEADS, HighResolutionNet, HighResolutionNetFeatures, checkpoint_filter_fn

__version__ = '0.1.0'
__all__ = ['HEADS', 'HighResolutionNet', 'HighResolutionNetFeatures', 'checkpoint_filter_fn', '__version__']
