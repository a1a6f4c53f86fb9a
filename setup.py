"""Builds fentry's optional C hot path; without a compiler fentry runs on pure Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fentry._ctrampolines", ["src/fentry/_ctrampolines.c"],
                             optional=True)])
