""" What the patched forward runs besides its aten ops, against upstream's. The ops are upstream's, on the same
shapes in the same order (tests/test_upstream.py checks it), so Python-level work is all that can differ.

    python benchmarks/overhead.py [--number 2000]

For hrnet_w18 (the other variants run the same code): Python and C function calls per classification forward,
counted with sys.setprofile; and the one step that differs in kind, the upsampling of a lower branch in a fuse
layer: the nn.Upsample(scale_factor) module upstream, F.interpolate(size=...) patched, timed on a small map
(best of 5 timeit runs, in microseconds) and multiplied by the upsamplings per forward.
"""
import argparse
import sys
import timeit

import torch
import torch.nn as nn
import torch.nn.functional as F


def _calls(model: nn.Module, x: torch.Tensor) -> int:
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event in ('call', 'c_call')

    model(x)  # warm: first-call work is not per forward
    sys.setprofile(profile)
    try:
        model(x)
    finally:
        sys.setprofile(None)
    return count


def _best_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--number', type=int, default=2000, help='calls per timeit run')
    args = parser.parse_args()
    import timm
    import timm.models.hrnet as upstream
    import timm_hrnet_patch  # noqa: F401

    theirs = upstream.hrnet_w18().eval()
    ours = timm.create_model('hrnet_w18').eval()
    x = torch.randn(1, 3, 64, 64)
    z, y = torch.randn(1, 18, 7, 7), torch.randn(1, 18, 14, 14)
    module = nn.Upsample(scale_factor=2, mode='nearest')
    upsamplings = sum(isinstance(m, nn.Upsample) for m in theirs.modules())
    with torch.inference_mode():
        calls = {'upstream': _calls(theirs, x), 'patched': _calls(ours, x)}
        step = {
            'upstream': _best_us(lambda: module(z), args.number),
            'patched': _best_us(lambda: F.interpolate(z, size=y.shape[-2:], mode='nearest'), args.number),
        }
    print(f'timm {timm.__version__}, torch {torch.__version__}, hrnet_w18 classification forward')
    print(f"Python + C calls per forward: upstream {calls['upstream']}, patched {calls['patched']} "
          f"({calls['patched'] - calls['upstream']:+d})")
    print(f"fuse upsampling step: upstream {step['upstream']:.2f} us, patched {step['patched']:.2f} us; "
          f"x {upsamplings} per forward: {(step['patched'] - step['upstream']) * upsamplings:+.1f} us per forward")


if __name__ == '__main__':
    main()
