""" Mutation check: break each documented behaviour on purpose, one text change at a time, and see the suite fail.

    python tools/mutation_check.py [--only NAME ...] [--docs]

Each mutant is an exact text replacement in one file of the package (tests/test_mutants.py checks, in every run of
the suite, that each anchor is found exactly once, so the list cannot go stale), with the test files that guard its
behaviour. Each run is `python -m pytest -x -m "not slow" FILES` on the source tree, with the file restored afterwards,
also on error or Ctrl-C. It prints one row per mutant (killed by which test, or SURVIVED) and the score; with
--docs it writes that table into docs/testing.md between its markers. Exits 1 if a mutant survives. Each mutant runs
its guards until the first failure; the whole run is too slow for CI (docs/testing.md gives its time).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs' / 'testing.md'
MARKERS = ('<!-- mutation score -->', '<!-- end mutation score -->')


class Mutant(NamedTuple):
    behaviour: str  # the documented behaviour it breaks
    path: str  # file, relative to the repo root
    old: str  # text found exactly once in it
    new: str
    tests: str  # the test files that guard it, space-separated


_M, _P, _C = 'timm_hrnet_patch/hrnet.py', 'timm_hrnet_patch/_policy.py', 'timm_hrnet_patch/cli.py'
_F, _PM, _L = 'timm_hrnet_patch/features.py', 'timm_hrnet_patch/model.py', 'timm_hrnet_patch/layouts.py'
MUTANTS: List[Mutant] = [
    # heads (docs/heads.md)
    Mutant("head 'classification': logits from the 2048-channel map", _PM,
           '            return self.final_layer(y)\n', '            return y\n', 'tests/test_heads.py'),
    Mutant("head 'incre': maps through the incre modules", _PM,
           'return [self.incre_modules[b](y) for b, y in zip(self.branch_outputs, yl)]', 'return yl',
           'tests/test_heads.py'),
    Mutant("head '': the 4 branch maps", _PM,
           "    '': _HeadSpec(incre=False, classifier=False, branches=(0, 1, 2, 3), output='maps'),",
           "    '': _HeadSpec(incre=False, classifier=False, branches=(0, 1, 2), output='maps'),",
           'tests/test_heads.py'),
    Mutant("head 'high_res': the stride 4 map", _PM,
           "    'high_res': _HeadSpec(incre=False, classifier=False, branches=(0,), output='first'),",
           "    'high_res': _HeadSpec(incre=False, classifier=False, branches=(1,), output='first'),",
           'tests/test_upstream.py tests/test_heads.py'),
    Mutant("head 'concat': bilinear upsampling to stride 4", _PM,
           "F.interpolate(y, size=size, mode='bilinear', align_corners=align_corners) for y in yl[1:]]",
           "F.interpolate(y, size=size, mode='nearest') for y in yl[1:]]", 'tests/test_upstream.py'),
    Mutant('unknown head: ValueError listing the heads', _PM,
           '        if not isinstance(head, str) or head not in _HEADS:', '        if head is None:',
           'tests/test_heads.py'),
    # output_stride, any input size, every parameter used, out_indices, return_layers
    Mutant('output_stride: the branches below it dilate', _M,
           'self.dilations = tuple(max(1, 2 ** (i + 2) // output_stride) for i in range(4))',
           'self.dilations = (1,) * 4',
           'tests/test_heads.py'),
    Mutant('any input size: fuse layers interpolate to the size of the map they add to', _PM,
           'z = F.interpolate(z, size=x[i].shape[-2:], **self.upsample)',
           'z = F.interpolate(z, scale_factor=2 ** (j - i), **self.upsample)', 'tests/test_bad_input.py'),
    # drop-in for timm's own HRNet (docs/dropin.md)
    Mutant("drop-in: stock's state dicts load strictly, the unbuilt modules' keys dropped", _M,
           '            del state_dict[k]\n', '            pass\n', 'tests/test_dropin.py'),
    Mutant('drop-in: full_state_dict adds the unbuilt modules', 'timm_hrnet_patch/state_dict.py',
           '            state_dict.setdefault(', '            dict(', 'tests/test_dropin.py'),
    Mutant('drop-in: the fuse layers a module has give its outputs (last-module surgery)', _PM,
           '        for i, fuse_outer in enumerate(self.fuse_layers):\n'
           '            if isinstance(fuse_outer, nn.Identity):\n'
           '                continue  # an output not taken, its fuse layers were replaced\n',
           '        for i in self.outputs:\n            fuse_outer = self.fuse_layers[i]\n', 'tests/test_dropin.py'),
    Mutant("drop-in: stock's num_branches, the final-stage maps the head taps", _PM,
           '        self.num_branches = len(self.feature_info) - 1  # final stage branches, feature taps are the stem '
           '+ branches\n', '', 'tests/test_matrix.py'),
    Mutant('every parameter used: only the taken outputs get fuse layers', _M,
           '                    self.stage4[-1].fuse_layers[i] = nn.Identity()\n', '                    pass\n',
           'tests/test_heads.py'),
    Mutant('negative out_indices select from the end', _F,
           'out_indices = tuple(sorted(i % num_taps for i in out_indices))',
           'out_indices = tuple(sorted(abs(i) % num_taps for i in out_indices))', 'tests/test_heads.py'),
    Mutant("return_layers: the named modules' maps", _F,
           'indices = sorted(modules.index(m) for m in self.return_layers)',
           'indices = sorted(modules.index(m) for m in self.return_layers)[:1]', 'tests/test_heads.py'),
    Mutant("return_layers: None in the slot of a map the model was not built for", _F,
           'return [maps.get(i) for i in indices]', 'return [maps[i] for i in computed]', 'tests/test_heads.py'),
    # training (docs/training.md)
    Mutant('gradient checkpointing: the recompute leaves BatchNorm statistics alone', _PM,
           'context_fn=lambda: (nullcontext(), _running_stats_kept(module)))',
           'context_fn=lambda: (nullcontext(), nullcontext()))', 'tests/test_training.py'),
    Mutant("gradient checkpointing: the recompute restores BatchNorm's counters", _PM,
           '                m.num_batches_tracked.copy_(count)\n', '                pass\n', 'tests/test_training.py'),
    Mutant('gradient checkpointing: set_grad_checkpointing(False) turns it off', _PM,
           '        equal those without checkpointing."""\n        self.grad_checkpointing = enable\n',
           '        equal those without checkpointing."""\n        self.grad_checkpointing = True\n',
           'tests/test_training.py'),
    # loading (docs/heads.md, docs/checkpoints.md)
    Mutant('strict: a mismatch raises naming the keys', _L,
           "            raise RuntimeError(msg + ' Pass pretrained_strict=False to load it anyway.')",
           '            pass', 'tests/test_pretrained.py'),
    Mutant('the filter drops the fuse layers of outputs not built', _PM,
           "        prefixes += [f'stage4.{last_module}.fuse_layers.{b}.' for b in not_taken]\n",
           "        prefixes += []\n",
           'tests/test_pretrained.py tests/test_matrix.py'),
    Mutant("layout hrnet-seg: upsamples as 'bilinear_aligned'", _L,
           "upsample_modes=('bilinear_aligned', 'bilinear')),", "upsample_modes=('nearest', 'bilinear')),",
           'tests/test_layouts.py'),
    Mutant('layout pose_hrnet: its keypoint head is dropped', _L,
           "('conv1.weight', 'final_layer.weight'), drops=(('final_layer.', 'keypoint head'),)),",
           "('conv1.weight', 'final_layer.weight'), drops=()),", 'tests/test_layouts.py'),
    Mutant('layout mmpretrain: downsample BatchNorms', _L,
           "('neck.0.downsample_layers.*.bn.', 'downsamp_modules.*.1.'),",
           "('neck.0.downsample_layers.*.bn.', 'downsamp_modules.*.0.'),", 'tests/test_layouts.py'),
    Mutant("layout mmseg: upsamples as 'bilinear'", _L,
           "        upsample_modes=('bilinear',)),", "        upsample_modes=('nearest',)),", 'tests/test_layouts.py'),
    Mutant('layout mmpose: its keypoint head is dropped', _L,
           "renames=(('backbone.', ''),), drops=(('head.', 'keypoint head'), *_OPENMMLAB_DROPS)),",
           "renames=(('backbone.', ''),), drops=_OPENMMLAB_DROPS),", 'tests/test_layouts.py'),
    Mutant('layout mmpose-0.x: detected from its keypoint head', _L,
           "('backbone.conv1.weight', 'keypoint_head.final_layer.'),",
           "('backbone.conv1.weight', 'keypoint_head.final.'),", 'tests/test_layouts.py'),
    Mutant("upsample_mode 'bilinear': align_corners=False", _PM,
           "    'bilinear': dict(mode='bilinear', align_corners=False),",
           "    'bilinear': dict(mode='bilinear', align_corners=True),", 'tests/test_layouts.py'),
    # training options (docs/training.md)
    Mutant('norm_layer: every norm of the trunk and head', _M, '        self.bn2 = self.norm_layer(64, **dd)',
           '        self.bn2 = nn.BatchNorm2d(64, **dd)', 'tests/test_options.py'),
    Mutant('norm_layer: FrozenBatchNorm2d, which takes no device argument', _PM,
           '            norm_layer=norm_layer_taking_device(norm_layer),', '            norm_layer=norm_layer,',
           'tests/test_options.py'),
    Mutant('act_layer: every activation', _M, '        self.fuse_act = act_layer(inplace=False)',
           '        self.fuse_act = nn.ReLU(inplace=False)', 'tests/test_options.py'),
    Mutant('drop_path_rate: linear in depth, each stage at its own depths', _M,
           'self._make_stage(self.stage2_cfg, num_channels, dpr[1], **dd)',
           'self._make_stage(self.stage2_cfg, num_channels, dpr[2], **dd)', 'tests/test_options.py'),
    Mutant('drop_path_rate: the modules of a stage in order, branches sharing a position', _M,
           'drop_path_rates=drop_path_rates[i * module_depth:(i + 1) * module_depth],',
           'drop_path_rates=drop_path_rates[:module_depth],', 'tests/test_options.py'),
    Mutant('pretrained: loads into FrozenBatchNorm2d, which has no counters', _L,
           "if k in model_keys or not k.endswith('.num_batches_tracked')}", 'if True}', 'tests/test_options.py'),
    Mutant('pretrained: a norm without BatchNorm statistics is refused by name', _P,
           "    if strict and getattr(base.bn1, 'running_var', None) is None:", '    if False:',
           'tests/test_options.py'),
    # inference (docs/deploy.md)
    Mutant('reparameterize_model folds every BatchNorm', _PM, '        _make_norms_foldable(self)\n', '',
           'tests/test_fuse.py'),
    Mutant("folding: the convolution's own bias is scaled too", _PM,
           'shift = shift + conv.bias.double() * scale', 'shift = shift + conv.bias.double()', 'tests/test_fuse.py'),
    Mutant('folding: the norms reach their modules without a reference cycle', _PM,
           '_ModuleRef(norm), _ModuleRef(conv))', '(lambda n: lambda: n)(norm), _ModuleRef(conv))',
           'tests/test_fuse.py'),
    Mutant("folding: a deep copy's norms fold into the copy's convolutions", _PM,
           '        return _ModuleRef(copy.deepcopy(self(), memo))', '        return _ModuleRef(self())',
           'tests/test_fuse.py'),
    Mutant('folding: a model in training mode is refused', _PM,
           '    if norm.training or norm.running_var is None:', '    if norm.running_var is None:',
           'tests/test_fuse.py'),
    # the package's policy (docs/bad-input.md rows, safe loading)
    Mutant('bad input: a weights file that does not exist', _P,
           '    if not os.path.exists(path):', '    if False:', 'tests/test_bad_input.py'),
    Mutant('bad input: an empty weights file', _P, '    if size == 0:', '    if False:', 'tests/test_bad_input.py'),
    Mutant('bad input: a truncated .safetensors file', _P,
           "    if path.endswith('.safetensors'):", "    if path.endswith('.safetensor'):", 'tests/test_bad_input.py'),
    Mutant('bad input: a file that is not a checkpoint', _P,
           '    if not (zipfile.is_zipfile(path) or head[:1] == pickle.PROTO):', '    if False:',
           'tests/test_bad_input.py'),
    Mutant('bad input: integer tensor for a float weight', _P,
           'or v.is_floating_point() != model_sd[k].is_floating_point())]', 'or False)]',
           'tests/test_bad_input.py tests/test_fuzz.py'),
    Mutant('bad input: NaN or Inf in a tensor', _P,
           '    non_finite = [k for k, v in floats.items() if not torch.isfinite(v).all()]', '    non_finite = []',
           'tests/test_bad_input.py'),
    Mutant('bad input: float32 into bfloat16 warns', _P, '    if lossy:\n', '    if False:\n',
           'tests/test_bad_input.py'),
    Mutant('bad input: in_chans=0', _P, 'or in_chans < 1:', 'or in_chans < 0:', 'tests/test_bad_input.py'),
    Mutant('bad input: wrong channel count', _P, '    if x.ndim != 4 or x.shape[1] != in_chans:',
           '    if x.ndim != 4:', 'tests/test_bad_input.py'),
    Mutant('bad input: training on one value per channel', _P,
           '// s) * ((x.shape[3] + s - 1) // s) == 1:', '// s) * ((x.shape[3] + s - 1) // s) == 0:',
           'tests/test_bad_input.py'),
    Mutant('bad input: a directory for a weights file', _P,
           '    if os.path.isdir(path):', '    if False:', 'tests/test_bad_input.py'),
    Mutant('bad input: float16 / bfloat16 weights load silently', _P,
           'and torch.finfo(v.dtype).bits <= torch.finfo(model_sd[k].dtype).bits)})', 'and False)})',
           'tests/test_bad_input.py'),
    Mutant('bad input: negative num_classes', _P, 'or num_classes < 0:', 'or num_classes < -1:',
           'tests/test_bad_input.py'),
    Mutant('bad input: input without a batch dim', _P, '    if x.ndim != 4 or x.shape[1] != in_chans:',
           '    if x.shape[-3] != in_chans:', 'tests/test_bad_input.py'),
    Mutant('bad input: extra non-head keys raise naming them', _L,
           '    unexpected = sorted(set(state_dict) - model_keys - exempt)', '    unexpected = []',
           'tests/test_pretrained.py'),
    Mutant('bad input: out_indices out of range', _F, 'not -num_taps <= i < num_taps',
           'not -num_taps <= i <= num_taps', 'tests/test_bad_input.py'),
    Mutant('bad input: out_indices repeated', _F,
           'or len({i % num_taps for i in out_indices}) != len(out_indices))', 'or False)', 'tests/test_bad_input.py'),
    Mutant('bad input: output_stride other than 8, 16, 32', _PM,
           '        if output_stride not in _OUTPUT_STRIDES:', '        if False:', 'tests/test_bad_input.py'),
    Mutant('bad input: upsample_mode typo', _PM,
           '        if upsample_mode not in _UPSAMPLE_MODES:', '        if False:', 'tests/test_bad_input.py'),
    Mutant('bad input: a checkpoint in no known layout names its keys and the layouts', _L,
           '            raise UnknownLayoutError(', '            raise RuntimeError(', 'tests/test_layouts.py'),
    Mutant('bad input: a checkpoint for another head names the head that fits', _P,
           '    return hint\n', '    return \'\'\n', 'tests/test_layouts.py'),
    Mutant('strict= is an alias of pretrained_strict=', _P,
           "            strict = kwargs.pop('strict')\n", "            strict = not kwargs.pop('strict')\n",
           'tests/test_pretrained.py'),
    Mutant('safe loading: pickles unpickle with weights_only=True', 'timm_hrnet_patch/_compat.py',
           "    kwargs['weights_only'] = True", "    kwargs['weights_only'] = False", 'tests/test_hostile.py'),
    # start-up hook, CLI, series
    Mutant('start-up hook: TIMM_HRNET_PATCH=0 opts out', '_timm_hrnet_patch_hook.py',
           "not in ('0', 'false', 'no', 'off')", "not in ('false', 'no', 'off')", 'tests/test_reentry.py'),
    Mutant('convert: a file that does not fit writes nothing', _C,
           "        raise SystemExit(f'error: {args.src} does not fit",
           "        print(f'error: {args.src} does not fit",
           'tests/test_cli.py tests/test_layouts.py'),
    Mutant('check: exit status 1 on a failure', _C, '    return 1 if failed else 0', '    return 0',
           'tests/test_cli.py'),
    Mutant("the series ends at the package's module", 'timm_hrnet_patch/upstream.py',
           '    if files[MODULE_PATH] != ours:', '    if False:', 'tests/test_upstream_pr.py'),
]


def run(mutant: Mutant) -> dict:
    """ The mutant's guards run on the mutated source: {'killed_by': first failing test or None, 'seconds'}."""
    path = ROOT / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f'mutant {mutant.behaviour!r}: its anchor is not found exactly once in {mutant.path}')
    start = time.perf_counter()
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        done = subprocess.run(
            [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', '-m', 'not slow', '-rf',
             *mutant.tests.split()], cwd=ROOT, capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))  # the start-up hook's source too, not the installed copy
    finally:
        path.write_text(original)
    failed = re.findall(r'^FAILED (.+?)(?: - .*)?$', done.stdout, re.M)
    killed = failed[0] if failed else ('(collection or import error)' if done.returncode not in (0, 5) else None)
    return dict(killed_by=killed, seconds=time.perf_counter() - start)


def main(argv: List[str]) -> int:
    only = argv[argv.index('--only') + 1:] if '--only' in argv else None
    mutants = [m for m in MUTANTS if only is None or any(o in m.behaviour for o in only)]
    rows = ['| behaviour broken | file | killed by |', '| --- | --- | --- |']
    survivors = []
    for m in mutants:
        result = run(m)
        killed = result['killed_by']
        if killed is None:
            survivors.append(m.behaviour)
        rows.append(f"| {m.behaviour} | `{m.path}` | {f'`{killed}`' if killed else '**SURVIVED**'} |")
        print(rows[-1], f"({result['seconds']:.0f} s)", flush=True)
    score = f'{len(mutants) - len(survivors)}/{len(mutants)} mutants killed' + (
        f"; survived: {', '.join(survivors)}" if survivors else '')
    print(score)
    if '--docs' in argv and only is None:
        text = DOCS.read_text()
        start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
        DOCS.write_text(text[:start] + '\n' + '\n'.join(rows) + f'\n\n{score}.\n' + text[end:])
    return 1 if survivors else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
