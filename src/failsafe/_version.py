"""The version of failsafe."""

__version__ = "0.1.0"
"""The version of the installed failsafe-kit, such as ``"0.1.0"``."""
