"""Type-checked, never run: how failsafe.config reads to a type checker (mypy --strict)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import assert_type

from failsafe import ConfigurationError, Pipeline, Policy, RetryBudget
from failsafe.config import (
    KINDS,
    ConfigError,
    Configuration,
    ConfiguredPipeline,
    Watch,
    from_dict,
    load,
)
from failsafe.testing import FakeClock, RecordingListener

config = load("failsafe.toml", environ={}, clock=FakeClock(), listeners=[RecordingListener()])
assert_type(config, Configuration)
also = from_dict({"pipelines": {"warehouse": {"retry": {"attempts": 3}}}})
as_mapping: Mapping[str, ConfiguredPipeline] = also

warehouse = config["warehouse"]
assert_type(warehouse, ConfiguredPipeline)
as_policy: Policy = warehouse
assert_type(warehouse.pipeline, Pipeline)
assert_type(warehouse.policies, tuple[Policy, ...])
assert_type(warehouse.version, int)
assert_type(KINDS, tuple[str, ...])
assert_type(config.budgets, Mapping[str, RetryBudget])


def get_stock(sku: str) -> int:
    return 1


async def get_stock_async(sku: str) -> int:
    return 1


assert_type(warehouse.call(get_stock, "sku-1"), int)


@warehouse
def decorated(sku: str) -> int:
    return 1


assert_type(decorated("sku-1"), int)


async def use() -> None:
    assert_type(await warehouse.call_async(get_stock_async, "sku-1"), int)


assert_type(config.reload(), tuple[str, ...])
assert_type(config.check_for_changes(), bool)
with config.watch(interval=5.0) as watch:
    assert_type(watch, Watch)

try:
    load("bad.toml")
except ConfigError as exc:
    assert_type(exc.file, str)
    assert_type(exc.line, int | None)
    assert_type(exc.key, str | None)
    assert_type(exc.problem, str)
    as_configuration_error: ConfigurationError = exc
