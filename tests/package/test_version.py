"""`fentry --version`: the version, the Python, and the hot path in use, and why."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib.metadata import version

from fentry import hotpath

FENTRY = os.path.join(os.path.dirname(sys.executable), "fentry")
PYTHON = f"CPython {platform.python_version()}"


def fentry_version(env: dict | None = None, exe: list[str] | None = None) -> str:
    proc = subprocess.run([*(exe or [FENTRY]), "--version"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_version_says_the_hot_path_in_use():
    # The suite runs on both paths: the command's says what this process's says.
    assert fentry_version() == (f"fentry {version('fentry')} ({PYTHON}; hot path: "
                                f"{hotpath.IMPLEMENTATION}, {hotpath.WHY})\n")


def test_version_says_pure_python_is_forced():
    env = {**os.environ, "FENTRY_PURE_PYTHON": "1"}
    assert fentry_version(env) == (f"fentry {version('fentry')} ({PYTHON}; hot path: python, "
                                   "FENTRY_PURE_PYTHON is set)\n")


def test_version_says_the_c_extension_is_not_built(tmp_path):
    # The package's sources without the built extension: what an install
    # without a compiler has.
    src = os.path.dirname(hotpath.__file__)
    shutil.copytree(src, tmp_path / "fentry",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "FENTRY_PURE_PYTHON"}
    env["PYTHONPATH"] = str(tmp_path)
    out = fentry_version(env, [sys.executable, "-m", "fentry"])
    assert out.startswith(f"fentry {version('fentry')} ({PYTHON}; hot path: python, "
                          "the C extension was not built (it needs a C compiler and CPython 3.12 or 3.13")
