"""failsafe.http: httpx transports with retry, failover and breakers. Not built yet (issue 3)."""

__all__: list[str] = []
