"""failsafe: composable resilience policies for plain functions and coroutines.

The policies and everything they share are re-exported here, so one import is enough:

```python
import failsafe

pipeline = failsafe.Pipeline(failsafe.Retry(), failsafe.CircuitBreaker(), failsafe.Timeout(2))
pipeline.call(fetch, "sku-1")
```
"""

from failsafe._policy import Policy
from failsafe._version import __version__
from failsafe.adaptive_concurrency import AdaptiveConcurrency
from failsafe.backoff import Backoff
from failsafe.budget import RetryBudget
from failsafe.bulkhead import Bulkhead
from failsafe.chaos import Chaos
from failsafe.circuit_breaker import (
    CircuitBreaker,
    CircuitState,
    ConsecutiveFailures,
    FailureRate,
    KeyedCircuitBreaker,
)
from failsafe.clock import SYSTEM_CLOCK, Clock, SystemClock
from failsafe.context import CallContext, current_context
from failsafe.events import Event, Listener, add_listener, remove_listener
from failsafe.exceptions import (
    AllTargetsFailed,
    BulkheadFull,
    CircuitOpenError,
    ConcurrencyLimited,
    ConfigurationError,
    FailsafeError,
    PolicyRejected,
    RateLimited,
    TargetFailure,
    TimeoutExceeded,
    UsageError,
)
from failsafe.failover import Failover
from failsafe.fallback import Fallback
from failsafe.hedging import Hedging
from failsafe.outcome import Outcome
from failsafe.pipeline import Pipeline
from failsafe.predicates import Predicate, exception, result
from failsafe.rate_limiter import RateLimiter
from failsafe.retry import Retry
from failsafe.timeout import Timeout

__all__ = [
    "SYSTEM_CLOCK",
    "AdaptiveConcurrency",
    "AllTargetsFailed",
    "Backoff",
    "Bulkhead",
    "BulkheadFull",
    "CallContext",
    "Chaos",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ConcurrencyLimited",
    "ConfigurationError",
    "ConsecutiveFailures",
    "Event",
    "FailsafeError",
    "Failover",
    "Fallback",
    "FailureRate",
    "Hedging",
    "KeyedCircuitBreaker",
    "Listener",
    "Outcome",
    "Pipeline",
    "Policy",
    "PolicyRejected",
    "Predicate",
    "RateLimited",
    "RateLimiter",
    "Retry",
    "RetryBudget",
    "SystemClock",
    "TargetFailure",
    "Timeout",
    "TimeoutExceeded",
    "UsageError",
    "__version__",
    "add_listener",
    "current_context",
    "exception",
    "remove_listener",
    "result",
]
