""" Patched vs upstream HRNet, side by side: forward latency, and pretrained creation time and peak memory.

    python benchmarks/bench.py [--reps 10] [--loads 3] [--skip-forward] [--skip-load]

Upstream is the installed timm's own `timm/models/hrnet.py`, called through its module (the registry is not
touched). Both get the same weights (a synthetic checkpoint with upstream's layout) and the same inputs.
- forward: hrnet_w18 at batch 1 and 8 and hrnet_w48 at batch 4, 224 px, float32, contiguous and channels_last
  (and on CUDA: float32 and bfloat16 autocast); repetitions interleaved (each runs upstream, patched and a control,
  a copy of the upstream model, back to back, in rotating order), medians and their ratio patched / upstream, and the
  median of the per-repetition ratios with its interquartile range (a paired figure, less sensitive to the machine's
  drift between repetitions). The control's paired ratio copy / upstream (A/A) is what this machine's noise alone
  gives for two identical models. 'same ops': whether patched and upstream dispatch the same aten ops on the same
  shapes in the same order (then only Python overhead can differ).
- create_model(pretrained=True) for hrnet_w18 and hrnet_w64 (also head='' and features_only=True), each in a
  fresh process from an offline Hugging Face cache (page cache warm after the first run): wall time, and the
  call's peak RSS above the process's RSS before it (torch and timm imported), as a multiple of the checkpoint's size.
"""
import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))  # the tests' helpers: synthetic.py, ops.py

# Peak RSS of the create_model call alone: the kernel's peak (VmHWM) is reset right before it (clear_refs 5),
# importing torch peaks higher than many loads, so the process-lifetime peak would hide them.
CHILD = r'''
import gc, re, sys, time, warnings
warnings.simplefilter('ignore')
import torch, timm, timm.models.hrnet as upstream
def rss(field):
    return int(re.search(field + r':\s+(\d+) kB', open('/proc/self/status').read()).group(1)) * 1024
what, variant, kwargs = sys.argv[1], sys.argv[2], eval(sys.argv[3])
gc.collect()
open('/proc/self/clear_refs', 'w').write('5')
before = rss('VmRSS')
start = time.perf_counter()
if what == 'patched':
    model = timm.create_model(variant, pretrained=True, **kwargs)
else:
    model = getattr(upstream, variant)(pretrained=True, **kwargs)
print(time.perf_counter() - start, rss('VmHWM') - before, before)
'''


def _serve(variants, cache: str) -> dict:
    """ The tests' synthetic checkpoints (upstream's layout) as each default tag's model.safetensors; returns sizes."""
    import timm
    from synthetic import checkpoint, serve_from_hub
    sizes = {}
    for variant in variants:
        hf_hub_id = timm.models.get_pretrained_cfg(variant).hf_hub_id
        sizes[variant] = serve_from_hub(hf_hub_id, checkpoint(variant), cache=cache).stat().st_size
    return sizes


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float('nan')


def _paired(times: list, base: list) -> str:
    """ Median and interquartile range of the per-repetition ratios times / base."""
    ratios = [t / b for t, b in zip(times, base)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return f'{statistics.median(ratios):.3f} [{q1:.3f}, {q3:.3f}]'


def bench_load(loads: int) -> None:
    cases = [('hrnet_w18', {}), ('hrnet_w64', {}), ('hrnet_w18', {'head': ''}), ('hrnet_w64', {'head': ''}),
             ('hrnet_w18', {'features_only': True}), ('hrnet_w64', {'features_only': True})]
    with tempfile.TemporaryDirectory(prefix='hrnet-bench-hf-') as cache:
        sizes = _serve(sorted({v for v, _ in cases}), cache)
        env = dict(os.environ, HF_HUB_CACHE=cache, HUGGINGFACE_HUB_CACHE=cache, HF_HUB_OFFLINE='1')

        def child(what, variant, kwargs):
            patch_env = dict(env, TIMM_HRNET_PATCH='1' if what == 'patched' else '0')
            out = subprocess.run([sys.executable, '-c', CHILD, what, variant, repr(kwargs)], env=patch_env,
                                 capture_output=True, text=True)
            if out.returncode:  # e.g. upstream timm 0.9.16 cannot load head='' pretrained: reported as nan
                return float('nan'), float('nan')
            seconds, rss, before = out.stdout.split()
            child.before = int(before)
            return float(seconds), int(rss)

        print(f'\ncreate_model(pretrained=True), fresh process each, median of {loads}')
        print(f"{'case':34} {'upstream s':>10} {'patched s':>10} {'ratio':>6} {'upstream RSS':>13} {'patched RSS':>12}"
              f" {'ratio':>6}  (peak RSS of the call above the RSS before it, x checkpoint size)")
        for variant, kwargs in cases:
            runs = {'upstream': [], 'patched': []}
            for _ in range(loads):  # interleaved
                for what in runs:
                    runs[what].append(child(what, variant, kwargs))
            t = {w: statistics.median(r[0] for r in rs) for w, rs in runs.items()}
            m = {w: statistics.median(r[1] for r in rs) / sizes[variant] for w, rs in runs.items()}
            name = f"{variant} {' '.join(f'{k}={v!r}' for k, v in kwargs.items())}"
            print(f"{name:34} {t['upstream']:10.2f} {t['patched']:10.2f} {_ratio(t['patched'], t['upstream']):6.2f} "
                  f"{m['upstream']:12.2f}x {m['patched']:11.2f}x {_ratio(m['patched'], m['upstream']):6.2f}"
                  f"  (checkpoint {sizes[variant] / 2**20:.0f} MB)")


def bench_forward(reps: int) -> None:
    import torch
    import timm
    import timm.models.hrnet as upstream
    import timm_hrnet_patch  # noqa: F401
    from timm_hrnet_patch import checkpoint_filter_fn
    from ops import dispatched_ops

    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    card = f' ({torch.cuda.get_device_name(0)})' if 'cuda' in devices else ''
    print(f'\nforward latency, median of {reps} interleaved repetitions, 224 px, devices: {", ".join(devices)}{card}')
    print(f"{'case':48} {'upstream ms':>12} {'patched ms':>11} {'ratio':>6} {'paired ratio [IQR]':>22} "
          f"{'A/A paired [IQR]':>22} same ops")
    for variant, batch in (('hrnet_w18', 1), ('hrnet_w18', 8), ('hrnet_w48', 4)):
        theirs = getattr(upstream, variant)(pretrained=False).eval()
        ours = timm.create_model(variant).eval()
        ours.load_state_dict(checkpoint_filter_fn(theirs.state_dict(), ours))
        for device in devices:
            for fmt in (torch.contiguous_format, torch.channels_last):
                for dtype in ((torch.float32,) if device == 'cpu' else (torch.float32, torch.bfloat16)):
                    models = {w: m.to(device, memory_format=fmt)
                              for w, m in (('upstream', theirs), ('patched', ours), ('control', copy.deepcopy(theirs)))}
                    x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=fmt)
                    times = {w: [] for w in models}
                    order = list(models)
                    with torch.inference_mode(), torch.autocast(device, dtype, enabled=dtype != torch.float32):
                        same_ops = dispatched_ops(models['patched'], x) == dispatched_ops(models['upstream'], x)
                        for w, m in models.items():  # warm-up
                            m(x)
                        for r in range(reps):
                            for w in order[r % len(order):] + order[:r % len(order)]:
                                if device == 'cuda':
                                    torch.cuda.synchronize()
                                start = time.perf_counter()
                                models[w](x)
                                if device == 'cuda':
                                    torch.cuda.synchronize()
                                times[w].append(time.perf_counter() - start)
                    t = {w: statistics.median(ts) * 1e3 for w, ts in times.items()}
                    paired = {w: _paired(times[w], times['upstream']) for w in ('patched', 'control')}
                    name = f"{variant} b{batch} {device} {str(dtype)[6:]} " \
                           f"{'channels_last' if fmt == torch.channels_last else 'contiguous'}"
                    print(f"{name:48} {t['upstream']:12.1f} {t['patched']:11.1f} {t['patched'] / t['upstream']:6.3f} "
                          f"{paired['patched']:>22} {paired['control']:>22} {'yes' if same_ops else 'NO'}", flush=True)
        theirs.cpu(), ours.cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--reps', type=int, default=10)
    parser.add_argument('--loads', type=int, default=3)
    parser.add_argument('--skip-forward', action='store_true')
    parser.add_argument('--skip-load', action='store_true')
    args = parser.parse_args()
    import timm
    import torch
    print(f'timm {timm.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs')
    if not args.skip_load:
        bench_load(args.loads)
    if not args.skip_forward:
        bench_forward(args.reps)


if __name__ == '__main__':
    main()
