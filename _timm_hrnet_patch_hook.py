""" Start-up hook of timm-hrnet-patch: the first `import timm` also imports timm_hrnet_patch.

pip installs `timm_hrnet_patch.pth` next to this module (wheel and editable installs alike) and removes both on
`pip uninstall`. The .pth line runs install() at interpreter start-up. That imports neither torch nor timm: it
only puts a finder on sys.meta_path. When timm is first imported, the finder lets timm's own loader run it and
then imports timm_hrnet_patch, which replaces timm's hrnet_* entrypoints. Set TIMM_HRNET_PATCH=0 to switch the
hook off; `import timm_hrnet_patch` still patches explicitly.
"""
import os
import sys

ENV_VAR = 'TIMM_HRNET_PATCH'
PTH = 'timm_hrnet_patch.pth'
_patched = False


def enabled() -> bool:
    """ False when the environment switches the hook off (TIMM_HRNET_PATCH=0, false, no or off)."""
    return os.environ.get(ENV_VAR, '1').strip().lower() not in ('0', 'false', 'no', 'off')


def waiting() -> bool:
    """ Whether the finder is waiting for timm's first import in this interpreter."""
    return any(_is_ours(f) for f in sys.meta_path)


def pth_file() -> str:
    """ Path of the installed .pth that runs the hook at start-up, '' if there is none in a site dir."""
    import site
    dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    return next((os.path.join(d, PTH) for d in dirs if os.path.isfile(os.path.join(d, PTH))), '')


def patched_timm() -> bool:
    """ Whether this hook imported timm_hrnet_patch right after timm, in this interpreter."""
    return _patched


def install() -> None:
    """ Idempotent: adds the finder once, unless disabled or timm is already imported (then it is too late)."""
    if enabled() and 'timm' not in sys.modules and not waiting():
        sys.meta_path.insert(0, _TimmFinder())


class _TimmFinder:
    """ Finds 'timm' with the other finders and wraps its loader; passes on every other name.

    It waits until timm's module is executed, not just found: `importlib.util.find_spec('timm')` probes (as
    transformers makes to see whether timm is installed) consult it too, and the import that follows must still
    patch. It stops waiting when timm is found to be absent or its module runs.
    """

    TIMM_HRNET_PATCH_FINDER = True

    def find_spec(self, name, path=None, target=None):
        if name != 'timm':
            return None
        for finder in [f for f in sys.meta_path if not _is_ours(f) and hasattr(f, 'find_spec')]:
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if hasattr(spec.loader, 'exec_module'):
                    spec.loader = _PatchAfterLoad(spec.loader)
                else:
                    _stop_waiting()
                return spec
        _stop_waiting()
        return None


def _is_ours(finder) -> bool:
    """ A finder of this hook, also from a reloaded copy of this module (another class object)."""
    return getattr(finder, 'TIMM_HRNET_PATCH_FINDER', False) is True


def _stop_waiting() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not _is_ours(f)]


class _PatchAfterLoad:
    """ Runs timm's own loader (and gives the module that loader back), then imports timm_hrnet_patch."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        global _patched
        _stop_waiting()
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        try:
            import timm_hrnet_patch  # noqa: F401  (registers the fixed hrnet_* entrypoints)
            _patched = True
        except Exception as e:  # never break `import timm`: say what happened and how to silence it
            import warnings
            warnings.warn(f'timm-hrnet-patch could not patch timm ({type(e).__name__}: {e}); timm keeps its own '
                          f'HRNet. Set {ENV_VAR}=0 to skip the patch.', RuntimeWarning)
