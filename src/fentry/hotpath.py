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
        WHY = f"the C extension is not built for this Python ({exc})"
