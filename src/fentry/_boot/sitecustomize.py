"""Starts fentry's agent in a program launched by ``fentry run``, then gets out of the way.

``fentry run`` starts the program as plain ``python SCRIPT`` (so ``sys.argv``,
``__main__``, ``sys.path[0]``, tracebacks and exit status are Python's own) with
this directory first on PYTHONPATH.  Here we start the agent, take this
directory back out of ``sys.path`` and PYTHONPATH, and load the
``sitecustomize`` we shadowed, if there is one (else we leave as if there
were none at all).
"""

import os
import sys

TYPE_CHECKING = False       # (typing's, without importing typing)
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType


def _start() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    package_parent = os.path.dirname(os.path.dirname(here))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if sys.version_info >= (3, 12):
        # (An older Python started by a program run with --follow is left
        # untraced: fentry needs sys.monitoring.)
        added = package_parent not in sys.path
        if added:
            sys.path.append(package_parent)
        imported = False
        try:
            from fentry import hotpath
            imported = True
            # fentry is notrace from its first line to its last: nothing the
            # main thread runs for it (stdlib calls included) is traced.
            hotpath.quiet_thread(True)
            from fentry.control import agent
            agent.start_from_environment()
        finally:
            if added:
                sys.path.remove(package_parent)
            try:
                spec = _shadowed_sitecustomize()
            finally:
                if imported:
                    _trace_from_the_program(hotpath)
    else:
        import json
        old = json.loads(os.environ.pop("FENTRY_AGENT", "{}")).get("pythonpath")
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
        spec = _shadowed_sitecustomize()
    # Load the sitecustomize we shadow, if any.  importlib takes whatever is in
    # sys.modules["sitecustomize"] once this module has run, so it becomes that
    # one.  If there is none, "no module named sitecustomize" is what site
    # expects, and it leaves no trace of this one in sys.modules.
    if spec is None or spec.loader is None:
        raise ImportError("No module named 'sitecustomize'", name="sitecustomize")
    from importlib.util import module_from_spec
    module = module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _trace_from_the_program(hotpath: "ModuleType") -> None:
    """Traced again once the interpreter starts the program: the rest of its
    start-up (site's imports, loading the script) is not the program.  When
    nothing is traced yet there is nothing to keep out."""
    from fentry import ftrace
    from fentry.control import tracefs
    fs = tracefs._instance
    if ftrace.registered_ops():
        hotpath.quiet_until_program()
    elif fs is not None and fs.tracepoints.any_enabled():     # python:raise, ...
        hotpath.quiet_until_program()
        fs.tracepoints.await_program()
    else:
        hotpath.quiet_thread(False)


def _shadowed_sitecustomize() -> "ModuleSpec | None":
    """The spec of the program's own sitecustomize, if it has one."""
    from importlib.machinery import PathFinder
    return PathFinder.find_spec("sitecustomize", sys.path)

_start()
del _start, _shadowed_sitecustomize, _trace_from_the_program
