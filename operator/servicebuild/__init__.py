"""servicebuild-operator: in-cluster image builds with rootless BuildKit."""

from importlib.metadata import version

__version__ = version("servicebuild-operator")
"""The installed distribution's version: pyproject.toml is the one place it is written."""
