"""Builds fentry's optional C hot path; without a compiler fentry runs on pure Python."""

import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

C_DIR = "src/fentry/ctrampolines"


class BuildOptional(build_ext):
    """Builds the C hot path; when it cannot be built, says so and why."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except (BaseError, CCompilerError) as exc:
            # Re-raised: setuptools skips an optional extension that failed.
            print(f"WARNING: fentry's C hot path ({ext.name}) was not built: {str(exc).rstrip('.')}.\n"
                  "It needs a C compiler and CPython 3.12 or 3.13 (the compiler's output above "
                  "says what failed).\nfentry will use its pure-Python hot path "
                  "(fentry.hotpath.WHY says so).", file=sys.stderr)
            raise


setup(
    cmdclass={"build_ext": BuildOptional},
    ext_modules=[Extension(
        "fentry._ctrampolines",
        sorted(glob(f"{C_DIR}/*.c")),
        depends=sorted(glob(f"{C_DIR}/*.h")),
        # Only PyInit__ctrampolines is exported (PyMODINIT_FUNC), so the
        # linker binds the files' calls to each other directly.
        extra_compile_args=["-fvisibility=hidden"],
        optional=True,
    )],
)
