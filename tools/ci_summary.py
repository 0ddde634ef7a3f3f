""" One line per tox env, the last lines of .ci/run: the env's outcome from tox's result JSON and its pytest counts
from the junit files that its commands wrote (tox.ini: --junitxml={env_log_dir}/junit-*.xml).

    python tools/ci_summary.py TOX_RESULT_JSON

Prints e.g. `timm1031: 254 passed, 0 failed, 6 skipped (ok, 412 s)`, and `(200 cached)` after the passed count where
some are a run before's results (junit-*-cached.xml, tools/upstream_env.py). Exits 1 if an env failed or ran no test.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

TOX_DIR = Path(__file__).resolve().parents[1] / '.tox'


def junit_counts(files: List[Path]) -> Dict[str, int]:
    """ passed / failed / skipped, summed over the pytest junit files (failures and errors count as failed)."""
    counts = dict(passed=0, failed=0, skipped=0)
    for f in files:
        for suite in ET.parse(f).getroot().iter('testsuite'):
            tests, failed, skipped = (int(suite.get(k, 0)) for k in ('tests', 'failures', 'skipped'))
            failed += int(suite.get('errors', 0))
            counts['passed'] += tests - failed - skipped
            counts['failed'] += failed
            counts['skipped'] += skipped
    return counts


def summary(result: dict) -> List[str]:
    lines = []
    for env, data in result.get('testenvs', {}).items():
        res = data.get('result')
        if env.startswith('.') or res is None:  # packaging and provisioning envs, envs this run did not select
            continue
        ok = bool(res.get('success')) and res.get('exit_code', 1) == 0
        files = sorted((TOX_DIR / env / 'log').glob('junit-*.xml'))
        counts = junit_counts(files)
        cached = junit_counts([f for f in files if f.stem.endswith('-cached')])['passed']
        status = 'ok' if ok and counts['passed'] > cached else 'FAILED' if not ok else 'FAILED: ran no test'
        lines.append(f"{env}: {counts['passed']} passed{f' ({cached} cached)' if cached else ''}, {counts['failed']} "
                     f"failed, {counts['skipped']} skipped ({status}, {res.get('duration', 0):.0f} s)")
    return lines


def main(path: str) -> int:
    lines = summary(json.loads(Path(path).read_text()))
    print('\n'.join(lines) if lines else 'tox ran no env (no testenvs in its result JSON)')
    return 0 if lines and all('(ok,' in line for line in lines) else 1


if __name__ == '__main__':
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1]))
