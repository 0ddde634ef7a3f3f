""" Mutation check: break the fix on purpose, one way at a time, and confirm the test suite catches each.

    python tools/mutation_check.py [pytest args]     (default: -n auto -q; e.g. -m "not slow" for a quick pass)

Each mutation is an exact text replacement in timm_hrnet_patch/hrnet.py (the package must be installed
editable, so the suite imports the mutated file). The file is restored after each run, also on error or Ctrl-C.
Prints the failing tests of each mutation; exits 1 if the suite passes with any of them (a surviving mutant).
"""
import re
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / 'timm_hrnet_patch' / 'hrnet.py'
MUTATIONS = {
    'remove the filter fn': (
        '        pretrained_filter_fn=partial(checkpoint_filter_fn, strict=pretrained_strict),\n', ''),
    'incre skips its modules': (
        'return [self.incre_modules[b](y) for b, y in zip(self.branch_outputs, yl)]', 'return yl'),
    'scale-factor upsampling': (
        "z = F.interpolate(z, size=x[i].shape[-2:], mode='nearest')",
        "z = F.interpolate(z, scale_factor=2 ** (j - i), mode='nearest')"),
    'head not validated': (
        '        if not isinstance(head, str) or head not in HEADS:\n            raise ValueError(',
        '        if False:\n            raise ValueError('),
    'fuse layers of every output built': (
        '            if i not in self.outputs:\n', '            if False:\n'),
    'filter drops nothing of partial outputs': (
        "            prefixes += [f'stage4.{len(self.stage4) - 1}.fuse_layers.{b}.' for b in not_taken]\n", ''),
    'NaN not checked': ("    non_finite = [k for k, v in floats.items() if not torch.isfinite(v).all()]",
                        "    non_finite = []"),
}


def main(pytest_args) -> int:
    original = SOURCE.read_text()
    survivors = []
    for name, (old, new) in MUTATIONS.items():
        assert original.count(old) == 1, f'mutation {name!r} no longer matches {SOURCE.name} exactly once'
        try:
            SOURCE.write_text(original.replace(old, new))
            run = subprocess.run(
                [sys.executable, '-m', 'pytest', '-p', 'no:benchmark', '-rf', '--no-header', *pytest_args],
                capture_output=True, text=True)
        finally:
            SOURCE.write_text(original)
        failed = sorted(set(re.findall(r'^FAILED (\S+)', run.stdout, re.M)))
        summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr.strip()[-300:]
        print(f'## {name}: {"caught" if run.returncode else "SURVIVED"} ({summary})')
        for test in failed:
            print(f'   {test}')
        if not run.returncode:
            survivors.append(name)
    return 1 if survivors else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:] or ['-n', 'auto', '-q']))
