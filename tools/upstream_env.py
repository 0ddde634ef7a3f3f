""" Set up `tox -e upstream`: timm patched with the PR diff, installed, and synthetic weights to load offline.

    python tools/upstream_env.py WORKDIR

1. Serves a synthetic checkpoint for every pretrained hrnet tag into $HF_HUB_CACHE, made from the installed,
   unpatched timm's own classification models (the released key layout), for timm's pretrained tests.
2. Unpacks a fresh copy of the timm sdist (downloaded once, see timm_hrnet_patch.upstream.fetch_sdist) into
   WORKDIR/timm-<version>.
3. Writes WORKDIR/hrnet.diff with `timm-hrnet-patch upstream-diff`, then `git apply --check` and `git apply` in the
   tree: any hunk that does not apply cleanly fails the env.
4. pip installs the patched tree (no deps) over the env's timm and checks a new process imports the patched module.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))


def _run(cmd, **kwargs) -> None:
    print('+', ' '.join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def main(workdir: Path) -> None:
    import timm
    from synthetic import checkpoint, serve_from_hub
    from timm_hrnet_patch.upstream import SDIST_VERSION, fetch_sdist, git_apply, upstream_files

    if timm.__version__ != SDIST_VERSION:
        raise SystemExit(f'error: the env has timm {timm.__version__}, the PR is made against {SDIST_VERSION}')
    tags = timm.list_pretrained('hrnet*')
    for tag in tags:
        serve_from_hub(timm.models.get_pretrained_cfg(tag).hf_hub_id, checkpoint(tag.split('.')[0]))
    print(f'served {len(tags)} synthetic checkpoints in {os.environ["HF_HUB_CACHE"]}: {", ".join(tags)}')

    src = workdir / f'timm-{SDIST_VERSION}'
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(fetch_sdist(SDIST_VERSION), src)
    diff = workdir / 'hrnet.diff'
    # cwd: the installed package's command, not the source checkout's
    _run([sys.executable, '-m', 'timm_hrnet_patch', 'upstream-diff', '--timm-src', src, '-o', diff], cwd=workdir)
    print(f'+ git apply {diff} (in {src})', flush=True)
    git_apply(diff, src)
    for path, text in upstream_files(src).items():
        if (src / path).read_text() != text:
            raise SystemExit(f'error: git apply left {src / path} unlike the patched file')
    _run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--force-reinstall', src])
    installed = subprocess.run([sys.executable, '-c', 'import timm.models.hrnet as m; print(m.__file__)'],
                               cwd=workdir, capture_output=True, text=True, check=True).stdout.strip()
    if Path(installed).read_text() != (src / 'timm' / 'models' / 'hrnet.py').read_text():
        raise SystemExit(f'error: the installed {installed} is not the patched one in {src}')
    print(f'installed the patched timm: {installed}')


if __name__ == '__main__':
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]).resolve())
