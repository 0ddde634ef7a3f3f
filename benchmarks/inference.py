""" HRNet inference, side by side in one process: eager, BatchNorm folded (timm.utils.reparameterize_model), folded
with channels_last, torch.compile, and onnxruntime.

    python benchmarks/inference.py [--variants hrnet_w18 hrnet_w32 hrnet_w48] [--sizes 256x192 512x512] [--reps 10]
        [--batch 1] [--modes fused fused_cl compile onnxruntime] [--device cpu] [--profile]

For each variant and input size, every mode's model is built from the same eval model (random weights, BatchNorm
statistics randomised so that the fold is not an identity) and warmed up (torch.compile's compilation and the ONNX
export are not timed). Each repetition then runs every mode once, in a random order (drawn with a fixed seed: no mode
always follows another), under torch.inference_mode. The table gives each mode's median latency, its ratio to eager's
median, the median of the per-repetition ratios with its interquartile range (paired, less sensitive to the
machine's drift), and the largest difference from eager's output relative to that output's largest magnitude.
'eager again' is a second run of the eager model: its paired ratio is what this machine's noise alone gives for two
identical runs.

- fused: reparameterize_model(model), every BatchNorm folded into its convolution;
- fused_cl: the fused model and its input in channels_last;
- compile: torch.compile(model) (inductor, default mode) of the eager model;
- onnxruntime: the fused model exported (torch.onnx.export, TorchScript-based exporter at this input size) and run by
  onnxruntime's CPU provider with as many threads as torch uses, without spin-waiting after a run (CPU only; needs onnx
  and onnxruntime). Its threads would otherwise spin on the cores that the next mode's run uses.

With --profile it prints, instead of the table, the share of BatchNorm and of the convolutions in eager's self time
(torch.profiler over 5 forwards): what folding can save at most.
"""
import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict

import torch
import torch.nn as nn

import timm
from timm.utils import reparameterize_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import _paired  # noqa: E402


def _model(variant: str, device: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(variant)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval().to(device)


def _onnxruntime(model: nn.Module, x: torch.Tensor) -> Callable:
    import onnxruntime
    path = os.path.join(tempfile.mkdtemp(), 'model.onnx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=['x'])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    return lambda t: torch.from_numpy(session.run(None, {'x': t.numpy()})[0])


def _channels_last(model: nn.Module) -> Callable:
    """ A copy of the model in channels_last, converting its input as part of the call."""
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return lambda x: model(x.contiguous(memory_format=torch.channels_last))


def _modes(model: nn.Module, x: torch.Tensor, names) -> Dict[str, Callable]:
    """ Each mode's callable on x, built for the modes in `names` only."""
    fused = reparameterize_model(model)
    builders = {
        'eager': lambda: model,
        'eager again': lambda: model,
        'fused': lambda: fused,
        'fused_cl': lambda: _channels_last(fused),
        'compile': lambda: torch.compile(model),
        'onnxruntime': lambda: _onnxruntime(fused, x),
    }
    return {name: builders[name]() for name in ['eager', 'eager again', *names] if name in builders}


def profile(variant: str, size, batch: int, device: str) -> None:
    """ The shares of BatchNorm and of the convolutions in the eager model's self time, over 5 forwards."""
    model = _model(variant, device)
    x = torch.randn(batch, 3, *size, device=device)
    with torch.inference_mode():
        model(x)
        with torch.profiler.profile() as prof:
            for _ in range(5):
                model(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    share = {what: sum(e.self_cpu_time_total for e in events if e.key in keys) / total for what, keys in (
        ('BatchNorm', ('aten::native_batch_norm', 'aten::_native_batch_norm_legit_no_training')),
        ('convolutions', ('aten::mkldnn_convolution', 'aten::_slow_conv2d_forward', 'aten::thnn_conv2d')))}
    print(f"{variant} {size[0]}x{size[1]} batch {batch}: BatchNorm {share['BatchNorm']:.1%}, convolutions "
          f"{share['convolutions']:.1%} of eager's self CPU time (5 forwards)", flush=True)


def bench(variant: str, size, batch: int, reps: int, names, device: str) -> None:
    model = _model(variant, device)
    x = torch.randn(batch, 3, *size, device=device)
    modes = _modes(model, x, names)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    with torch.inference_mode():
        reference = model(x).float()
        errors = {  # also the warm-up: compile, export, first runs
            name: ((fn(x).float().to(device) - reference).abs().max() / reference.abs().max()).item()
            for name, fn in modes.items()}
        for fn in modes.values():
            fn(x)
        times = {name: [] for name in modes}
        order = random.Random(0)
        for _ in range(reps):
            for name in order.sample(list(modes), len(modes)):
                sync()
                start = time.perf_counter()
                modes[name](x)
                sync()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times['eager'])
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"| {variant} | {size[0]}x{size[1]} | {batch} | {name} | {median * 1e3:.1f} | {median / base:.2f} | "
              f"{_paired(ts, times['eager'])} | {errors[name]:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--variants', nargs='+', default=['hrnet_w18', 'hrnet_w32', 'hrnet_w48'])
    parser.add_argument('--sizes', nargs='+', default=['256x192', '512x512'], help='HxW')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--reps', type=int, default=10)
    parser.add_argument('--modes', nargs='+', default=['fused', 'fused_cl', 'compile', 'onnxruntime'],
                        choices=['fused', 'fused_cl', 'compile', 'onnxruntime'])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--profile', action='store_true', help="BatchNorm's share of eager's time, no table")
    args = parser.parse_args()
    if args.profile:
        for variant in args.variants:
            for size in args.sizes:
                profile(variant, tuple(int(s) for s in size.split('x')), args.batch, args.device)
        return
    if args.device == 'cuda' and 'onnxruntime' in args.modes:
        args.modes.remove('onnxruntime')  # the CPU provider only
    card = torch.cuda.get_device_name() if args.device == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'# timm {timm.__version__}, torch {torch.__version__}, {card}, float32, {args.reps} repetitions')
    print('| variant | size | batch | mode | median (ms) | ratio | paired ratio [IQR] | max rel. difference |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- |')
    for variant in args.variants:
        for size in args.sizes:
            bench(variant, tuple(int(s) for s in size.split('x')), args.batch, args.reps, args.modes, args.device)


if __name__ == '__main__':
    main()
