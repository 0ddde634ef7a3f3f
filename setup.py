""" Metadata lives in setup.cfg. This file only ships the start-up hook's .pth at the site-packages root, for
wheels (through build_py's output) and for editable installs (through the editable wheel's root)."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = 'timm_hrnet_patch.pth'


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file(PTH, str(Path(self.build_lib) / PTH))


class EditableWheelWithPth(editable_wheel):
    # setuptools writes the editable wheel's root files (namespace .pth files) here, the one place for ours too
    def _install_namespaces(self, installation_dir, pth_prefix) -> None:
        super()._install_namespaces(installation_dir, pth_prefix)
        self.copy_file(PTH, str(Path(installation_dir) / PTH))


setup(cmdclass={'build_py': BuildPyWithPth, 'editable_wheel': EditableWheelWithPth})
