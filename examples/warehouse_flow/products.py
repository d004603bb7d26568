"""The Products service (order flow step 6): which components a product needs.

``GET /products/{productId}/components`` answers ``200 {"productId": ..., "components":
{component: per product}}`` from its own database, or ``404`` when the product is unknown
(step 7). It uses no failsafe policy itself: it is what the Warehouse's client is resilient
against (fault switches: ``unavailable``, ``latency``).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples._support.faults import FaultMiddleware, Faults, fault_routes
from examples._support.web import closing, healthz
from examples.warehouse_flow.db import ProductsDB, open_database
from examples.warehouse_flow.domain import CATALOGUE
from examples.warehouse_flow.settings import Settings
from failsafe.health import health_route
from failsafe.tracing import TracingMiddleware

__all__ = ["create_app"]


def create_app(settings: Settings) -> Starlette:
    """The Products service's ASGI app, on the run's catalogue (filled in if empty)."""
    faults = Faults()
    catalogue = ProductsDB(open_database(settings, "products"))
    catalogue.create(CATALOGUE)

    async def components(request: Request) -> Response:
        product_id = request.path_params["product_id"]
        found = await run_in_threadpool(catalogue.components, product_id)
        if found is None:
            return JSONResponse(
                {"error": f"no product {product_id!r} in the catalogue", "field": "productId"},
                status_code=404,
            )
        return JSONResponse({"productId": product_id, "components": found})

    return Starlette(
        routes=[
            Route("/products/{product_id}/components", components, methods=["GET"]),
            Route("/healthz", healthz("products"), methods=["GET"]),
            health_route("/health"),  # no policy here: an empty list
            *fault_routes(faults),
        ],
        middleware=[Middleware(TracingMiddleware), Middleware(FaultMiddleware, faults=faults)],
        lifespan=closing(catalogue.db.close),
    )
