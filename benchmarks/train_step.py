""" One training step with and without gradient checkpointing, side by side: peak memory and step time.

    python benchmarks/train_step.py [--variants hrnet_w18 hrnet_w32] [--sizes 512 1024] [--steps 5]
                                    [--granularity module stage branch] [--malloc default kept] [--rounds 1]

A step is forward, backward and an SGD step (momentum 0.9) of `head='concat'` at batch 2, on a loss over the
concatenated map, in train mode. Time is measured side by side in one process per --malloc setting: one model,
whose checkpointing is switched between steps, runs a first step in each configuration (it allocates the gradients
and the optimizer's buffers, and pages in the memory a step uses), then --steps repetitions, each one timed step per
configuration in rotating order, plus two more: a control, a second step without checkpointing, and the forward
alone (train mode, the autograd graph built, no backward). The table gives each configuration's median step time,
the ratio of medians to 'off', and the median of the per-repetition ratios with its interquartile range (a paired
figure, which the machine's drift between repetitions does not move). The control's paired ratio (A/A) is what this
machine's noise alone gives. The forward's ratio F/S bounds what a checkpoint that recomputes the whole forward can
reach: about 1 + F/S.

Memory is measured in a process of its own per configuration (the median of --rounds): on CPU, glibc is told to map
and unmap every large block (which slows each step, so no time comes from it), and the peak is the process's peak
RSS in a step above its RSS before it (the kernel's VmHWM, reset with clear_refs); on CUDA (--device cuda),
torch.cuda's max_memory_allocated above the allocation before the step.

--granularity: what one checkpoint covers. 'module' (the model's set_grad_checkpointing: each layer1 block and
each HighResolutionModule), 'stage' (layer1 and each stage whole), 'branch' (each branch of each module; the fuse
layers are not checkpointed). 'stage' and 'branch' exist here only, to compare the options.

--malloc: how glibc hands CPU memory to the timed process. 'default': glibc's defaults, where every block over 32 MiB
(at 512x512, each of layer1's 256-channel maps) is mmapped when allocated and unmapped when freed, so its pages are
faulted in and zeroed again at each allocation, and checkpointing's recompute allocates them a second time. 'kept':
glibc keeps freed memory for reuse (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ at 64 GiB), as torch's CUDA caching
allocator does and as tcmalloc or jemalloc, PyTorch's advice for CPU training, do. Step times are compared within
one setting; memory comes from its own process either way.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List

from bench import _paired

CHILD = r"""
import json, re, sys, time
import torch, timm
from timm_hrnet_patch import model as hrnet

variant, size, device, steps, measure = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
configs = sys.argv[6].split(',')
torch.manual_seed(0)
module_stages = hrnet.HighResolutionNet._run_seq  # 'module': the model's own checkpointing
mode = 'off'

def whole_stages(self, stage, x):
    return hrnet._checkpoint(stage, x)

def branches(self, stage, x):
    if isinstance(x, torch.Tensor):
        return stage(x)  # layer1: not a HighResolutionModule
    for module in stage:
        x = module.fuse_only([hrnet._checkpoint(b, t) for b, t in zip(module.branches, x)])
    return x

def fuse_only(self, x):
    branches, self.branches = self.branches, torch.nn.ModuleList([torch.nn.Identity() for _ in self.branches])
    try:
        return self(x)
    finally:
        self.branches = branches

def run_stage(self, stage, x):
    return {'stage': whole_stages, 'branch': branches}.get(mode, module_stages)(self, stage, x)

hrnet.HighResolutionNet._run_seq = run_stage
hrnet.HighResolutionModule.fuse_only = fuse_only

def rss(field):
    return int(re.search(field + r':\s+(\d+) kB', open('/proc/self/status').read()).group(1)) * 1024

def memory_now():
    return torch.cuda.memory_allocated() if device == 'cuda' else rss('VmRSS')

def reset_peak():
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        open('/proc/self/clear_refs', 'w').write('5')

def peak():
    if device == 'cuda':
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return rss('VmHWM')

model = timm.create_model(variant, head='concat').to(device).train()
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
x = torch.randn(2, 3, size, size, device=device)

def step(config):
    global mode
    mode = 'off' if config in ('control', 'forward') else config
    model.set_grad_checkpointing(mode != 'off')
    opt.zero_grad(set_to_none=False)
    loss = model(x).pow(2).mean()
    if config != 'forward':  # 'forward': the step's forward alone, what a full recompute repeats
        loss.backward()
        opt.step()
    if device == 'cuda':
        torch.cuda.synchronize()

for config in configs:
    step(config)
if measure == 'memory':  # one configuration
    before = memory_now()
    reset_peak()
    step(configs[0])
    print(json.dumps(dict(peak=peak() - before)))
else:
    times = {config: [] for config in configs}
    for rep in range(steps):
        for config in configs[rep % len(configs):] + configs[:rep % len(configs)]:
            t0 = time.perf_counter()
            step(config)
            times[config].append(time.perf_counter() - t0)
    print(json.dumps(dict(times=times)))
"""


MALLOC = {'default': {}, 'kept': dict(MALLOC_MMAP_MAX_='0', MALLOC_TRIM_THRESHOLD_=str(64 << 30))}
MEASURE_MALLOC = dict(MALLOC_MMAP_THRESHOLD_=str(1 << 20), MALLOC_TRIM_THRESHOLD_='0')  # every large block's pages


def child(variant: str, size: int, device: str, steps: int, measure: str, configs: List[str], env: Dict) -> dict:
    out = subprocess.run(
        [sys.executable, '-c', CHILD, variant, str(size), device, str(steps), measure, ','.join(configs)],
        env=dict(os.environ, **env), check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variants', nargs='+', default=['hrnet_w18', 'hrnet_w32'])
    parser.add_argument('--sizes', nargs='+', type=int, default=[512, 1024])
    parser.add_argument('--steps', type=int, default=5, help='timed repetitions (one step per configuration each)')
    parser.add_argument('--rounds', type=int, default=1, help='memory measurements per configuration')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--granularity', nargs='+', default=['module'], choices=['module', 'stage', 'branch'])
    parser.add_argument('--malloc', nargs='+', default=list(MALLOC), choices=list(MALLOC))
    args = parser.parse_args()
    if args.device == 'cuda':
        import torch
        print(f'device: {torch.cuda.get_device_name()}')
        args.malloc = args.malloc[:1]  # the CUDA caching allocator, whatever glibc does
    modes = ['off'] + args.granularity
    print('| variant | size | checkpointing | malloc | step time (s) | time ratio | paired time ratio [IQR] | '
          'peak memory (GiB) | memory ratio |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for variant in args.variants:
        for size in args.sizes:
            case = (variant, size, args.device)
            memory_env = MEASURE_MALLOC if args.device == 'cpu' else {}
            peaks = {mode: statistics.median(child(*case, 0, 'memory', [mode], memory_env)['peak']
                                             for _ in range(args.rounds)) for mode in modes}
            for malloc in args.malloc:
                times = child(*case, args.steps, 'time', modes + ['control', 'forward'], MALLOC[malloc])['times']
                base = times['off']
                for config, t in times.items():
                    memory = (f'{peaks[config] / 2 ** 30:.2f} | {peaks[config] / peaks["off"]:.2f}'
                              if config in peaks else '|')
                    name = dict(control='off again (A/A control)', forward='forward alone').get(config, config)
                    print(f'| {variant} | {size} | {name} | {malloc if args.device == "cpu" else "cuda"} | '
                          f'{statistics.median(t):.2f} | {statistics.median(t) / statistics.median(base):.2f} | '
                          f'{_paired(t, base)} | {memory} |', flush=True)


if __name__ == '__main__':
    main()
