# The distribution's one version: hatchling reads it from here at build time (pyproject.toml);
# tests/test_packaging.py holds it equal to CHANGELOG.md's newest release.
__version__ = "0.2.0"
