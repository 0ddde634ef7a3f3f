""" The before/after table of docs/UPSTREAM_PR.md: each call run by two interpreters, stock timm and timm with the PR.

    python tools/pr_table.py BEFORE_PYTHON AFTER_PYTHON

e.g. BEFORE_PYTHON = a venv with timm 1.0.31, AFTER_PYTHON = .tox/upstream/bin/python (after `tox -e upstream`).
Each call runs in a fresh process with TIMM_HRNET_PATCH=0 (this package's hook off: timm's own module is measured)
and an offline HF cache holding a synthetic hrnet_w18 checkpoint (upstream's classification layout). Prints
markdown rows: the outcome (output shapes or the exception) and the timm log lines about keys.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / 'tests'

# (label, code): the code sets `out` (a model output or any value to print) after building with timm.create_model
CALLS = [
    ("`create_model('hrnet_w18', pretrained=True, head='')`", "m = create('hrnet_w18', pretrained=True, head='')"),
    ("`create_model('hrnet_w18', pretrained=True, head='', strict=False)`",
     "m = create('hrnet_w18', pretrained=True, head='', strict=False)"),
    ("`create_model('hrnet_w18', head='incre')`, forward 224", "out = create('hrnet_w18', head='incre')(x)"),
    ("`create_model('hrnet_w18', head='')`, forward 224", "out = create('hrnet_w18', head='')(x)"),
    ("`head='incre'`: `model.num_features`", "out = create('hrnet_w18', head='incre').num_features"),
    ("`create_model('hrnet_w18', head='bogus')`", "m = create('hrnet_w18', head='bogus'); out = type(m.classifier).__name__"),
    ("pretrained `head='incre'`, checkpoint lacking `stage4.*`",
     "m = create('hrnet_w18', pretrained=True, head='incre', pretrained_cfg_overlay=broken)"),
    ("pretrained `features_only=True`, checkpoint lacking `stage4.*`",
     "m = create('hrnet_w18', pretrained=True, features_only=True, pretrained_cfg_overlay=broken)"),
    ("`create_model('hrnet_w18')`, forward 65x65", "out = create('hrnet_w18')(torch.randn(1, 3, 65, 65))"),
    ("`stem_width=32` once, then a default build: `conv1.out_channels`",
     "create('hrnet_w18_small', stem_width=32); out = create('hrnet_w18_small').conv1.out_channels"),
]

PRELUDE = """
import json, logging, sys, io
sys.path.insert(0, {tests!r})
import torch, timm
from synthetic import checkpoint, serve_from_hub
log = io.StringIO()
logging.basicConfig(stream=log, level=logging.INFO)
serve_from_hub(timm.models.get_pretrained_cfg('hrnet_w18').hf_hub_id, checkpoint('hrnet_w18'))
serve_from_hub('timm/broken-hrnet_w18', {{k: v for k, v in checkpoint('hrnet_w18').items() if not k.startswith('stage4.')}})
broken = dict(hf_hub_id='timm/broken-hrnet_w18')
x = torch.randn(1, 3, 224, 224)
def create(*args, **kwargs):
    return timm.create_model(*args, **kwargs).eval()
out = None
try:
    with torch.no_grad():
{code}
    outs = out if isinstance(out, (list, tuple)) else [out]
    result = 'ok' if out is None else ', '.join(
        'x'.join(map(str, o.shape[1:])) if isinstance(o, torch.Tensor) else str(o) for o in outs)
except Exception as e:
    result = f'{{type(e).__name__}}: {{str(e).splitlines()[0][:110]}}'
keys = [l for l in log.getvalue().splitlines() if 'keys' in l.lower() and 'timm' in l]
print(json.dumps(dict(result=result, keys=len(keys), version=timm.__version__)))
"""


def run(python: str, code: str, cache: str) -> dict:
    env = dict(os.environ, TIMM_HRNET_PATCH='0', HF_HUB_OFFLINE='1', HF_HUB_CACHE=cache)
    script = PRELUDE.format(tests=str(TESTS), code='        ' + code)
    done = subprocess.run([python, '-c', script], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f'{python} failed:\n{done.stderr}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(r: dict) -> str:
    return r['result'].replace('|', '\\|') + (f" ({r['keys']} key warnings)" if r['keys'] else '')


def main(before: str, after: str) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as b, tempfile.TemporaryDirectory() as a:
        for label, code in CALLS:
            rb, ra = run(before, code, b), run(after, code, a)
            rows.append(f'| {label} | {cell(rb)} | {cell(ra)} |')
    print(f"| call | timm {rb['version']} | timm {ra['version']} + this PR |\n| --- | --- | --- |")
    print('\n'.join(rows))


if __name__ == '__main__':
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
