"""The version of failsafe."""

__version__ = "0.1.0"
