"""Picks the hot path: the C trampolines when built, else the pure-Python ones.

Both behave the same (the test suite runs against each); set
``FENTRY_PURE_PYTHON=1`` to use the pure-Python one.
"""

import os

if os.environ.get("FENTRY_PURE_PYTHON"):
    from .pytrampolines import *  # noqa: F401,F403
    IMPLEMENTATION = "python"
else:
    try:
        from ._ctrampolines import *  # noqa: F401,F403
        IMPLEMENTATION = "c"
    except ImportError:
        from .pytrampolines import *  # noqa: F401,F403
        IMPLEMENTATION = "python"
