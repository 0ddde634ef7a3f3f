""" The package's features_only model: the package's HighResolutionNet (`model.py`) as timm's
HighResolutionNetFeatures is, building only what its `out_indices` maps use. It also follows FeatureDictNet's
`return_layers` protocol, which transformers' TimmBackbone uses for `output_hidden_states`: it sets return_layers to
every feature module, calls forward and indexes the result by feature position. timm's other feature classes have
the same gap, so this stays in the package (docs/UPSTREAM_PR.md). Every features_only model built by timm's
entrypoints is of this class.
"""
from typing import Dict, List, Optional

import torch

from timm.models._features import FeatureInfo
from .model import _FEATURE_LOCATIONS, _HEAD_SPECS, HighResolutionNet

__all__ = ['HighResolutionNetFeatures']


class HighResolutionNetFeatures(HighResolutionNet):
    """HighResolutionNet feature extraction

    The `feature_location=incre` allows grabbing increased channel count features using part of the
    classification head. If `feature_location=''` the default HRNet features are returned. First stem
    conv is used for stride 2 features. Only what the `out_indices` maps need is built.

    It also has FeatureDictNet's return_layers: {module name: output name} of the maps forward returns, None
    (default) for the out_indices maps.
    """

    return_layers: Optional[Dict[str, str]] = None

    def __init__(
            self,
            cfg,
            in_chans=3,
            num_classes=1000,
            output_stride=32,
            global_pool='avg',
            drop_rate=0.0,
            feature_location='incre',
            out_indices=(0, 1, 2, 3, 4),
            **kwargs,
    ):
        if feature_location not in _FEATURE_LOCATIONS:
            raise ValueError(
                f"Unknown HRNet feature_location {feature_location!r}, valid values are {_FEATURE_LOCATIONS}.")
        num_taps = 1 + len(_HEAD_SPECS[feature_location].branches)
        if isinstance(out_indices, int) and not isinstance(out_indices, bool):
            out_indices = tuple(range(num_taps))[-out_indices:] if 0 < out_indices <= num_taps else (out_indices,)
        if (not isinstance(out_indices, (tuple, list)) or not out_indices
                or any(isinstance(i, bool) or not isinstance(i, int) or not -num_taps <= i < num_taps
                       for i in out_indices)
                or len({i % num_taps for i in out_indices}) != len(out_indices)):
            raise ValueError(
                f'HRNet out_indices must be distinct ints in [{-num_taps}, {num_taps - 1}] (0: stem, 1-4: strides '
                f'4-32) or a count of last maps, got {out_indices!r}.')
        out_indices = tuple(sorted(i % num_taps for i in out_indices))
        super().__init__(
            cfg,
            in_chans=in_chans,
            num_classes=num_classes,
            output_stride=output_stride,
            global_pool=global_pool,
            drop_rate=drop_rate,
            head=feature_location,
            branch_outputs=[i - 1 for i in out_indices if i > 0],
            **kwargs,
        )
        self.feature_info = FeatureInfo(self.feature_info, out_indices)
        self._out_indices = list(out_indices)

    def forward_features(self, x):
        assert False, 'Not supported'

    def forward(self, x: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """ The out_indices maps. With return_layers set: one entry per named module, in feature order, the map, or
        None for a map this model was not built for (features_only out_indices; the stem map is always computed),
        so a caller indexing by feature position finds the out_indices maps at theirs.

        Raises:
            ValueError: a name in return_layers is not a feature module.
        """
        if self.return_layers is None:
            return self.forward_intermediates(x, self._out_indices, intermediates_only=True)
        modules = [info['module'] for info in self.feature_info.info]
        unknown = sorted(set(self.return_layers) - set(modules))
        if unknown:
            raise ValueError(f'HRNet return_layers {unknown} are not feature modules, those are {modules}.')
        indices = sorted(modules.index(m) for m in self.return_layers)
        computed = [i for i in indices if i == 0 or i - 1 in self.branch_outputs]
        maps = dict(zip(computed, self.forward_intermediates(x, computed, intermediates_only=True))) if computed else {}
        return [maps.get(i) for i in indices]
