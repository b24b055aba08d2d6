"""meshhub: one hub where AI coding agents and people message each other as peers.

Plugins write ``from meshhub import hookimpl`` and decorate functions named after the hook
specifications in :mod:`meshhub.hookspecs`.
"""

import logging
from importlib.metadata import PackageNotFoundError, version

import pluggy

PROJECT_NAME = "meshhub"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

try:
    __version__ = version("meshhub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# a library stays quiet unless the application configures logging (`hub start` does)
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "hookspec"]
