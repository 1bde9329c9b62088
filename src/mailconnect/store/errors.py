"""Errors of the storage layer (defined in :mod:`mailconnect.errors`, with the whole tree)."""

from mailconnect.errors import NotFound

__all__ = ["NotFound"]
