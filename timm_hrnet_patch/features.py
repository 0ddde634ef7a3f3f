""" The package's features_only model: timm's HighResolutionNetFeatures that also follows FeatureDictNet's
`return_layers` protocol, which transformers' TimmBackbone uses for `output_hidden_states`: it sets return_layers to
every feature module, calls forward and indexes the result by feature position. timm's other feature classes have
the same gap, so this stays in the package (docs/UPSTREAM_PR.md). `_policy.with_policy` gives every features_only
model built by timm's entrypoints this class; it adds no module, parameter or buffer.
"""
from typing import Dict, List, Optional

import torch

from . import hrnet

__all__ = ['HighResolutionNetFeatures']


class HighResolutionNetFeatures(hrnet.HighResolutionNetFeatures):
    """ hrnet.HighResolutionNetFeatures with FeatureDictNet's return_layers: {module name: output name} of the maps
    forward returns, None (default) for the out_indices maps."""

    return_layers: Optional[Dict[str, str]] = None

    def forward(self, x: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """ The out_indices maps. With return_layers set: one entry per named module, in feature order, the map, or
        None for a map this model was not built for (features_only out_indices; the stem map is always computed),
        so a caller indexing by feature position finds the out_indices maps at theirs.

        Raises:
            ValueError: a name in return_layers is not a feature module.
        """
        if self.return_layers is None:
            return super().forward(x)
        modules = [info['module'] for info in self.feature_info.info]
        unknown = sorted(set(self.return_layers) - set(modules))
        if unknown:
            raise ValueError(f'HRNet return_layers {unknown} are not feature modules, those are {modules}.')
        indices = sorted(modules.index(m) for m in self.return_layers)
        computed = [i for i in indices if i == 0 or i - 1 in self.branch_outputs]
        maps = dict(zip(computed, self.forward_intermediates(x, computed, intermediates_only=True))) if computed else {}
        return [maps.get(i) for i in indices]
