""" Start-up cost of the timm-hrnet-patch hook: what the installed .pth adds to `python -c pass`.

    python benchmarks/startup.py [--python PATH] [--runs 40]

Two measures, for the interpreter given (default: this one), where the package is installed:
- `-X importtime`: the hook module's own import time and its cumulative time, median over the runs;
- wall time of `python -c pass`, interleaved with the .pth present and hidden (renamed for the duration of the
  runs and always restored), medians and their difference.
Also checks that start-up imported neither torch nor timm.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time


def _importtime(python: str, runs: int):
    own, cumulative = [], []
    for _ in range(runs):
        err = subprocess.run([python, '-X', 'importtime', '-c', 'pass'], capture_output=True, text=True).stderr
        m = re.search(r'import time:\s+(\d+) \|\s+(\d+) \|\s+_timm_hrnet_patch_hook$', err, re.M)
        if not m:
            raise SystemExit('the hook is not imported at start-up: is the package installed for this interpreter?')
        own.append(int(m.group(1)))
        cumulative.append(int(m.group(2)))
    return statistics.median(own), statistics.median(cumulative)


def _wall(python: str) -> float:
    start = time.perf_counter()
    subprocess.run([python, '-c', 'pass'], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--python', default=sys.executable)
    parser.add_argument('--runs', type=int, default=40)
    args = parser.parse_args()
    pth = subprocess.run([args.python, '-c', 'import _timm_hrnet_patch_hook as h; print(h.pth_file())'],
                         capture_output=True, text=True, check=True).stdout.strip()
    code = "import sys; print([m for m in ('torch', 'timm') if m in sys.modules])"
    loaded = subprocess.run([args.python, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    own, cumulative = _importtime(args.python, args.runs)
    with_hook, without = [], []
    hidden = pth + '.hidden'
    try:
        for _ in range(args.runs):
            with_hook.append(_wall(args.python))
            os.rename(pth, hidden)
            try:
                without.append(_wall(args.python))
            finally:
                os.rename(hidden, pth)
    finally:
        if os.path.exists(hidden):
            os.rename(hidden, pth)
    on, off = statistics.median(with_hook), statistics.median(without)
    print(f'{args.python}: {pth}')
    print(f'modules imported at start-up among torch, timm: {loaded}')
    print(f'-X importtime, hook module (median of {args.runs}): own {own} us, cumulative {cumulative} us')
    print(f'python -c pass wall time (median of {args.runs}, interleaved): with hook {on * 1e3:.2f} ms, '
          f'without {off * 1e3:.2f} ms, difference {(on - off) * 1e3:+.2f} ms')


if __name__ == '__main__':
    main()
