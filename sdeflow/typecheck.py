"""Runtime checks of the jaxtyping annotations of a package, on by default."""

import os


VARIABLE = "SDEFLOW_TYPECHECK"
"""Set to 0 in the environment, it turns the checks off."""

_installed: set[str] = set()


def install(package: str) -> None:
    """Check every function and class of `package` imported from now on against its jaxtyping
    annotations with beartype (jaxtyping's import hook), unless `SDEFLOW_TYPECHECK=0`; once per
    package, and not again where a hook for it is already installed (jaxtyping's pytest
    option `--jaxtyping-packages` installs one)."""
    import sys

    from jaxtyping import install_import_hook

    if os.environ.get(VARIABLE, "1").strip() == "0" or package in _installed:
        return
    if any(package in getattr(finder, "modules", ()) for finder in sys.meta_path):
        return
    install_import_hook(package, "beartype.beartype")
    _installed.add(package)
