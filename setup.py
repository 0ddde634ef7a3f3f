""" Metadata lives in pyproject.toml. This file only ships the start-up hook's .pth at the site-packages root, for
wheels (through build_py's output) and for editable installs (through the editable wheel's root)."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = 'timm_hrnet_patch.pth'

# setuptools has no public hook for a file at the editable wheel's root; _install_namespaces is where it writes its
# own root .pth files. pyproject.toml pins the setuptools range that has it; outside that range, fail the build here
# rather than install a package whose start-up hook is silently missing.
if not callable(getattr(editable_wheel, '_install_namespaces', None)):
    raise RuntimeError(
        f'this setuptools has no editable_wheel._install_namespaces, which setup.py uses to install {PTH}; '
        'build with the setuptools range that pyproject.toml [build-system] requires')


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file(PTH, str(Path(self.build_lib) / PTH))


class EditableWheelWithPth(editable_wheel):
    def _install_namespaces(self, installation_dir, pth_prefix) -> None:
        super()._install_namespaces(installation_dir, pth_prefix)
        self.copy_file(PTH, str(Path(installation_dir) / PTH))


setup(cmdclass={'build_py': BuildPyWithPth, 'editable_wheel': EditableWheelWithPth})
