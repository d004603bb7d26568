"""The JSON API of the Error-handling service: reports in, records out, a person's actions.

Every route acts through one [`ErrorDesk`][failsafe.errors.ErrorDesk]; the desk's (blocking)
store calls run in a worker thread so the event loop keeps serving. Bad input never reaches
the store: a request is read with a hard size limit, decoded, and validated whole before
anything is written, and every refusal is a 4xx whose JSON body names the problem::

    {"error": "kind: is required", "field": "kind"}

Statuses: 400 malformed JSON, 401 missing or wrong token, 404 no such record, 409 the
record's status forbids the action, 413 body over the limit, 415 not JSON, 422 invalid.
The routes, their bodies and answers are described by
[`openapi_document`][failsafe.errors.api.openapi_document] (served at ``/openapi.json``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, NoReturn, Protocol
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import InvalidReport, Report, Status
from failsafe.errors.store import InvalidMove, Query, RecordNotFound
from failsafe.errors.worker import HandlerPinned

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "HandlerRegistry",
    "api_routes",
    "openapi_document",
]

logger = logging.getLogger("failsafe.errors.api")

DEFAULT_MAX_BODY_BYTES: Final = 256 * 1024
"""The largest request body read, in bytes; a larger one is refused with 413."""
DEFAULT_MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""The largest report payload (as compact JSON), in bytes; a larger one is refused with 422."""

_MAX_DEPTH: Final = 64
_MAX_ID: Final = 200
_MAX_BATCH: Final = 500
_MAX_ACTOR: Final = 200
_MAX_NOTE: Final = 64 * 1024
_MAX_BULK: Final = 500
_MAX_URL: Final = 2000
_MAX_OFFSET: Final = 10**9
_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS = re.compile(r"^[0-9]{1,12}$")
_LIST_PARAMS: Final = ("status", "kind", "source", "since", "until", "q", "limit", "offset")


class HandlerRegistry(Protocol):
    """What the API needs of the retry handlers: HTTP callbacks per kind.

    [`Handlers`][failsafe.errors.worker.Handlers] is the implementation.
    """

    def offer_url(self, kind: str, url: str) -> object:
        """Send automatic retries of ``kind`` to ``url``, asked over HTTP.

        Raises ``InvalidReport`` (422) for a bad kind or URL or a host that is not allowed,
        and [`HandlerPinned`][failsafe.errors.worker.HandlerPinned] (409) for a kind whose
        handler was set at start.
        """
        ...

    def urls(self) -> dict[str, str]:
        """The registered HTTP callbacks, by kind."""
        ...


class _Refused(Exception):
    """A request refused with ``status``; ``field`` names the problem's place."""

    def __init__(
        self, status: int, message: str, field: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def _refuse(status: int, message: str, field: str) -> NoReturn:
    raise _Refused(status, message, field)


def _error(
    status: int, message: str, field: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(door: str | None, tokens: Tokens, endpoint: Endpoint) -> Endpoint:
    """Check the door's token, then map refusals and the store's errors to 4xx answers."""

    async def guarded(request: Request) -> Response:
        if door is not None and not tokens.allows(door, request.headers.get("authorization")):
            given = "authorization" in request.headers
            problem = "wrong bearer token" if given else "missing bearer token"
            return _error(
                401,
                f"{problem} for the {door} door (send 'Authorization: Bearer <token>')",
                "authorization",
                {"WWW-Authenticate": 'Bearer realm="failsafe-errors"'},
            )
        try:
            return await endpoint(request)
        except _Refused as exc:
            return _error(exc.status, exc.message, exc.field, exc.headers)
        except InvalidReport as exc:
            return _error(422, str(exc), exc.field)
        except RecordNotFound as exc:
            return _error(404, str(exc), "id")
        except InvalidMove as exc:
            return _error(409, str(exc), "status")

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded


# -- reading requests ---------------------------------------------------------------------------


def _is_json(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if not (
        media == "application/json"
        or (media.startswith("application/") and media.endswith("+json"))
    ):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes, declared or actual."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.match(declared.strip()):
            _refuse(400, f"Content-Length must be a number of bytes, got {declared[:40]!r}", "body")
        if int(declared) > limit:
            _refuse(413, f"body is {int(declared)} bytes, over the limit of {limit} bytes", "body")
    chunks: list[bytes] = []
    size = 0
    # count what arrives too: a chunked body declares no length, and a declared one may lie
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            _refuse(413, f"body is over the limit of {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    # 1e999 parses as inf, which no JSON answer can carry back (and SQL stores oddly)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _clean(value: Any, depth: int = 1) -> Any:
    r"""``value`` with unpaired surrogates replaced (they cannot be stored or sent as UTF-8).

    A client that encodes a ``surrogateescape``d file name with ``\\udcff`` escapes sends
    valid JSON that no UTF-8 database column accepts; the report must still be kept.
    """
    if depth > _MAX_DEPTH:
        _refuse(422, f"JSON nests deeper than {_MAX_DEPTH} levels", "body")
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_clean(k, depth): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    return value


async def _read_json(request: Request, limit: int, *, optional: bool = False) -> Any:
    """Read and decode a JSON body (``None`` when ``optional`` and the body is empty)."""
    content_type = request.headers.get("content-type")
    body = await _read_body(request, limit)
    if not body.strip() and optional:
        return None
    if content_type is None or not _is_json(content_type):
        shown = "no Content-Type" if content_type is None else f"Content-Type {content_type[:80]!r}"
        _refuse(415, f"expected Content-Type application/json (UTF-8), got {shown}", "content-type")
    if not body.strip():
        _refuse(400, "body is empty; expected a JSON object", "body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse(400, f"body is not UTF-8: {exc.reason} at byte {exc.start}", "body")
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        _refuse(
            400,
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
            "body",
        )
    except RecursionError:
        _refuse(400, f"malformed JSON: nests too deeply (the limit is {_MAX_DEPTH} levels)", "body")
    except ValueError as exc:  # NaN, 1e999, or an integer too long to convert
        _refuse(400, f"malformed JSON: {exc}", "body")
    return _clean(data)


def _object(data: Any, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict):
        _refuse(422, f"body must be a JSON object, got {_json_type(data)}", "body")
    unknown = sorted(set(data) - set(known))
    if unknown:
        _refuse(422, f"{unknown[0]}: unknown field (known: {', '.join(known)})", unknown[0])
    return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _string(data: Mapping[str, Any], name: str, *, limit: int, default: str | None = None) -> Any:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        _refuse(422, f"{name}: must be a string, got {_json_type(value)}", name)
    if len(value) > limit:
        _refuse(422, f"{name}: is {len(value)} characters, over the limit of {limit}", name)
    if "\x00" in value:
        _refuse(422, f"{name}: must not contain NUL characters", name)
    return value


def _actor_note(data: Mapping[str, Any]) -> tuple[str, str | None]:
    actor = _string(data, "actor", limit=_MAX_ACTOR, default="reviewer")
    if not actor.strip():
        _refuse(422, "actor: must not be empty", "actor")
    return actor, _string(data, "note", limit=_MAX_NOTE)


def _record_id(request: Request) -> str:
    record_id: str = request.path_params["id"]
    if len(record_id) > _MAX_ID or "\x00" in record_id:
        # no store holds such an id; do not hand it to one (PostgreSQL refuses NUL)
        raise RecordNotFound(record_id[:_MAX_ID])
    return record_id


def _report_text(data: Mapping[str, Any]) -> dict[str, Any]:
    """The report's text fields with NUL characters replaced (SQL text columns refuse them)."""
    return {
        k: v.replace("\x00", "\ufffd") if isinstance(v, str) and k != "payload" else v
        for k, v in data.items()
    }


# -- query parameters ----------------------------------------------------------------------------


def _instant(name: str, text: str) -> float:
    """Epoch seconds, or an ISO 8601 time (UTC when it names no zone)."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        except (ValueError, OverflowError):
            _refuse(
                422,
                f"{name}: must be epoch seconds or an ISO 8601 time, got {text[:80]!r}",
                name,
            )
    if not math.isfinite(value):
        _refuse(422, f"{name}: must be a finite number of seconds, got {text[:80]!r}", name)
    return value


def _count(name: str, text: str, low: int, high: int) -> int:
    if not _DIGITS.match(text) or not low <= int(text) <= high:
        _refuse(422, f"{name}: must be an integer from {low} to {high}, got {text[:80]!r}", name)
    return int(text)


def _query(request: Request) -> Query:
    given: dict[str, str] = {}
    statuses: list[Status] = []
    for name, value in request.query_params.multi_items():
        if name not in _LIST_PARAMS:
            _refuse(
                422,
                f"{name[:80]}: unknown query parameter (known: {', '.join(_LIST_PARAMS)})",
                name[:80],
            )
        if "\x00" in value:
            _refuse(422, f"{name}: must not contain NUL characters", name)
        if name == "status":
            for part in value.split(","):
                if not part.strip():
                    continue
                try:
                    statuses.append(Status(part.strip()))
                except ValueError:
                    known = ", ".join(s.value for s in Status)
                    _refuse(422, f"status: unknown status {part[:80]!r} (known: {known})", "status")
            continue
        if name in given:
            _refuse(422, f"{name}: given more than once", name)
        given[name] = value
    present = {k: v for k, v in given.items() if v.strip()}
    return Query(
        statuses=tuple(dict.fromkeys(statuses)),
        kind=present.get("kind"),
        source=present.get("source"),
        since=_instant("since", present["since"]) if "since" in present else None,
        until=_instant("until", present["until"]) if "until" in present else None,
        text=present.get("q"),
        limit=_count("limit", present["limit"], 1, 500) if "limit" in present else 50,
        offset=_count("offset", present["offset"], 0, _MAX_OFFSET) if "offset" in present else 0,
    )


def _check_url(url: str) -> None:
    problem = None
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        problem = str(exc)
    else:
        if parts.scheme not in ("http", "https"):
            problem = "must be an http:// or https:// URL"
        elif not parts.hostname:
            problem = "must name a host"
        elif any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
            problem = "must not contain spaces or control characters"
    if problem is not None:
        _refuse(422, f"url: {problem}, got {url[:200]!r}", "url")


# -- the routes ----------------------------------------------------------------------------------


def api_routes(
    desk: ErrorDesk,
    *,
    tokens: Tokens,
    handlers: HandlerRegistry,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    worker_problem: Callable[[], str | None] | None = None,
) -> list[BaseRoute]:
    """The JSON routes: ``/v1/...``, ``/healthz`` and ``/openapi.json``.

    Args:
        desk: Every route acts through it.
        tokens: ``report`` opens ``POST /v1/reports`` (and its batch form); ``review``
            opens those and every other ``/v1`` route, ``PUT /v1/handlers/{kind}``
            included (where retries go is the operator's choice, not a reporter's).
        handlers: Where ``PUT /v1/handlers/{kind}`` registers HTTP callbacks.
        max_body_bytes: The largest request body read (larger: 413).
        max_payload_bytes: The largest report payload (larger: 422).
        worker_problem: Returns why the retry worker stopped, if it did (``/healthz``
            then answers 503).

    Returns:
        Starlette routes, to mount at the root of an app.
    """

    async def report(request: Request) -> Response:
        """POST /v1/reports: store a report (201 new record, 200 joined or redelivered)."""
        key = request.headers.get("idempotency-key")
        if key is not None and (not key.strip() or len(key) > _MAX_ID or "\x00" in key):
            _refuse(
                422,
                f"Idempotency-Key: must be 1 to {_MAX_ID} characters, got {len(key)}",
                "idempotency-key",
            )
        data = await _read_json(request, max_body_bytes)
        if isinstance(data, dict):
            data = _report_text(data)
        parsed = Report.from_json(data, max_payload_bytes=max_payload_bytes)
        record, created = await run_in_threadpool(
            desk.report, parsed, actor=parsed.source, report_id=key
        )
        return JSONResponse(
            {"record": record.to_json(), "created": created}, status_code=201 if created else 200
        )

    async def report_batch(request: Request) -> Response:
        """POST /v1/reports/batch: store up to 500 reports in one transaction, all or none."""
        data = _object(await _read_json(request, max_body_bytes * 8), ("reports",))
        items = data.get("reports")
        if not isinstance(items, list) or not 1 <= len(items) <= _MAX_BATCH:
            _refuse(422, f"reports: must be a list of 1 to {_MAX_BATCH} items", "reports")
        parsed: list[tuple[Report, str | None]] = []
        for index, item in enumerate(items):
            where = f"reports[{index}]"
            if not isinstance(item, dict) or set(item) - {"id", "report"} or "report" not in item:
                _refuse(422, f'{where}: must be an object {{"id"?, "report"}}', where)
            key = item.get("id")
            if key is not None and (
                not isinstance(key, str) or not key.strip() or len(key) > _MAX_ID or "\x00" in key
            ):
                _refuse(422, f"{where}.id: must be a string of 1 to {_MAX_ID} characters", where)
            body = item["report"]
            if isinstance(body, dict):
                body = _report_text(body)
            try:
                report = Report.from_json(body, max_payload_bytes=max_payload_bytes)
            except InvalidReport as exc:
                _refuse(422, f"{where}.{exc}", f"{where}.{exc.field}")
            parsed.append((report, key))
        results = await run_in_threadpool(desk.report_many, parsed)
        return JSONResponse(
            {"results": [{"record_id": rid, "created": created} for rid, created in results]}
        )

    async def list_records(request: Request) -> Response:
        """GET /v1/records: one page of records matching the filters, newest first."""
        query = _query(request)
        page = await run_in_threadpool(desk.find, query)
        return JSONResponse(
            {
                "records": [r.to_json() for r in page.records],
                "total": page.total,
                "limit": query.limit,
                "offset": query.offset,
            }
        )

    async def get_record(request: Request) -> Response:
        """GET /v1/records/{id}: one record with its attempts and history."""
        record = await run_in_threadpool(desk.get, _record_id(request))
        return JSONResponse(record.to_json())

    def acting(name: str) -> Endpoint:
        operation = {"resolve": desk.resolve, "retry": desk.retry, "discard": desk.discard}[name]

        async def act(request: Request) -> Response:
            record_id = _record_id(request)
            data = await _read_json(request, max_body_bytes, optional=True)
            actor, note = _actor_note(_object({} if data is None else data, ("note", "actor")))
            record = await run_in_threadpool(operation, record_id, actor=actor, note=note)
            return JSONResponse(record.to_json())

        act.__name__ = name
        act.__doc__ = f"POST /v1/records/{{id}}/{name}: {name} one record."
        return act

    async def bulk(request: Request) -> Response:
        """POST /v1/records/bulk: one action on many records, each on its own."""
        data = _object(
            await _read_json(request, max_body_bytes), ("action", "ids", "note", "actor")
        )
        if "action" not in data:
            _refuse(422, "action: is required", "action")
        if data["action"] not in ("resolve", "retry", "discard"):
            _refuse(422, "action: must be 'resolve', 'retry' or 'discard'", "action")
        ids = data.get("ids")
        if not isinstance(ids, list):
            _refuse(422, f"ids: must be an array of record ids, got {_json_type(ids)}", "ids")
        if not 1 <= len(ids) <= _MAX_BULK:
            _refuse(422, f"ids: must hold 1 to {_MAX_BULK} ids, got {len(ids)}", "ids")
        for index, record_id in enumerate(ids):
            if not isinstance(record_id, str) or not 1 <= len(record_id) <= _MAX_ID:
                _refuse(422, f"ids[{index}]: must be a record id (a short string)", f"ids[{index}]")
            if "\x00" in record_id:
                _refuse(422, f"ids[{index}]: must not contain NUL characters", f"ids[{index}]")
        actor, note = _actor_note(data)
        result = await run_in_threadpool(
            desk.bulk, data["action"], list(dict.fromkeys(ids)), actor=actor, note=note
        )
        return JSONResponse(
            {"changed": [r.to_json() for r in result.changed], "refused": result.refused}
        )

    async def put_handler(request: Request) -> Response:
        """PUT /v1/handlers/{kind}: send automatic retries of a kind to an HTTP callback."""
        kind: str = request.path_params["kind"]
        if not _KIND.match(kind):
            _refuse(422, "kind: must be 1-128 letters, digits, '.', '_', ':' or '-'", "kind")
        data = _object(await _read_json(request, max_body_bytes), ("url",))
        url = _string(data, "url", limit=_MAX_URL)
        if url is None:
            _refuse(422, "url: is required", "url")
        _check_url(url)
        try:
            handlers.offer_url(kind, url)
        except HandlerPinned as exc:
            _refuse(409, str(exc), "kind")
        logger.info("retries of %s now go to %s", kind, url)
        return JSONResponse({"kind": kind, "url": url})

    async def get_handlers(request: Request) -> Response:
        """GET /v1/handlers: the registered HTTP callbacks, by kind."""
        return JSONResponse({"handlers": handlers.urls()})

    async def healthz(request: Request) -> Response:
        """GET /healthz: whether the service can reach its store, and records per status."""
        try:
            counts = await run_in_threadpool(desk.store.counts)
        except Exception as exc:
            logger.exception("health check: the store failed")
            return JSONResponse({"ok": False, "error": f"store: {exc}"}, status_code=503)
        problem = worker_problem() if worker_problem is not None else None
        if problem is not None:
            return JSONResponse(
                {"ok": False, "error": f"retry worker: {problem}", "counts": counts},
                status_code=503,
            )
        return JSONResponse({"ok": True, "counts": counts})

    document = openapi_document()

    async def openapi(request: Request) -> Response:
        """GET /openapi.json: the OpenAPI 3.1 description of these routes."""
        return JSONResponse(document)

    def route(path: str, endpoint: Endpoint, method: str, door: str | None) -> Route:
        return Route(path, _guarded(door, tokens, endpoint), methods=[method])

    return [
        route("/v1/reports", report, "POST", "report"),
        route("/v1/reports/batch", report_batch, "POST", "report"),
        route("/v1/records", list_records, "GET", "review"),
        route("/v1/records/bulk", bulk, "POST", "review"),
        route("/v1/records/{id}", get_record, "GET", "review"),
        route("/v1/records/{id}/resolve", acting("resolve"), "POST", "review"),
        route("/v1/records/{id}/retry", acting("retry"), "POST", "review"),
        route("/v1/records/{id}/discard", acting("discard"), "POST", "review"),
        route("/v1/handlers", get_handlers, "GET", "review"),
        route("/v1/handlers/{kind}", put_handler, "PUT", "review"),
        route("/healthz", healthz, "GET", None),
        route("/openapi.json", openapi, "GET", None),
    ]


# -- the OpenAPI document ------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "Malformed JSON (the message names the position).",
        401: "Missing or wrong bearer token.",
        404: "No record with this id.",
        409: "The record's status does not allow this action.",
        413: "The body is over the size limit.",
        415: "The body is not JSON.",
        422: "Invalid input; `field` names the problem's place.",
    }
    return {str(code): _json(_ref("Error"), meaning[code]) for code in codes}


_ID_PARAM: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The record's id.",
    "schema": {"type": "string", "minLength": 1, "maxLength": _MAX_ID},
}
_TEXT: Final = {"type": ["string", "null"]}


def _action(name: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{name}Record",
            "summary": summary,
            "security": [{"review": []}],
            "parameters": [_ID_PARAM],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref("ActionRequest")}},
            },
            "responses": {
                "200": _json(_ref("ErrorRecord"), "The record after the action."),
                **_errors(400, 401, 404, 409, 413, 415, 422),
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the JSON API, as served at ``/openapi.json``."""
    statuses = [s.value for s in Status]
    schemas: dict[str, Any] = {
        "Report": {
            "type": "object",
            "description": "One failure, as a service reports it.",
            "required": ["kind", "action", "source"],
            "additionalProperties": False,
            "properties": {
                "kind": {
                    "type": "string",
                    "pattern": _KIND.pattern,
                    "description": "What failed, such as `stock.decrement`.",
                },
                "action": {"type": "string", "enum": ["retry", "review"]},
                "source": {"type": "string", "minLength": 1, "maxLength": 200},
                "payload": {
                    "type": ["object", "array"],
                    "description": "JSON data needed to act on the failure (default `{}`).",
                },
                "error_type": {"type": ["string", "null"], "maxLength": 200},
                "error_message": _TEXT,
                "traceback": _TEXT,
                "correlation_id": {"type": ["string", "null"], "maxLength": 200},
                "dedupe_key": {"type": ["string", "null"], "maxLength": 200},
            },
        },
        "Attempt": {
            "type": "object",
            "required": ["at", "ok", "detail"],
            "properties": {
                "at": {"type": "number"},
                "ok": {"type": "boolean"},
                "detail": {"type": "string"},
            },
        },
        "AuditEntry": {
            "type": "object",
            "required": ["at", "actor", "action", "note"],
            "properties": {
                "at": {"type": "number"},
                "actor": {"type": "string"},
                "action": {"type": "string"},
                "note": _TEXT,
            },
        },
        "ErrorRecord": {
            "type": "object",
            "description": "A reported failure as the service keeps it (times: epoch seconds).",
            "properties": {
                "id": {"type": "string"},
                "kind": {"type": "string"},
                "source": {"type": "string"},
                "action": {"type": "string", "enum": ["retry", "review"]},
                "payload": {"type": ["object", "array"]},
                "error_type": _TEXT,
                "error_message": _TEXT,
                "traceback": _TEXT,
                "correlation_id": _TEXT,
                "dedupe_key": {"type": "string"},
                "count": {"type": "integer", "minimum": 1},
                "status": {"type": "string", "enum": statuses},
                "attempts": {"type": "array", "items": _ref("Attempt")},
                "history": {"type": "array", "items": _ref("AuditEntry")},
                "created_at": {"type": "number"},
                "updated_at": {"type": "number"},
                "next_attempt_at": {"type": ["number", "null"]},
            },
        },
        "ReportAccepted": {
            "type": "object",
            "required": ["record", "created"],
            "properties": {
                "record": _ref("ErrorRecord"),
                "created": {
                    "type": "boolean",
                    "description": "False when the report joined an open record or was a "
                    "redelivery of an Idempotency-Key seen before.",
                },
            },
        },
        "Page": {
            "type": "object",
            "required": ["records", "total", "limit", "offset"],
            "properties": {
                "records": {"type": "array", "items": _ref("ErrorRecord")},
                "total": {"type": "integer", "minimum": 0},
                "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                "offset": {"type": "integer", "minimum": 0},
            },
        },
        "ActionRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "note": {"type": ["string", "null"], "maxLength": _MAX_NOTE},
                "actor": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": _MAX_ACTOR,
                    "description": "Who acts (default `reviewer`).",
                },
            },
        },
        "BulkRequest": {
            "type": "object",
            "required": ["action", "ids"],
            "additionalProperties": False,
            "properties": {
                "action": {"type": "string", "enum": ["resolve", "retry", "discard"]},
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": _MAX_BULK,
                    "items": {"type": "string", "minLength": 1, "maxLength": _MAX_ID},
                },
                "note": {"type": ["string", "null"], "maxLength": _MAX_NOTE},
                "actor": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": _MAX_ACTOR,
                    "description": "Who acts (default `reviewer`).",
                },
            },
        },
        "BulkResult": {
            "type": "object",
            "required": ["changed", "refused"],
            "properties": {
                "changed": {"type": "array", "items": _ref("ErrorRecord")},
                "refused": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Record id to the reason it was not changed.",
                },
            },
        },
        "HandlerRequest": {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {"url": {"type": "string", "format": "uri", "maxLength": _MAX_URL}},
        },
        "Handler": {
            "type": "object",
            "required": ["kind", "url"],
            "properties": {"kind": {"type": "string"}, "url": {"type": "string"}},
        },
        "Handlers": {
            "type": "object",
            "required": ["handlers"],
            "properties": {
                "handlers": {"type": "object", "additionalProperties": {"type": "string"}}
            },
        },
        "Health": {
            "type": "object",
            "required": ["ok"],
            "properties": {
                "ok": {"type": "boolean"},
                "counts": {
                    "type": "object",
                    "properties": {s: {"type": "integer"} for s in statuses},
                },
                "error": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error", "field"],
            "properties": {
                "error": {"type": "string", "description": "What is wrong, for a person."},
                "field": {
                    "type": "string",
                    "description": "Where: a body field, a query parameter, `body`, "
                    "`authorization`, `content-type`, `id` or `status`.",
                },
            },
        },
    }

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    paths: dict[str, Any] = {
        "/v1/reports": {
            "post": {
                "operationId": "report",
                "summary": "Report a failure.",
                "security": [{"report": []}, {"review": []}],
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "The client's id for this report: a redelivery with "
                        "the same key counts once.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": _MAX_ID},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Report")}},
                },
                "responses": {
                    "201": _json(_ref("ReportAccepted"), "A new record."),
                    "200": _json(_ref("ReportAccepted"), "Joined an open record, or a redelivery."),
                    **_errors(400, 401, 413, 415, 422),
                },
            }
        },
        "/v1/reports/batch": {
            "post": {
                "operationId": "reportBatch",
                "summary": "Report up to 500 failures in one transaction: all are stored, or none.",
                "security": [{"report": []}, {"review": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["reports"],
                                "properties": {
                                    "reports": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": _MAX_BATCH,
                                        "items": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "required": ["report"],
                                            "properties": {
                                                "id": {
                                                    "type": "string",
                                                    "minLength": 1,
                                                    "maxLength": _MAX_ID,
                                                    "description": "The report id: a "
                                                    "redelivery with the same id counts once.",
                                                },
                                                "report": _ref("Report"),
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["results"],
                            "properties": {
                                "results": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["record_id", "created"],
                                        "properties": {
                                            "record_id": {"type": "string"},
                                            "created": {"type": "boolean"},
                                        },
                                    },
                                }
                            },
                        },
                        "Each report's record id and whether the record is new, in order.",
                    ),
                    **_errors(400, 401, 413, 415, 422),
                },
            }
        },
        "/v1/records": {
            "get": {
                "operationId": "listRecords",
                "summary": "List records, newest first.",
                "security": [{"review": []}],
                "parameters": [
                    query(
                        "status",
                        {"type": "string"},
                        f"Comma-separated statuses, any of: {', '.join(statuses)}.",
                    ),
                    query("kind", {"type": "string"}, "Only this kind."),
                    query("source", {"type": "string"}, "Only this reporting service."),
                    query(
                        "since",
                        {"type": "string"},
                        "Created at or after: epoch seconds or ISO 8601 (UTC if no zone).",
                    ),
                    query("until", {"type": "string"}, "Created before (as `since`)."),
                    query(
                        "q",
                        {"type": "string"},
                        "Text in the kind, error type, message or payload (any case).",
                    ),
                    query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                        "Records per page.",
                    ),
                    query(
                        "offset",
                        {"type": "integer", "minimum": 0, "maximum": _MAX_OFFSET, "default": 0},
                        "Records to skip.",
                    ),
                ],
                "responses": {"200": _json(_ref("Page"), "One page."), **_errors(401, 422)},
            }
        },
        "/v1/records/bulk": {
            "post": {
                "operationId": "bulkAction",
                "summary": "Resolve, retry or discard many records, each on its own.",
                "security": [{"review": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("BulkRequest")}},
                },
                "responses": {
                    "200": _json(_ref("BulkResult"), "What changed and what was refused."),
                    **_errors(400, 401, 413, 415, 422),
                },
            }
        },
        "/v1/records/{id}": {
            "get": {
                "operationId": "getRecord",
                "summary": "One record with its attempts and history.",
                "security": [{"review": []}],
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": _json(_ref("ErrorRecord"), "The record."),
                    **_errors(401, 404),
                },
            }
        },
        "/v1/records/{id}/resolve": _action("resolve", "Close a record as dealt with."),
        "/v1/records/{id}/retry": _action("retry", "Queue a record for an automatic retry now."),
        "/v1/records/{id}/discard": _action("discard", "Close a record as not worth acting on."),
        "/v1/handlers": {
            "get": {
                "operationId": "listHandlers",
                "summary": "The HTTP callbacks that automatic retries are sent to, by kind.",
                "security": [{"review": []}],
                "responses": {"200": _json(_ref("Handlers"), "The callbacks."), **_errors(401)},
            }
        },
        "/v1/handlers/{kind}": {
            "put": {
                "operationId": "putHandler",
                "summary": "Send automatic retries of a kind to an HTTP callback.",
                "description": 'The service POSTs {"record": <ErrorRecord>} with '
                "`Idempotency-Key: <record id>`; a 2xx answer resolves the record. The URL's"
                " host must be one of the callback hosts allowed at start (loopback by"
                " default).",
                "security": [{"review": []}],
                "parameters": [
                    {
                        "name": "kind",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": _KIND.pattern},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("HandlerRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Handler"), "The registered callback."),
                    **_errors(400, 401, 413, 415, 422),
                    "409": _json(
                        _ref("Error"),
                        "The kind's handler was set when the service started (in code or"
                        " with --callback): it cannot be changed over HTTP.",
                    ),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Whether the service can reach its store; records per status.",
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "Healthy."),
                    "503": _json(_ref("Health"), "The store or the retry worker failed."),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/review/": {
            "get": {
                "operationId": "review",
                "summary": "The review pages for people (HTML).",
                "security": [{"review": []}],
                "responses": {
                    "200": {
                        "description": "The list of open errors.",
                        "content": {"text/html": {}},
                    },
                    "303": {"description": "Not logged in: to the login form."},
                },
            }
        },
    }
    record = schemas["ErrorRecord"]
    record["required"] = list(record["properties"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "failsafe Error-handling service",
            "version": "1",
            "description": "Services report failures; the service retries them by its own "
            "logic or keeps them for a person to review. Errors answer "
            '{"error": <message>, "field": <where>}.',
        },
        "security": [{"review": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "report": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "FAILSAFE_ERRORS_REPORT_TOKEN: for reporting services.",
                },
                "review": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "FAILSAFE_ERRORS_REVIEW_TOKEN: for people reviewing (also "
                    "accepted for reporting).",
                },
            },
        },
    }
