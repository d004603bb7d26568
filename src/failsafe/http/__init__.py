"""failsafe.http: httpx transports with retry, per-endpoint circuit breakers and failover.

Install with ``pip install 'failsafe-kit[http]'``, then:

```python
import httpx
from failsafe.http import ResilientTransport

warehouse = httpx.Client(
    transport=ResilientTransport(
        endpoints=["http://127.0.0.1:8001", "http://127.0.0.1:8002"],
        idempotency_key=True,
    ),
    base_url="http://warehouse",
)
warehouse.post("/warehouse/v1/order/products", json={...})
```
"""

from failsafe.http.classify import (
    GATEWAY_STATUSES,
    RETRYABLE,
    THROTTLED,
    TRANSPORT_ERRORS,
    retry_after,
    status,
)
from failsafe.http.events import HttpAttempt
from failsafe.http.exceptions import AllEndpointsFailed, DeadlineExceeded, EndpointFailure
from failsafe.http.transport import AsyncResilientTransport, ResilientTransport, endpoint_breakers

__all__ = [
    "GATEWAY_STATUSES",
    "RETRYABLE",
    "THROTTLED",
    "TRANSPORT_ERRORS",
    "AllEndpointsFailed",
    "AsyncResilientTransport",
    "DeadlineExceeded",
    "EndpointFailure",
    "HttpAttempt",
    "ResilientTransport",
    "endpoint_breakers",
    "retry_after",
    "status",
]
