"""Placeholder, filled by a later issue."""

__all__: list[str] = []
