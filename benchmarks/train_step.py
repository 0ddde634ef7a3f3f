""" One training step with and without gradient checkpointing, side by side: peak memory and step time.

    python benchmarks/train_step.py [--variants hrnet_w18 hrnet_w32] [--sizes 512 1024] [--steps 2]
                                    [--granularity module stage] [--malloc default kept]

A step is forward, backward and an SGD step (momentum 0.9) of `head='concat'` at batch 2, on a loss over the
concatenated map, in train mode. Each configuration runs in a fresh process: a first step (it allocates the
gradients and the optimizer's buffers, and pages in the memory a step uses), then `--steps` timed steps. Memory is measured
in a process of its own: on CPU, glibc is told to map and unmap every large block (which slows each step, so times
come from a process with glibc's defaults), and the peak is the process's peak RSS in a step above its RSS before
it (the kernel's VmHWM, reset with clear_refs); on CUDA (--device cuda), torch.cuda's max_memory_allocated above
the allocation before the step. Configurations alternate
(off, on, off, on, ...) for --rounds rounds; the table gives medians and the ratio with / without checkpointing.

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
from typing import List

CHILD = r'''
import json, re, sys, time
import torch, timm
from timm_hrnet_patch import hrnet

variant, size, device, steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)

def whole_stages(self, stage, x):
    return hrnet._checkpoint(stage, x) if self.grad_checkpointing else stage(x)

def branches(self, stage, x):
    if not self.grad_checkpointing:
        return stage(x)
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

if mode == 'stage':
    hrnet.HighResolutionNet._run_stage = whole_stages
elif mode == 'branch':
    hrnet.HighResolutionNet._run_stage = branches
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
model.set_grad_checkpointing(mode != 'off')
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
x = torch.randn(2, 3, size, size, device=device)

def step(x):
    opt.zero_grad(set_to_none=False)
    model(x).pow(2).mean().backward()
    opt.step()

step(x)
times, peaks = [], []
for _ in range(steps):
    before = memory_now()
    reset_peak()
    t0 = time.perf_counter()
    step(x)
    if device == 'cuda':
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
    peaks.append(peak() - before)
print(json.dumps(dict(times=times, peaks=peaks)))
'''


MALLOC = {'default': {}, 'kept': dict(MALLOC_MMAP_MAX_='0', MALLOC_TRIM_THRESHOLD_=str(64 << 30))}


def run(variant: str, size: int, device: str, steps: int, mode: str, mallocs: List[str]) -> dict:
    """ {'times': {malloc: [s]}, 'peaks': [bytes]}: `steps` steps in one process per malloc setting, and one step in
    another process (memory)."""
    def child(steps, **env):
        out = subprocess.run([sys.executable, '-c', CHILD, variant, str(size), device, str(steps), mode],
                             env=dict(os.environ, **env), check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    if device == 'cuda':
        r = child(steps)
        return dict(times={m: r['times'] for m in mallocs}, peaks=r['peaks'])
    memory = child(1, MALLOC_MMAP_THRESHOLD_=str(1 << 20), MALLOC_TRIM_THRESHOLD_='0')
    return dict(times={m: child(steps, **MALLOC[m])['times'] for m in mallocs}, peaks=memory['peaks'])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variants', nargs='+', default=['hrnet_w18', 'hrnet_w32'])
    parser.add_argument('--sizes', nargs='+', type=int, default=[512, 1024])
    parser.add_argument('--steps', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--granularity', nargs='+', default=['module'], choices=['module', 'stage', 'branch'])
    parser.add_argument('--malloc', nargs='+', default=list(MALLOC), choices=list(MALLOC))
    args = parser.parse_args()
    if args.device == 'cuda':
        import torch
        print(f'device: {torch.cuda.get_device_name()}')
        args.malloc = args.malloc[:1]  # the CUDA caching allocator, whatever glibc does
    print('| variant | size | checkpointing | malloc | step time (s) | peak memory (GiB) | time ratio | memory ratio |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- |')
    for variant in args.variants:
        for size in args.sizes:
            results = {mode: dict(times={m: [] for m in args.malloc}, peaks=[]) for mode in ['off'] + args.granularity}
            for _ in range(args.rounds):
                for mode in results:
                    r = run(variant, size, args.device, args.steps, mode, args.malloc)
                    for m in args.malloc:
                        results[mode]['times'][m] += r['times'][m]
                    results[mode]['peaks'] += r['peaks']
            base_m = statistics.median(results['off']['peaks'])
            for malloc in args.malloc:
                base_t = statistics.median(results['off']['times'][malloc])
                for mode, r in results.items():
                    t, m = statistics.median(r['times'][malloc]), statistics.median(r['peaks'])
                    print(f'| {variant} | {size} | {mode} | {malloc if args.device == "cpu" else "cuda"} | {t:.2f} | '
                          f'{m / 2 ** 30:.2f} | {t / base_t:.2f} | {m / base_m:.2f} |', flush=True)


if __name__ == '__main__':
    main()
