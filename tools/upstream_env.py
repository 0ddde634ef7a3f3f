""" `tox -e upstream`: the upstream series applied to the timm sdist step by step, each step tested with timm's own
tests, with synthetic weights to load offline.

    python tools/upstream_env.py WORKDIR LOG_DIR CACHE_DIR

1. Serves a synthetic checkpoint for every pretrained hrnet tag into $HF_HUB_CACHE, made from the installed,
   unpatched timm's own classification models (the released key layout), for timm's pretrained tests.
2. Unpacks a fresh copy of the timm sdist (downloaded once, see timm_hrnet_patch.upstream.fetch_sdist) into
   WORKDIR/timm-<version>.
3. Applies the series' patches one at a time (`git apply --check`, then `git apply`: each must apply cleanly), runs
   flake8 at timm's line length (120) on the files each changes, where a finding on a line the patch adds is an
   error (timm's files have findings of their own), and keeps a copy of the tree at each step. Each step gets two
   runs of timm's tests/test_models.py from its tree:
   - on the step: timm's tests of hrnet_w18_small, and every test the series has added so far (for that variant,
     where a test is parametrized over the variants); on the last step, timm's hrnet tests of every variant (the
     series' tests and the pretrained tests included), whose junit file goes to LOG_DIR (junit-timm-models.xml,
     the env's counts);
   - on the step before, with this step's test file: the tests this step adds or changes (a generic test's
     parametrization or body included), in their hrnet_w18_small and test_hrnet_* cases. Each of them must fail
     there in at least one of its cases, so that the step's tests prove its change.
   The runs of all steps go to a queue, run two at a time (a core each), longest first; the last step's, the
   longest, then runs on two xdist workers. Then prints a line per step and writes WORKDIR/series-steps.json.
   A step whose inputs are those of a passing run before (step_keys: its patch and those before it, the sdist,
   this harness, the env's packages and settings) takes that run's results (and the last step's junit file) from
   CACHE_DIR instead of running again, and its line says so (the junit file as LOG_DIR/junit-timm-models-cached.xml,
   which tools/ci_summary.py counts as cached). With every step cached, nothing is served either.
"""
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib.metadata import distributions
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))

STEP_FILTER = 'hrnet_w18_small and not v2'  # timm's own hrnet tests at each step but the last: one variant
# the settings a step's runs read, beside their files and packages (tox's set_env): part of a step's cache key
KEYED_ENV = ('HF_', 'HUGGINGFACE', 'HYPOTHESIS', 'MKL_', 'OMP_', 'PYTEST', 'PYTHONPATH', 'TIMM', 'TORCH')


def _run(cmd, **kwargs) -> None:
    print('+', ' '.join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def lint_step(tree: Path, patch: Path) -> List[str]:
    """ flake8's findings, at timm's line length (120), on the lines that `patch` adds to the .py files it changes, in
    the tree it was applied to: timm's own files have findings elsewhere, which are not the PR's."""
    from timm_hrnet_patch.upstream import added_lines

    added = {path: lines for path, lines in added_lines(patch).items() if path.endswith('.py')}
    if not added:
        return []
    out = subprocess.run([sys.executable, '-m', 'flake8', '--max-line-length', '120', *added], cwd=tree,
                         capture_output=True, text=True)
    if out.returncode not in (0, 1) or (out.returncode == 1 and not out.stdout):  # 1 with no finding: no flake8
        raise SystemExit(f'error: flake8 could not run on {patch.name}: {out.stderr.strip()}')
    findings = [line for line in out.stdout.splitlines() if int(line.split(':')[1]) in added[line.split(':')[0]]]
    return [f'{patch.name}: {line}' for line in findings]


def _pytest(tree: Path, selection: str, junit: Path, basetemp: Path, workers: int = 0) -> subprocess.Popen:
    """ timm's tests/test_models.py -k selection, run from the tree's root so that the tree's timm is imported, on
    `workers` xdist workers (0: in the one process); its log beside the junit file."""
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'--basetemp={basetemp}',
           f'--junitxml={junit}', 'tests/test_models.py', '-k', selection, *(['-n', str(workers)] if workers else [])]
    return subprocess.Popen(cmd, cwd=tree, stdout=junit.with_suffix('.log').open('w'), stderr=subprocess.STDOUT)


def _outcomes(junit: Path) -> Dict[str, List[bool]]:
    """ {test function: [passed, ...] per case} from a junit xml file."""
    outcomes: Dict[str, List[bool]] = {}
    for case in ET.parse(junit).getroot().iter('testcase'):
        if case.find('skipped') is None:
            failed = case.find('failure') is not None or case.find('error') is not None
            outcomes.setdefault(case.get('name').split('[')[0], []).append(not failed)
    return outcomes


def _tree(src: Path, dst: Path) -> Path:
    """ A fresh copy of the tree src at dst."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def _files_digest(*paths: Path) -> bytes:
    """ sha256 of the files' relative names and bytes, and of each folder's files, recursively."""
    digest = hashlib.sha256()
    for path in paths:
        for file in sorted(p for p in ([path] if path.is_file() else path.rglob('*')) if p.is_file()):
            digest.update(f'{file.relative_to(path.parent)}\0'.encode() + file.read_bytes() + b'\0')
    return digest.digest()


def step_keys(src: Path, patches: List[Path]) -> List[str]:
    """ The cache key of each step's two runs: what decides their results. The pristine sdist tree and this
    harness (this file, the series helpers, the synthetic weights), the env's interpreter, packages and settings,
    and the step's patch with every patch before it (the 'before' run's tree and test file come from them too)."""
    import synthetic
    import timm_hrnet_patch.upstream as upstream

    hook = Path(importlib.util.find_spec('_timm_hrnet_patch_hook').origin)  # at every start, off (TIMM_HRNET_PATCH=0)
    harness = _files_digest(src, Path(__file__), Path(upstream.__file__), Path(synthetic.__file__), hook)
    env = [sys.version, *sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions()),
           *sorted(f'{k}={v}' for k, v in os.environ.items() if k.startswith(KEYED_ENV))]
    digest = hashlib.sha256(harness + '\n'.join(env).encode())
    keys = []
    for patch in patches:
        digest.update(patch.read_bytes())
        keys.append(digest.copy().hexdigest())
    return keys


def _cached(cache_dir: Path, step: int, key: str) -> Optional[dict]:
    """ The results a passing run of the step with these inputs left in cache_dir, if any."""
    try:
        record = json.loads((cache_dir / f'step-{step}.json').read_text())
    except (OSError, ValueError):
        return None
    return record if record.get('key') == key else None


def run_steps(src: Path, workdir: Path, log_dir: Path, cache_dir: Path, patches: List[Path], keys: List[str],
              cached: Dict[int, Optional[dict]]) -> List[dict]:
    from timm_hrnet_patch.upstream import added_tests, changed_tests, git_apply, patch_stats

    # runs: (step, 'step' | 'before', tree, -k selection, junit file), queued; last: the last step's 'step' run
    so_far, runs, last = [], [], None
    added = {}  # step: the test functions its patch adds
    changed = {}  # step: the test functions its patch adds or changes
    findings = []  # flake8's, on the lines the patches add
    for i, patch in enumerate(patches, 1):
        if cached.get(i):  # its trees are not needed, only the series' tree and test names
            print(f'+ git apply {patch.name} (in {src})', flush=True)
            git_apply(patch, src)
            findings += lint_step(src, patch)
            so_far += added.setdefault(i, added_tests(patch))
            continue
        prev = _tree(src, workdir / f'step-{i - 1}-with-{i}-tests')
        print(f'+ git apply {patch.name} (in {src})', flush=True)
        git_apply(patch, src)
        findings += lint_step(src, patch)
        new = changed[i] = changed_tests(
            (prev / 'tests' / 'test_models.py').read_text(), (src / 'tests' / 'test_models.py').read_text())
        shutil.copy(src / 'tests' / 'test_models.py', prev / 'tests' / 'test_models.py')
        so_far += added.setdefault(i, added_tests(patch))
        tree = _tree(src, workdir / f'step-{i}')
        if i < len(patches):  # the series' tests of one variant too ('hrnet_w' is in the ids of those over variants)
            runs.append((i, 'step', tree, f"({STEP_FILTER}) or (({' or '.join(so_far)}) and "
                                          f"(not hrnet_w or hrnet_w18_small))", workdir / f'step-{i}.xml'))
        else:  # timm's hrnet tests of every variant ('hrnet' is in every hrnet test's id)
            last = (i, 'step', tree, 'hrnet', log_dir / 'junit-timm-models.xml')
        runs.append((i, 'before', prev, f"({' or '.join(new)}) and (hrnet_w18_small or test_hrnet_)",
                     workdir / f'step-{i}-before.xml'))

    print(f'flake8 --max-line-length 120 on the lines the {len(patches)} patches add: {len(findings)} findings',
          flush=True)
    if findings:
        raise SystemExit(
            'error: flake8 (line length 120, as timm) on the lines the series adds:\n' + '\n'.join(findings))

    def run(job, workers: int = 0):  # (outcomes, return code) of one run
        junit = job[4]
        proc = _pytest(job[2], job[3], junit, workdir / 'pytest' / junit.stem, workers)
        proc.wait()
        return _outcomes(junit), proc.returncode

    # longest first: the steps' own runs grow with the series, the runs on the step before are short. The last
    # step's run, every variant, is most of the time: on two xdist workers after the queue (two runs of half the
    # variants each in the queue took 20% longer, the widest variants side by side)
    queue = sorted(runs, key=lambda job: (job[1] == 'step', job[0]), reverse=True)
    (workdir / 'pytest').mkdir(exist_ok=True)  # the runs' temp dirs, removed by tox's commands_post
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip([job[:2] for job in queue], pool.map(run, queue)))
    if last:
        results[last[:2]] = run(last, workers=2)
    for i, record in cached.items():
        if record:
            results[i, 'step'], results[i, 'before'] = (record['step'], 0), (record['before'], 0)
    if cached[len(patches)]:  # the env's counts of timm's tests, as that run left them, named as cached
        shutil.copy(cache_dir / 'timm-models.xml', log_dir / 'junit-timm-models-cached.xml')
    last_runs = [last] if last else []
    junits = {job[:2]: job[4] for job in runs + last_runs}
    for job in runs + last_runs:
        shutil.rmtree(job[2], ignore_errors=True)

    steps = []
    for i, patch in enumerate(patches, 1):
        (step, returncode), (before, _) = results[i, 'step'], results[i, 'before']
        new = changed[i] if i in changed else cached[i]['changed_tests']
        record = {
            'step': i, 'patch': patch.name, 'title': patch_stats(patch)['title'], 'applied': True,
            'timm_tests': {'passed': sum(map(sum, step.values())),
                           'failed': sum(v.count(False) for v in step.values())},
            'new_tests': {t: {'cases': len(before.get(t, [])), 'fail_before': before.get(t, []).count(False)}
                          for t in new},
        }
        steps.append(record)
        fails = ', '.join(f"{t} {n['fail_before']}/{n['cases']}" for t, n in record['new_tests'].items())
        reused = f" (cached: a run of {cached[i]['date']} with the same inputs)" if cached.get(i) else ''
        print(f"step {i} {patch.name}: applied; step's tests {record['timm_tests']['passed']} passed, "
              f"{record['timm_tests']['failed']} failed; new or changed tests failing on step {i - 1}: {fails}{reused}",
              flush=True)
        if returncode:
            raise SystemExit(f"error: step {i}'s tests failed, see {junits[i, 'step'].with_suffix('.log')}")
        proved = [t for t, n in record['new_tests'].items() if n['fail_before'] == 0]
        if proved:
            raise SystemExit(f'error: step {i} adds or changes tests that pass on step {i - 1} in every case '
                             f"(they prove nothing of its change): {proved}, see {workdir / f'step-{i}-before.log'}")
        if not cached[i]:
            cache_dir.mkdir(parents=True, exist_ok=True)
            if i == len(patches):
                shutil.copy(log_dir / 'junit-timm-models.xml', cache_dir / 'timm-models.xml')
            (cache_dir / f'step-{i}.json').write_text(json.dumps({
                'key': keys[i - 1], 'date': datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                'step': step, 'before': before, 'changed_tests': new}))
    (workdir / 'series-steps.json').write_text(json.dumps(steps, indent=1))
    return steps


def main(workdir: Path, log_dir: Path, cache_dir: Path) -> None:
    import timm
    from synthetic import checkpoint, serve_from_hub
    from timm_hrnet_patch.upstream import MODULE_PATH, SDIST_VERSION, fetch_sdist, series, upstream_files

    if timm.__version__ != SDIST_VERSION:
        raise SystemExit(f'error: the env has timm {timm.__version__}, the series is made against {SDIST_VERSION}')
    if Path(timm.models.hrnet.__file__).read_text() != (fetch_sdist(SDIST_VERSION) / MODULE_PATH).read_text():
        raise SystemExit(f"error: the env's {timm.models.hrnet.__file__} is not the release's (a version of this "
                         'script before 2026-12-02 installed the patched tree over it): recreate the env, '
                         'tox -r -e upstream')
    src = workdir / f'timm-{SDIST_VERSION}'
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(fetch_sdist(SDIST_VERSION), src)
    expected = upstream_files(src)  # also fails if the series' end drifted from the package's module
    patches = series()
    keys = step_keys(src, patches)
    cached = {i: _cached(cache_dir, i, key) for i, key in enumerate(keys, 1)}
    if not all(cached.values()):  # the steps' runs load them
        tags = timm.list_pretrained('hrnet*')
        for tag in tags:
            serve_from_hub(timm.models.get_pretrained_cfg(tag).hf_hub_id, checkpoint(tag.split('.')[0]))
        print(f'served {len(tags)} synthetic checkpoints in {os.environ["HF_HUB_CACHE"]}: {", ".join(tags)}')
    run_steps(src, workdir, log_dir, cache_dir, patches, keys, cached)
    for path, text in expected.items():
        if (src / path).read_text() != text:
            raise SystemExit(f'error: the series left {src / path} unlike the patched file')


if __name__ == '__main__':
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*(Path(arg).resolve() for arg in sys.argv[1:]))
