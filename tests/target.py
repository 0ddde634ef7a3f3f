""" The HRNet modules under test: the package's model module (the upstream series' end), its models (`model.py`)
and checkpoint layouts (`layouts.py`). Importing them registers the package's models under timm's names.
"""
import timm

from timm_hrnet_patch import hrnet, layouts, model as package_model

__all__ = ['hrnet', 'layouts', 'package_model']

# the registered entrypoint is the package's policy around the model module's (functools.wraps' __wrapped__)
_registered = timm.models.model_entrypoint('hrnet_w18')
if hrnet.hrnet_w18 is not getattr(_registered, '__wrapped__', None):
    raise RuntimeError('timm.create_model does not give the package\'s models: is TIMM_HRNET_PATCH=0 set?')
