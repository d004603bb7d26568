"""Saving an example's settings in its run folder, and the addresses of its services.

Each example's ``Settings`` is a frozen dataclass of its own knobs that extends
`RunSettings`: the supervisor writes ``settings.json`` once the ports are chosen, and each
service process reads it back, so that all of them agree on the addresses. The policies'
numbers are not settings: they are in the example's ``failsafe.toml`` (see
`examples._support.policies`); the settings only say which file, and what to override.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

__all__ = ["RunSettings"]


@dataclass(frozen=True)
class RunSettings:
    """The fields and methods both examples' ``Settings`` share.

    A subclass adds its own fields, gives ``run_dir``, ``ports`` and ``schema`` defaults of
    its own (its folder, its services at port 0, its schema prefix) and may change others,
    and adds the changes of its own to `FAST`.

    Attributes:
        run_dir: The run folder: SQLite files, logs, spools and ``settings.json``.
        host: The loopback address every service listens on.
        ports: The port of each service; 0 until the supervisor picks them.
        dsn: A PostgreSQL DSN: the example's databases and the error records go there (in
            schemas prefixed ``schema``) instead of SQLite files in the run folder.
        schema: The PostgreSQL schema prefix of this run (with ``dsn``).
        retry_attempts: The Error-handling service's attempts at the example's failed write
            before a person gets it.
        retry_backoff: Its first delay, in seconds (doubling, full jitter).
        retry_backoff_max: Its longest delay, in seconds.
        poll_interval: Seconds between the Error-handling service's retry rounds.
        sink_poll: Seconds between a service's deliveries of spooled error reports.
        traces: Whether each service writes its OpenTelemetry spans to ``traces/`` in the
            run folder (`examples._support.telemetry`); the demos turn it on.
        policies_file: The TOML file of the example's pipelines (`failsafe.config`);
            ``None``: the ``failsafe.toml`` in the example's package.
        overrides: ``FAILSAFE_<PIPELINE>_<KIND>_<OPTION>`` values applied over the file, as
            if set in the environment (they win over the environment's own); `fast` shortens
            the policies' waits this way.
        watch_interval: Seconds between two reads of the file by each service that watches
            it (an edit applies within this time, without a restart).
    """

    FAST: ClassVar[dict[str, Any]] = {
        "retry_backoff": 0.2,
        "poll_interval": 0.1,
        "sink_poll": 0.5,
        "watch_interval": 0.2,
    }
    """The settings `fast` changes: short waits instead of the default ones (a subclass's `FAST`
    adds its own, and its ``overrides`` are added to the caller's)."""

    run_dir: str = "."
    host: str = "127.0.0.1"
    ports: dict[str, int] = dataclasses.field(default_factory=dict)
    dsn: str | None = None
    schema: str = "examples"
    retry_attempts: int = 8
    retry_backoff: float = 10.0
    retry_backoff_max: float = 900.0
    poll_interval: float = 1.0
    sink_poll: float = 5.0
    traces: bool = False
    policies_file: str | None = None
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)
    watch_interval: float = 2.0

    @classmethod
    def fast(cls, run_dir: str | Path, **changes: Any) -> Self:
        """Settings with short waits (`FAST`), for the demo, the tests and the benchmark.

        ``overrides`` given here are added to the fast ones (and win over them).
        """
        overrides = {**cls.FAST.get("overrides", {}), **changes.pop("overrides", {})}
        return cls(
            **{
                "run_dir": str(run_dir),
                **RunSettings.FAST,
                **cls.FAST,
                **changes,
                "overrides": overrides,
            }
        )

    def url(self, service: str) -> str:
        """The base URL of ``service`` (one of the example's ``SERVICES``)."""
        return f"http://{self.host}:{self.ports[service]}"

    @property
    def path(self) -> Path:
        """The run folder."""
        return Path(self.run_dir)

    def save(self) -> Path:
        """Write ``settings.json`` in the run folder (created if missing); return its path."""
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / "settings.json"
        target.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return target

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read settings written by `save`."""
        return cls(**json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)
