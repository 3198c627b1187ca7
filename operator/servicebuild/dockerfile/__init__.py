"""Dockerfile analysis: findings about how a Dockerfile builds its target, from its text, the build
arguments and the build context's file list. Pure: no I/O, no clock."""
