""" `timm-hrnet-patch` (or `python -m timm_hrnet_patch`): check the patched HRNet here, convert checkpoints.

    timm-hrnet-patch [check] [--variants hrnet_w18,...] [--heads classification,incre,,high_res,concat] \
                     [--size 224] [--amp bfloat16|float16] [--channels-last] [--json FILE]
    timm-hrnet-patch convert SRC DST --variant NAME [--head H]
    timm-hrnet-patch upstream-diff [--timm-src DIR | --timm-version 1.0.31] [-o FILE]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import safetensors.torch
import torch
import timm
import timm.models.hrnet as upstream
from tqdm import tqdm

import _timm_hrnet_patch_hook as hook
from . import (
    CHECKPOINT_LAYOUTS, FEATURE_LOCATIONS, HEAD_SPECS, HEADS, __version__, checkpoint_filter_fn, is_active,
    map_checkpoint, upstream as pr)


# ---- check ----

def _cached_weights(variant: str) -> Optional[str]:
    """ The user's HF cache copy of the variant's default pretrained weights, if there is one."""
    try:
        from huggingface_hub import try_to_load_from_cache
        path = try_to_load_from_cache(timm.models.get_pretrained_cfg(variant).hf_hub_id, 'model.safetensors')
    except Exception:
        return None
    return path if isinstance(path, str) else None


def _synthetic_weights(variant: str, directory: str) -> str:
    """ Upstream timm's classification model of the variant (its module: the registry holds ours), saved."""
    path = os.path.join(directory, f'{variant}.safetensors')
    if not os.path.exists(path):
        state_dict = getattr(upstream, variant)(pretrained=False).state_dict()
        safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    return path


def _cases(variants: List[str], heads: List[str], pretrained: List[bool], devices: List[str]) -> Iterator[Dict]:
    for variant in variants:
        kinds = [dict(head=h) for h in heads] + [
            dict(features_only=True, feature_location=h) for h in heads if h in FEATURE_LOCATIONS]
        for kwargs in kinds:
            for p in pretrained:
                for device in devices:
                    yield dict(variant=variant, pretrained=p, device=device, kwargs=kwargs)


def _expected_shapes(model: torch.nn.Module, kwargs: Dict, size: int) -> List[Tuple[int, ...]]:
    """ The head contract: logits for 'classification'; for the others the feature_info maps past the stem, one per
    entry at its stride ('incre', '', features_only), the first ('high_res'), or all concatenated at stride 4."""
    if 'head' in kwargs and HEAD_SPECS[kwargs['head']].output == 'final':
        return [(1, model.num_classes)]
    info = model.feature_info
    info = [dict(num_chs=c, reduction=r) for c, r in zip(info.channels(), info.reduction())] \
        if hasattr(info, 'channels') else info[1:]
    shapes = [(1, f['num_chs'], math.ceil(size / f['reduction']), math.ceil(size / f['reduction'])) for f in info]
    output = HEAD_SPECS[kwargs['head']].output if 'head' in kwargs else 'maps'
    if output == 'first':
        return shapes[:1]
    if output == 'concat':
        return [(1, sum(s[1] for s in shapes), *shapes[0][2:])]
    return shapes


def _run_case(case: Dict, weights: Optional[Tuple[str, str]], size: int, amp: Optional[str] = None,
              channels_last: bool = False) -> Dict:
    """ One table row: build (loading `weights`, a (source, file) pair, when pretrained), forward (under autocast to
    `amp`, a torch dtype name; channels_last model and input), compare shapes, dtypes and memory formats."""
    row = dict(case, weights=weights[0] if weights else '-', status='ok', shapes='', params=0, seconds=0.0, error='')
    start = time.perf_counter()
    try:
        overlay = dict(pretrained_cfg_overlay=dict(file=weights[1])) if weights else {}
        model = timm.create_model(case['variant'], pretrained=case['pretrained'], **case['kwargs'], **overlay)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = model.eval().to(case['device'], memory_format=memory_format)
        x = torch.randn(1, 3, size, size, device=case['device']).to(memory_format=memory_format)
        dtype = getattr(torch, amp) if amp else torch.float32
        with torch.inference_mode(), torch.autocast(case['device'], dtype=dtype, enabled=amp is not None):
            out = model(x)
        out = out if isinstance(out, (list, tuple)) else [out]
        shapes = [tuple(o.shape) for o in out]
        row.update(shapes=' '.join('x'.join(map(str, s[1:])) for s in shapes),
                   params=sum(p.numel() for p in model.parameters()),
                   dtypes=sorted({str(o.dtype) for o in out}),
                   channels_last=all(o.is_contiguous(memory_format=torch.channels_last) for o in out if o.dim() == 4))
        expected = _expected_shapes(model, case['kwargs'], size)
        if shapes != expected:
            row.update(status='FAIL', error=f'output shapes {shapes}, expected {expected}')
        elif row['dtypes'] != [str(dtype)] or not all(torch.isfinite(o).all() for o in out):
            row.update(status='FAIL', error=f'outputs in {row["dtypes"]} (expected {dtype}), or not finite')
        elif channels_last and not row['channels_last']:
            row.update(status='FAIL', error='channels_last input and model, outputs not channels_last')
    except Exception as e:  # a failing case is a table row, not the end of the check
        row.update(status='FAIL', error=f'{type(e).__name__}: {e}')
    row['seconds'] = round(time.perf_counter() - start, 2)
    return row


def _header(devices: List[str]) -> str:
    cuda = f', {torch.cuda.get_device_name(0)}' if 'cuda' in devices else ''
    return (f'timm-hrnet-patch {__version__}, timm {timm.__version__}, torch {torch.__version__}, '
            f'devices: {", ".join(devices)}{cuda}\n'
            f'start-up hook: {hook.pth_file() or "not installed"}, '
            f'{"enabled" if hook.enabled() else f"disabled by {hook.ENV_VAR}=0"}, '
            f'patched timm at import: {"yes" if hook.patched_timm() else "no"}; patch active: {is_active()}')


def _table(rows: List[Dict]) -> str:
    cols = [('variant', 18), ('model', 24), ('pretrained', 10), ('weights', 9), ('device', 6), ('status', 6),
            ('params', 8), ('time s', 6), ('output shapes (C x H x W)', 0)]
    lines = ['  '.join(f'{c:<{w}}' for c, w in cols).rstrip()]
    for r in rows:
        kw = r['kwargs']
        model = f"features_only {kw['feature_location']!r}" if kw.get('features_only') else f"head={kw['head']!r}"
        cells = [r['variant'], model, str(r['pretrained']), r['weights'], r['device'], r['status'],
                 f"{r['params'] / 1e6:.1f}M", f"{r['seconds']:.2f}", r['shapes'] or r['error']]
        lines.append('  '.join(f'{c:<{w}}' for c, (_, w) in zip(cells, cols)).rstrip())
    return '\n'.join(lines)


def check(args: argparse.Namespace) -> int:
    """ Build, load and run every requested case; print a table; 0 if all pass, 1 otherwise."""
    variants = timm.list_models(args.variants.split(',')) if args.variants else timm.list_models('hrnet*')
    unknown = [v for v in variants if v not in timm.list_models('hrnet*')]
    if not variants or unknown:
        raise SystemExit(f'error: --variants matched no HRNet model ({unknown or args.variants})')
    heads = args.heads.split(',') if args.heads is not None else list(HEADS)
    bad = [h for h in heads if h not in HEADS]
    if bad:
        raise SystemExit(f'error: unknown head(s) {bad}, valid: {list(HEADS)}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda, but torch.cuda.is_available() is False')
    devices = ['cpu', 'cuda'] if args.device == 'auto' and torch.cuda.is_available() else \
        ['cpu'] if args.device == 'auto' else [args.device]
    print(_header(devices), flush=True)
    print(f'forward: {f"autocast to {args.amp}" if args.amp else "float32"}, '
          f'{"channels_last" if args.channels_last else "contiguous"}', flush=True)

    rows = []
    cases = list(_cases(variants, heads, [False, True], devices))
    with tempfile.TemporaryDirectory(prefix='timm-hrnet-patch-') as tmp:
        for case in tqdm(cases, desc='check', unit='model', file=sys.stderr, dynamic_ncols=True):
            weights = None
            if case['pretrained']:
                cached = _cached_weights(case['variant'])
                weights = ('hf-cache', cached) if cached else ('synthetic', _synthetic_weights(case['variant'], tmp))
            rows.append(_run_case(case, weights, args.size, args.amp, args.channels_last))
    print(_table(rows))
    failed = [r for r in rows if r['status'] != 'ok']
    total = sum(r['seconds'] for r in rows)
    print(f'\n{len(rows) - len(failed)}/{len(rows)} ok, {len(failed)} failed, {total:.1f} s in builds and forwards')
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            timm=timm.__version__, torch=torch.__version__, patch=__version__, active=is_active(), rows=rows),
            indent=1, default=str))
    return 1 if failed else 0


# ---- convert ----

def _load_any(src: str) -> Dict:
    """ A state dict (or a container of one) from .safetensors or a torch pickle; SystemExit if it is neither."""
    try:
        if src.endswith('.safetensors'):
            return safetensors.torch.load_file(src)
        return torch.load(src, map_location='cpu', weights_only=True)
    except Exception as e:
        raise SystemExit(f'error: {src} is not a checkpoint that can be read safely ({type(e).__name__}: {e})')


def convert(args: argparse.Namespace) -> int:
    """ SRC (any CHECKPOINT_LAYOUTS layout) -> timm-ready DST .safetensors for --variant/--head, verified to load
    strictly; nothing written on error."""
    if args.variant not in timm.list_models('hrnet*'):
        raise SystemExit(f'error: --variant {args.variant!r} is not an HRNet model: {timm.list_models("hrnet*")}')
    raw = _load_any(args.src)
    if not isinstance(raw, dict):
        raise SystemExit(f'error: {args.src} holds a {type(raw).__name__}, not a state dict')
    try:
        layout, mapped, notes = map_checkpoint(raw, args.layout)
        with torch.device('meta'):
            model = timm.create_model(args.variant, head=args.head, upsample_mode=layout.upsample_modes[0])
        state_dict = checkpoint_filter_fn(raw, model, layout=layout.name)
        tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        if len(tensors) != len(state_dict):
            raise RuntimeError(f'non-tensor entries: {sorted(set(state_dict) - set(tensors))[:10]}')
        added = sorted(k for k in model.state_dict() if k.endswith('.num_batches_tracked') and k not in tensors)
        tensors.update({k: torch.tensor(0) for k in added})  # BatchNorm counters old releases lack
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as e:
        raise SystemExit(f'error: {args.src} does not fit {args.variant} (head={args.head!r}): {e}')

    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, args.dst)
    print(f'read {args.src}: layout {layout.name} ({layout.what}), {"forced" if args.layout else "detected"}')
    print(f'wrote {args.dst}: {len(tensors)} tensors for {args.variant} (head={args.head!r}), loads strictly')
    if layout.upsample_modes != ('nearest',):
        print(f'its models upsample in the fuse layers as upsample_mode={" or ".join(map(repr, layout.upsample_modes))}'
              f' (docs/checkpoints.md): pass that to timm.create_model to compute what the source model computed')
    if added:
        notes['added: BatchNorm num_batches_tracked counters (0) the source lacks'] = added
    unbuilt = _unbuilt_keys(mapped, tensors, model.unbuilt_prefixes())
    if unbuilt:
        notes['dropped: keys of modules this head does not build'] = unbuilt
    notes = {reason: [k for k in keys if not reason.startswith('added: ') or k in tensors]
             for reason, keys in notes.items()}  # the zero biases a variant without head biases does not take
    for reason, keys in ((r, k) for r, k in notes.items() if k):
        print(f'{reason} ({len(keys)}): {", ".join(keys[:8])}{", ..." if len(keys) > 8 else ""}')
    return 0


def _unbuilt_keys(mapped: Dict, kept: Dict, unbuilt: Tuple[str, ...]) -> List[str]:
    """ The modules (with their key counts) of the mapped checkpoint that the model does not build."""
    counts: Dict[str, int] = {}
    for key in mapped:
        prefix = next((p for p in unbuilt if key.startswith(p)), None)
        if key not in kept and prefix:
            counts[prefix.rstrip('.')] = counts.get(prefix.rstrip('.'), 0) + 1
    return [f'{m} ({n})' for m, n in sorted(counts.items())]


# ---- upstream-diff ----

def upstream_diff(args: argparse.Namespace) -> int:
    """ The upstream series against a timm source tree: one diff of it all (to -o FILE or stdout), or with --series
    DIR its patches, one per PR, for `git am DIR/*.patch`."""
    src = Path(args.timm_src) if args.timm_src else pr.fetch_sdist(args.timm_version)
    try:
        if args.series:
            for patch in pr.write_series(src, Path(args.series)):
                stats = pr.patch_stats(patch)
                lines = ', '.join(f'{p} +{a} -{r}' for p, (a, r) in stats['files'].items())
                print(f"{patch}: {stats['title']} ({lines})", file=sys.stderr)
            print(f'against {src}; apply in order, in a git repo of it: git am {args.series}/*.patch', file=sys.stderr)
            return 0
        diffs = pr.file_diffs(src)
    except (ValueError, subprocess.CalledProcessError) as e:
        raise SystemExit(f'error: {e}' + (f' {e.stderr.strip()}' if getattr(e, 'stderr', None) else ''))
    if args.output:
        Path(args.output).write_text(''.join(diffs.values()))
    else:
        sys.stdout.write(''.join(diffs.values()))
    for path, diff in diffs.items():
        hunks = diff[diff.index('\n@@'):].splitlines()
        added, removed = (sum(1 for line in hunks if line.startswith(c)) for c in '+-')
        print(f'{path}: +{added} -{removed}', file=sys.stderr)
    print(f'against {src}; apply in its root: git apply {args.output or "FILE"}', file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='timm-hrnet-patch', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command')
    p = sub.add_parser('check', help='build, load and run every variant x head x pretrained x features_only x device')
    p.add_argument('--variants', help='comma-separated names or wildcards (default: all hrnet*)')
    p.add_argument('--heads', help="comma-separated heads, '' for headless (default: all of them)")
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'], help='auto: cpu, and cuda if present')
    p.add_argument('--size', type=int, default=224, help='input height and width (default 224)')
    p.add_argument('--amp', choices=['bfloat16', 'float16'], help='forward under torch.autocast to this dtype')
    p.add_argument('--channels-last', action='store_true', help='channels_last model and input')
    p.add_argument('--json', help='also write the results to this JSON file')
    p = sub.add_parser('convert', help='turn a checkpoint into a timm-ready .safetensors file, verified')
    p.add_argument('src', help='.pth/.pt/.bin (MSRA release, timm, or training checkpoint) or .safetensors')
    p.add_argument('dst', help='output .safetensors path')
    p.add_argument('--variant', required=True, help='HRNet model name, e.g. hrnet_w18')
    p.add_argument('--head', default='classification', choices=list(HEADS), help='head the file is for')
    p.add_argument('--layout', choices=list(CHECKPOINT_LAYOUTS),
                   help='the layout of SRC (default: detected); docs/checkpoints.md lists them')
    p = sub.add_parser('upstream-diff', help="the fix as pull requests to timm: one diff, or the series of patches")
    p.add_argument('--timm-src', help='timm source tree to diff against (default: the sdist of --timm-version)')
    p.add_argument('--timm-version', default=pr.SDIST_VERSION, help=f'sdist to download (default {pr.SDIST_VERSION})')
    p.add_argument('-o', '--output', help='write the diff here (default: stdout)')
    p.add_argument('--series', metavar='DIR', help='write the series instead, DIR/0001-<slug>.patch ... (git am)')
    argv = sys.argv[1:] if argv is None else argv
    commands = {'check': check, 'convert': convert, 'upstream-diff': upstream_diff}
    args = parser.parse_args(argv if argv and argv[0] in (*commands, '-h', '--help') else ['check', *argv])
    return commands[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
