"""meshhub: one hub where AI coding agents and people message each other as peers.

Plugins write ``from meshhub import hookimpl`` and decorate functions named after the hook
specifications in :mod:`meshhub.hookspecs`.

``hookimpl``, ``hookspec`` and ``__version__`` are made on first use (PEP 562), so a process
that imports one small module of meshhub (``hub hook``, which Claude Code runs around every
tool call) does not pay for pluggy or for reading the installed distributions.
"""

from __future__ import annotations

import logging

PROJECT_NAME = "meshhub"
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

if TYPE_CHECKING:
    import pluggy

    hookimpl: pluggy.HookimplMarker
    hookspec: pluggy.HookspecMarker
    __version__: str

# a library stays quiet unless the application configures logging (`hub start` does)
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    if name in ("hookimpl", "hookspec"):
        import pluggy

        globals()["hookimpl"] = pluggy.HookimplMarker(PROJECT_NAME)
        globals()["hookspec"] = pluggy.HookspecMarker(PROJECT_NAME)
    elif name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            globals()["__version__"] = version("meshhub")
        except PackageNotFoundError:  # a source tree that was never installed
            globals()["__version__"] = "0.0.0"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return globals()[name]


__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "hookspec"]
