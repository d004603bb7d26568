"""failsafe.errors: the Error-handling service and manual review. Not built yet (issue 4)."""

__all__: list[str] = []
