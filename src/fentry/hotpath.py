"""Picks the hot path: the C trampolines when built, else the pure-Python ones.

Both behave the same (the test suite runs against each); set
``FENTRY_PURE_PYTHON=1`` to use the pure-Python one.

``IMPLEMENTATION`` is ``"c"`` or ``"python"``; ``WHY`` says in a few words
why that one is in use (``fentry --version`` prints both).
"""

import os

WHY: str
if os.environ.get("FENTRY_PURE_PYTHON"):
    from .pytrampolines import *  # noqa: F403
    IMPLEMENTATION = "python"
    WHY = "FENTRY_PURE_PYTHON is set"
else:
    try:
        from ._ctrampolines import *  # noqa: F403
        IMPLEMENTATION = "c"
        WHY = "the C extension is built"
    except ImportError as exc:
        from .pytrampolines import *  # noqa: F403
        IMPLEMENTATION = "python"
        if isinstance(exc, ModuleNotFoundError):
            # setup.py builds it only with a C compiler, for CPython 3.12 or 3.13.
            WHY = ("the C extension was not built (it needs a C compiler and CPython "
                   "3.12 or 3.13; `pip install -v` shows why)")
        else:
            WHY = f"the C extension does not load ({exc})"
