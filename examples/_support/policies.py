"""Each example's pipelines: the ``failsafe.toml`` in its package, loaded by `failsafe.config`.

The file names one pipeline per HTTP client of the example (retry, circuit breaker, timeout,
outermost first); the wiring gives each to its transport with ``policies=``, and each
service that holds a transport watches the file, so that an edit applies to the next
request without a restart (`failsafe.config.Configuration.watch`). Check a file with
``failsafe config check examples/warehouse_flow/failsafe.toml``.
"""

from __future__ import annotations

import os
from collections import ChainMap
from pathlib import Path
from typing import TypeVar

from examples._support.settings import RunSettings
from failsafe.config import Configuration, load

__all__ = ["load_policies", "policy"]

P = TypeVar("P")


def load_policies(settings: RunSettings, default: Path) -> Configuration:
    """The example's pipelines, from ``settings.policies_file`` or ``default``.

    The ``FAILSAFE_<PIPELINE>_<KIND>_<OPTION>`` variables of the environment apply, and
    ``settings.overrides`` over them (`RunSettings.fast` shortens the waits that way); a
    reload reads the file and both again.

    Raises:
        failsafe.config.ConfigError: Naming the file, the line, the key and the problem (or
            the variable) when anything is wrong.
    """
    path = Path(settings.policies_file) if settings.policies_file else default
    return load(path, environ=ChainMap(dict(settings.overrides), os.environ))


def policy(config: Configuration, pipeline: str, kind: type[P]) -> P:
    """The policy of class ``kind`` in ``pipeline``'s current version (to say its numbers).

    Raises:
        LookupError: If the pipeline has no such policy.
    """
    for found in config[pipeline].policies:
        if isinstance(found, kind):
            return found
    raise LookupError(f"pipeline {pipeline!r} of {config.source} has no {kind.__name__}")
