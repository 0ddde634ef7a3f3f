""" CI: .ci/run runs README's two commands; the GitHub Actions workflow, which cannot run here, passes actionlint
(from the test extra), and a broken copy of it does not, so the lint is real; the project's Python passes flake8 at
timm's line length."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / '.github' / 'workflows' / 'tests.yml'
# the model module is timm's file: tox -e upstream lints the lines the series adds to it, as timm's own lines have
# findings of their own
FLAKE8 = [sys.executable, '-m', 'flake8', '--max-line-length', '120', '--exclude', 'timm_hrnet_patch/hrnet.py']
ACTIONLINT = shutil.which('actionlint') or shutil.which('actionlint', path=str(Path(sys.executable).parent))


def _lint(path: Path) -> subprocess.CompletedProcess:
    if ACTIONLINT is None:
        pytest.fail('actionlint is not installed: install the test extra (pip install -e ".[test]")')
    return subprocess.run([ACTIONLINT, '-no-color', str(path)], capture_output=True, text=True)


def test_workflow_passes_actionlint():
    done = _lint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_code_passes_flake8(tmp_path):
    paths = ['timm_hrnet_patch', 'tests', 'tools', 'benchmarks', '_timm_hrnet_patch_hook.py']
    done = subprocess.run(FLAKE8 + paths, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    long_line = tmp_path / 'long.py'
    long_line.write_text('x = 1  # ' + 'x' * 120 + '\n')
    done = subprocess.run(FLAKE8 + [str(long_line)], capture_output=True, text=True)
    assert done.returncode == 1 and 'E501' in done.stdout, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / 'tests.yml'
    broken.write_text(WORKFLOW.read_text().replace('needs.envs.outputs.envs', 'needs.nope.outputs.envs'))
    done = _lint(broken)
    assert done.returncode == 1 and 'nope' in done.stdout, done.stdout + done.stderr


def test_workflow_runs_the_tox_envlist():
    """ The matrix comes from `tox -l` and each job runs its env: no env names copied into the workflow."""
    text = WORKFLOW.read_text()
    assert 'tox -l' in text and 'tox -e "${{ matrix.env }}"' in text
    envlist = (WORKFLOW.parents[2] / 'tox.ini').read_text().split('envlist =')[1].splitlines()[0]
    assert not [env for env in envlist.replace(',', ' ').split() if env in text]


def test_readme_is_short():
    """ README is what a newcomer reads first: at most 120 lines, the rest in docs/."""
    assert len((Path(__file__).parents[1] / 'README.md').read_text().splitlines()) <= 120


def test_ci_runs_readme_commands():
    """ .ci/run runs, verbatim, the two commands that README gives a newcomer."""
    repo = WORKFLOW.parents[2]
    ci, readme = (repo / '.ci' / 'run').read_text(), (repo / 'README.md').read_text()
    commands = [line.split('=', 1)[1].strip("'")
                for line in ci.splitlines() if line.startswith(('MAIN_JOB=', 'TESTS='))]
    assert len(commands) == 2 and all(f'    {c}\n' in readme for c in commands), commands


def test_docs_name_only_files_that_exist():
    """ Every repo file that README, docs/, the workflow and tox.ini name exists (no stale names after a rename)."""
    root = Path(__file__).resolve().parents[1]
    texts = [root / 'README.md', root / 'tox.ini', *root.glob('docs/*.md'), *root.glob('.github/workflows/*.yml')]
    path = r'\b((?:tests|tools|benchmarks|timm_hrnet_patch|docs)/[\w./-]*\w\.(?:py|md|patch|txt))'
    named = {(t.name, m) for t in texts for m in re.findall(path, t.read_text())}
    assert named
    external = {'tests/test_models.py', 'tools/train.py'}  # timm's test file; HRNet-Semantic-Segmentation's script
    missing = sorted((doc, path) for doc, path in named if not (root / path).exists() and path not in external)
    assert not missing, missing
