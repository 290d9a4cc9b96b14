"""Embedded local mode: the whole mesh as processes on this machine, no Docker."""
