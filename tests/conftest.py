"""Fixtures shared by every tier: the real registry lives in tests/support."""

pytest_plugins = ["support.fixtures"]
