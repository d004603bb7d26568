"""A trace crosses the queue: publishers write ``traceparent``, consumers continue it.

Most tests install a small recording tracing system (`FakeTracing`); one runs the real
OpenTelemetry SDK end to end; the RabbitMQ tests use the real server.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from failsafe import _tracing
from failsafe.exceptions import ConfigurationError
from failsafe.queue import (
    AsyncConsumer,
    AsyncSQLiteBroker,
    BrokerError,
    Consumer,
    Envelope,
    InMemoryBroker,
    Place,
    Redelivery,
    SettleConflict,
    SQLiteBroker,
    Unrecoverable,
    as_async,
    as_blocking,
)
from failsafe.queue.broker import Delivery
from failsafe.testing import FakeClock
from failsafe.tracing import current_trace_id

QUEUE = "orders.paid"
SECRET = "card 4111-1111-1111-1111 declined"  # an exception message that must not be recorded


# -- a recording tracing system --------------------------------------------------------------
@attrs.define(eq=False)
class FakeSpan:
    """A span as `FakeTracing` records it."""

    name: str
    kind: str
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    parent_id: str | None
    remote_parent: bool
    error: str | None = None
    ended: bool = False

    def set(self, key: str, value: Any, /) -> None:
        self.attributes[key] = value

    def failed(self, error: BaseException | str, /) -> None:
        if isinstance(error, str):
            self.error = error
        else:
            kind = type(error)
            module = kind.__module__
            self.error = (
                kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
            )


class FakeTracing:
    """The `_tracing.Tracing` protocol, recording every span (thread- and task-aware)."""

    def __init__(self) -> None:
        self.spans: list[FakeSpan] = []
        self._current: contextvars.ContextVar[FakeSpan | None] = contextvars.ContextVar(
            "fake_span", default=None
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: str,
        attributes: Mapping[str, Any],
        carrier: Mapping[str, str] | None = None,
    ) -> Iterator[FakeSpan]:
        parent = self._current.get()
        remote = False
        if carrier is not None and "traceparent" in carrier:
            _, trace_id, parent_id, _ = carrier["traceparent"].split("-")
            remote = True
        elif parent is not None:
            trace_id, parent_id = parent.trace_id, parent.span_id
        else:
            trace_id, parent_id = uuid.uuid4().hex, None
        with self._lock:
            span_id = f"{next(self._ids):016x}"
        span = FakeSpan(name, kind, dict(attributes), trace_id, span_id, parent_id, remote)
        with self._lock:
            self.spans.append(span)
        token = self._current.set(span)
        try:
            yield span
        except BaseException as exc:
            span.failed(exc)
            raise
        finally:
            self._current.reset(token)
            span.ended = True

    def inject(self, carrier: MutableMapping[str, str], /) -> None:
        span = self._current.get()
        if span is not None:
            carrier["traceparent"] = f"00-{span.trace_id}-{span.span_id}-01"
            carrier["tracestate"] = "fake=1"

    def current_ids(self) -> tuple[str, str] | None:
        span = self._current.get()
        return None if span is None else (span.trace_id, span.span_id)

    def named(self, name: str) -> list[FakeSpan]:
        return [span for span in self.spans if span.name == name]


@pytest.fixture
def tracing() -> Iterator[FakeTracing]:
    """A `FakeTracing` installed for the test, removed after it."""
    fake = FakeTracing()
    previous = _tracing.install(fake)
    try:
        yield fake
    finally:
        _tracing.install(previous)


class Sink:
    """A review sink that records the reports it was given."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def report(self, kind: str, action: Any, **fields: Any) -> str:
        self.reports.append({"kind": kind, "action": action, **fields})
        return f"r{len(self.reports)}"


class AsyncSink(Sink):
    """The asyncio twin of `Sink`."""

    async def report(self, kind: str, action: Any, **fields: Any) -> str:  # type: ignore[override]
        return Sink.report(self, kind, action, **fields)


def _traceparent(span: FakeSpan) -> str:
    return f"00-{span.trace_id}-{span.span_id}-01"


def _consume(
    is_async: bool, broker: InMemoryBroker, handler: Any, *, sink: bool = True, **options: Any
) -> Any:
    """A consumer of QUEUE over ``broker`` (async: over its asyncio view), with a sink."""
    options.setdefault("clock", broker.clock)
    if is_async:

        async def ahandler(message: Envelope) -> object:
            return handler(message)

        errors = AsyncSink() if sink else None
        return AsyncConsumer(as_async(broker), QUEUE, ahandler, errors=errors, **options)
    return Consumer(broker, QUEUE, handler, errors=Sink() if sink else None, **options)


def _drain(consumer: Any) -> int:
    if isinstance(consumer, AsyncConsumer):
        return int(asyncio.run(consumer.process_available()))
    return int(consumer.process_available())


# -- publishing ---------------------------------------------------------------------------------
def test_memory_publish_carries_the_producer_span(tracing: FakeTracing) -> None:
    """A publish under a span runs in a producer span whose traceparent the message carries."""
    broker = InMemoryBroker(clock=FakeClock())
    with tracing.span("checkout", kind="internal", attributes={}) as outer:
        broker.publish(QUEUE, Envelope(body=b"{}", id="m1", headers={"tenant": "t1"}))
    [producer] = tracing.named(f"{QUEUE} publish")
    assert producer.kind == "producer"
    assert (producer.trace_id, producer.parent_id) == (outer.trace_id, outer.span_id)
    assert producer.attributes == {
        "messaging.system": "failsafe.memory",
        "messaging.destination.name": QUEUE,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.message.id": "m1",
    }
    [stored] = broker.messages(QUEUE)
    assert stored.headers == {
        "tenant": "t1",
        "traceparent": _traceparent(producer),
        "tracestate": "fake=1",
    }


def test_sqlite_publish_many_is_one_producer_span(tracing: FakeTracing, tmp_path: Path) -> None:
    """A SQLite batch is one producer span; every new message carries it, a traced one not."""
    broker = SQLiteBroker(tmp_path / "queue.db", clock=FakeClock())
    mine = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    try:
        sent = broker.publish_many(
            QUEUE,
            iter(
                [
                    Envelope(body=b"1", id="m1"),
                    Envelope(body=b"2", id="m2", headers={"traceparent": mine}),
                    Envelope(body=b"3", id="m3"),
                ]
            ),
        )
        assert sent == 3
        [producer] = tracing.named(f"{QUEUE} publish")
        assert producer.attributes["messaging.system"] == "failsafe.sqlite"
        assert producer.attributes["messaging.batch.message_count"] == 3
        got = {d.message.id: d.message.headers for d in broker.receive(QUEUE, limit=3)}
        assert got["m1"]["traceparent"] == got["m3"]["traceparent"] == _traceparent(producer)
        assert got["m2"] == {"traceparent": mine}
    finally:
        broker.close()


def test_async_sqlite_publish_carries_the_callers_trace(
    tracing: FakeTracing, tmp_path: Path
) -> None:
    """Through the asyncio view (a worker thread), the producer span is the caller's child."""
    broker = AsyncSQLiteBroker(tmp_path / "queue.db", clock=FakeClock())

    async def main() -> tuple[FakeSpan, list[Delivery]]:
        with tracing.span("checkout", kind="internal", attributes={}) as outer:
            await broker.publish(QUEUE, Envelope(body=b"{}"))
        return outer, await broker.receive(QUEUE)

    try:
        outer, [delivery] = asyncio.run(main())
    finally:
        broker.sqlite.close()
    [producer] = tracing.named(f"{QUEUE} publish")
    assert producer.parent_id == outer.span_id
    assert delivery.message.headers["traceparent"] == _traceparent(producer)


def test_a_traceparent_already_there_is_kept_and_no_span_started(tracing: FakeTracing) -> None:
    """A message that names its publisher already is stored as it is, without a span."""
    broker = InMemoryBroker(clock=FakeClock())
    headers = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "tracestate": "x=y"}
    message = Envelope(body=b"{}", headers=headers)
    with tracing.span("relay", kind="internal", attributes={}):
        broker.publish(QUEUE, message)
    assert tracing.named(f"{QUEUE} publish") == []
    assert broker.messages(QUEUE) == [message]


def test_without_tracing_publish_adds_nothing(tmp_path: Path) -> None:
    """With no tracing installed the very envelope is stored, headers untouched."""
    assert _tracing.installed() is None
    memory = InMemoryBroker(clock=FakeClock())
    message = Envelope(body=b"{}", headers={"tenant": "t1"})
    memory.publish(QUEUE, message)
    assert memory.messages(QUEUE)[0] is message
    sqlite = SQLiteBroker(tmp_path / "queue.db", clock=FakeClock())
    try:
        sqlite.publish(QUEUE, message)
        [delivery] = sqlite.receive(QUEUE)
        assert delivery.message.headers == {"tenant": "t1"}
    finally:
        sqlite.close()


def test_a_failed_publish_marks_its_span_failed(tracing: FakeTracing, tmp_path: Path) -> None:
    """A publish that raises ends its producer span failed, with the error's type."""
    broker = SQLiteBroker(tmp_path / "queue.db", clock=FakeClock())
    broker.close()
    with pytest.raises(BrokerError, match="is closed"):
        broker.publish(QUEUE, Envelope(body=b"{}"))
    [producer] = tracing.named(f"{QUEUE} publish")
    assert producer.ended
    assert producer.error == "failsafe.queue.broker.BrokerError"


# -- consuming ---------------------------------------------------------------------------------
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_consumer_span_continues_the_publishers_trace(tracing: FakeTracing, is_async: bool) -> None:
    """Each delivery is a consumer span, child of the producer span, current in the handler."""
    broker = InMemoryBroker(clock=FakeClock())
    seen: list[tuple[str, str] | None] = []
    inner: list[FakeSpan] = []

    def handler(message: Envelope) -> None:
        seen.append(tracing.current_ids())
        with tracing.span("charge", kind="client", attributes={}) as span:
            inner.append(span)

    with tracing.span("checkout", kind="internal", attributes={}):
        broker.publish(QUEUE, Envelope(body=b'{"order": 1}', id="m1"))
    consumer = _consume(is_async, broker, handler, name="payments")
    assert _drain(consumer) == 1
    [producer] = tracing.named(f"{QUEUE} publish")
    [span] = tracing.named(f"{QUEUE} process")
    assert span.kind == "consumer"
    assert (span.trace_id, span.parent_id, span.remote_parent) == (
        producer.trace_id,
        producer.span_id,
        True,
    )
    assert span.attributes == {
        "messaging.system": "failsafe.memory",
        "messaging.destination.name": QUEUE,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": "m1",
        "messaging.message.body.size": len(b'{"order": 1}'),
        "failsafe.policy": "payments",
        "failsafe.queue.deliveries": 1,
        "failsafe.queue.delayed_attempts": 0,
        "failsafe.queue.outcome": "acked",
        "failsafe.queue.attempts": 1,
    }
    assert span.error is None
    assert span.ended
    assert seen == [(span.trace_id, span.span_id)]
    assert inner[0].parent_id == span.span_id


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_outcomes_and_error_types_on_the_consumer_span(
    tracing: FakeTracing, is_async: bool
) -> None:
    """Redelivered, reviewed and parked deliveries say so, with the error's type, never its text."""
    clock = FakeClock()
    broker = InMemoryBroker(clock=clock)
    policy = Redelivery(immediate=1, delayed=1, delay=60.0)

    def handler(message: Envelope) -> None:
        if message.id == "lost":
            raise Unrecoverable(SECRET)
        raise ConnectionError(SECRET)

    broker.publish(QUEUE, Envelope(body=b"{}", id="flaky"))
    broker.publish(QUEUE, Envelope(body=b"{}", id="lost"))
    _drain(_consume(is_async, broker, handler, redelivery=policy))
    clock.advance(60)
    _drain(_consume(is_async, broker, handler, redelivery=policy))  # flaky's last round
    spans = tracing.named(f"{QUEUE} process")
    got = [
        (
            s.attributes["messaging.message.id"],
            s.attributes["failsafe.queue.outcome"],
            s.attributes["failsafe.queue.attempts"],
            s.attributes["failsafe.queue.delayed_attempts"],
            s.error,
        )
        for s in spans
    ]
    assert got == [
        ("flaky", "redelivered", 2, 0, "ConnectionError"),
        ("lost", "review", 1, 0, "failsafe.queue.redelivery.Unrecoverable"),
        ("flaky", "review", 2, 1, "ConnectionError"),
    ]
    for span in spans:
        assert all(SECRET not in str(value) for value in span.attributes.values())
    producers = {s.attributes["messaging.message.id"]: s for s in tracing.named(f"{QUEUE} publish")}
    assert [s.parent_id for s in spans] == [
        producers["flaky"].span_id,
        producers["lost"].span_id,
        producers["flaky"].span_id,  # the next round continues the same trace
    ]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_parked_without_a_sink_is_outcome_parked(tracing: FakeTracing, is_async: bool) -> None:
    """With no error sink, a message given up on is parked: outcome ``parked``."""
    broker = InMemoryBroker(clock=FakeClock())
    broker.publish(QUEUE, Envelope(body=b"{}"))

    def handler(message: Envelope) -> None:
        raise Unrecoverable("gone")

    _drain(_consume(is_async, broker, handler, sink=False))
    [span] = tracing.named(f"{QUEUE} process")
    assert span.attributes["failsafe.queue.outcome"] == "parked"
    assert [letter.place for letter in broker.dead_letters(QUEUE)] == [Place.PARKED]


class LosingBroker(InMemoryBroker):
    """An in-memory broker whose acks always find the reservation gone."""

    def ack(self, delivery: Delivery) -> None:
        raise SettleConflict("the lease ran out")


def test_an_ack_that_fails_is_outcome_unsettled(tracing: FakeTracing) -> None:
    """A handled message whose ack fails is ``unsettled``: the broker will hand it out again."""
    broker = LosingBroker(clock=FakeClock())
    broker.publish(QUEUE, Envelope(body=b"{}"))
    _drain(_consume(False, broker, lambda message: None))
    [span] = tracing.named(f"{QUEUE} process")
    assert span.attributes["failsafe.queue.outcome"] == "unsettled"
    assert span.error is None


def test_a_cancelled_async_handler_is_outcome_released(tracing: FakeTracing) -> None:
    """An AsyncConsumer handler cancelled mid-way releases its message: outcome ``released``."""
    broker = InMemoryBroker(clock=FakeClock())
    broker.publish(QUEUE, Envelope(body=b"{}"))
    started = asyncio.Event()

    async def handler(message: Envelope) -> None:
        started.set()
        await asyncio.Event().wait()  # never set

    consumer = AsyncConsumer(as_async(broker), QUEUE, handler, clock=broker.clock)

    async def main() -> None:
        [delivery] = broker.receive(QUEUE)
        task = asyncio.create_task(consumer.handle(delivery))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    [span] = tracing.named(f"{QUEUE} process")
    assert span.attributes["failsafe.queue.outcome"] == "released"
    assert len(broker.messages(QUEUE)) == 1


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_redelivery_and_parking_keep_the_original_traceparent(
    tracing: FakeTracing, kind: str, tmp_path: Path
) -> None:
    """The DLQ and the parking queue keep the publisher's traceparent; each round continues it."""
    clock = FakeClock()
    broker: Any = (
        InMemoryBroker(clock=clock)
        if kind == "memory"
        else SQLiteBroker(tmp_path / "queue.db", clock=clock)
    )

    def handler(message: Envelope) -> None:
        raise ConnectionError("down")

    policy = Redelivery(immediate=0, delayed=1, delay=60.0)
    consumer = Consumer(broker, QUEUE, handler, redelivery=policy, clock=clock)
    try:
        with tracing.span("checkout", kind="internal", attributes={}):
            broker.publish(QUEUE, Envelope(body=b"{}", id="m1"))
        [producer] = tracing.named(f"{QUEUE} publish")
        original = _traceparent(producer)
        consumer.process_available()
        [delayed] = broker.dead_letters(QUEUE)
        assert delayed.place is Place.DELAYED
        assert delayed.message.headers["traceparent"] == original
        clock.advance(60)
        consumer.process_available()
        [parked] = broker.dead_letters(QUEUE)
        assert parked.place is Place.PARKED
        assert parked.message.headers["traceparent"] == original
        assert broker.replay(QUEUE, ["m1"]) == 1
        [replayed] = broker.receive(QUEUE)
        assert replayed.message.headers["traceparent"] == original
        rounds = tracing.named(f"{QUEUE} process")
        assert [s.parent_id for s in rounds] == [producer.span_id, producer.span_id]
        assert [s.attributes["failsafe.queue.outcome"] for s in rounds] == [
            "redelivered",
            "parked",
        ]
        assert len(tracing.named(f"{QUEUE} publish")) == 1  # deferring is not publishing
    finally:
        broker.close()


def test_without_tracing_no_span_and_no_trace_in_the_handler() -> None:
    """With no tracing installed, the handler runs outside any trace and headers stay empty."""
    assert _tracing.installed() is None
    broker = InMemoryBroker(clock=FakeClock())
    broker.publish(QUEUE, Envelope(body=b"{}"))
    seen: list[object] = []

    def handler(message: Envelope) -> None:
        seen.append((current_trace_id(), dict(message.headers)))

    assert Consumer(broker, QUEUE, handler, clock=broker.clock).process_available() == 1
    assert seen == [(None, {})]


class PlainBroker:
    """A broker of the user's (forwarding to an in-memory one) that names no system."""

    def __init__(self) -> None:
        self.inner = InMemoryBroker(clock=FakeClock())

    def __getattr__(self, name: str) -> Any:
        if name == "messaging_system":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_messaging_system_names_the_adapter_through_views(
    tracing: FakeTracing, tmp_path: Path
) -> None:
    """Spans name the adapter's system, looking through views; an unnamed broker is unknown."""
    sqlite = AsyncSQLiteBroker(tmp_path / "queue.db", clock=FakeClock())
    plain = PlainBroker()
    memory = InMemoryBroker(clock=FakeClock())

    async def handler(message: Envelope) -> None:
        return None

    async def consume_async() -> None:
        for broker in (sqlite, as_async(memory)):
            await broker.publish(QUEUE, Envelope(body=b"{}"))
            await AsyncConsumer(broker, QUEUE, handler).process_available()

    try:
        asyncio.run(consume_async())
        plain.publish(QUEUE, Envelope(body=b"{}"))
        Consumer(plain, QUEUE, lambda message: None).process_available()  # type: ignore[arg-type]
    finally:
        sqlite.sqlite.close()
    systems = [
        (s.attributes["messaging.system"], s.kind)
        for s in tracing.spans
        if s.kind in ("producer", "consumer")
    ]
    assert systems == [
        ("failsafe.sqlite", "producer"),
        ("failsafe.sqlite", "consumer"),
        ("failsafe.memory", "producer"),
        ("failsafe.memory", "consumer"),
        ("failsafe.memory", "producer"),  # the adapter under the user's broker published it
        ("unknown", "consumer"),
    ]


# -- RabbitMQ, on the real server -----------------------------------------------------------------
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def _delete_queues(names: frozenset[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBIT_URL)
    channel = await connection.channel()
    for name in names:
        await channel.queue_delete(name)
    await connection.close()


@pytest.mark.rabbitmq
@pytest.mark.real_time
def test_rabbitmq_publish_carries_the_trace_and_parking_keeps_it(tracing: FakeTracing) -> None:
    """On RabbitMQ the message carries the producer span; parked, it keeps it; spans nest."""
    from failsafe.queue.rabbitmq import RabbitMQBroker

    queue = f"trace.{uuid.uuid4().hex[:10]}"

    async def main() -> frozenset[str]:
        broker = RabbitMQBroker(RABBIT_URL)
        try:
            await broker.declare(queue)
            with tracing.span("checkout", kind="internal", attributes={}):
                await broker.publish(queue, Envelope(body=b"{}", id="m1"))

            async def handler(message: Envelope) -> None:
                raise Unrecoverable("order not found")

            consumer = AsyncConsumer(broker, queue, handler, poll=0.1)
            assert await consumer.process_available() == 1
            [producer] = tracing.named(f"{queue} publish")
            assert producer.attributes["messaging.system"] == "rabbitmq"
            [span] = tracing.named(f"{queue} process")
            assert span.attributes["messaging.system"] == "rabbitmq"
            assert (span.trace_id, span.parent_id) == (producer.trace_id, producer.span_id)
            assert span.attributes["failsafe.queue.outcome"] == "parked"
            [parked] = await broker.dead_letters(queue)
            assert parked.message.headers["traceparent"] == _traceparent(producer)
            return broker.declared
        finally:
            await broker.aclose()

    declared = asyncio.run(main())
    asyncio.run(_delete_queues(declared))


@pytest.mark.rabbitmq
@pytest.mark.real_time
def test_rabbitmq_blocking_view_publishes_in_the_callers_trace(tracing: FakeTracing) -> None:
    """Through as_blocking, the producer span is the caller's child, not a stray root."""
    from failsafe.queue.rabbitmq import RabbitMQBroker

    queue = f"trace.{uuid.uuid4().hex[:10]}"
    broker = as_blocking(lambda: RabbitMQBroker(RABBIT_URL))
    try:
        broker.declare(queue)
        with tracing.span("checkout", kind="internal", attributes={}) as outer:
            broker.publish(queue, Envelope(body=b"{}"))
        [producer] = tracing.named(f"{queue} publish")
        assert (producer.trace_id, producer.parent_id) == (outer.trace_id, outer.span_id)
        assert producer.attributes["messaging.system"] == "rabbitmq"
        [delivery] = broker.receive(queue, wait=5.0)
        assert delivery.message.headers["traceparent"] == _traceparent(producer)
        broker.ack(delivery)
        declared = broker.broker.declared  # type: ignore[attr-defined]
    finally:
        broker.close()
    asyncio.run(_delete_queues(declared))


# -- the real OpenTelemetry SDK ------------------------------------------------------------------
def test_opentelemetry_consumer_span_is_the_producer_spans_child() -> None:
    """With the OpenTelemetry SDK, publish and consume form one trace: producer, then consumer."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    from failsafe.opentelemetry import OpenTelemetryTracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = _tracing.install(OpenTelemetryTracing(provider))
    try:
        broker = InMemoryBroker(clock=FakeClock())
        with provider.get_tracer("test").start_as_current_span("checkout"):
            broker.publish(QUEUE, Envelope(body=b"{}", id="m1"))

        def handler(message: Envelope) -> None:
            raise Unrecoverable(SECRET)

        Consumer(broker, QUEUE, handler, clock=broker.clock).process_available()
    finally:
        _tracing.install(previous)
        provider.shutdown()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    checkout, producer, consumer = (
        spans["checkout"],
        spans[f"{QUEUE} publish"],
        spans[f"{QUEUE} process"],
    )
    assert producer.kind is SpanKind.PRODUCER
    assert consumer.kind is SpanKind.CONSUMER
    assert producer.parent is not None
    assert consumer.parent is not None
    assert producer.parent.span_id == checkout.context.span_id
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == checkout.context.trace_id
    attributes = dict(consumer.attributes or {})
    assert attributes["failsafe.queue.outcome"] == "parked"
    assert attributes["error.type"] == "failsafe.queue.redelivery.Unrecoverable"
    assert attributes["messaging.message.id"] == "m1"
    assert consumer.status.status_code is StatusCode.ERROR
    assert SECRET not in repr(consumer.to_json())


def test_memory_publish_refuses_what_is_not_an_envelope(tracing: FakeTracing) -> None:
    """The in-memory broker refuses a non-envelope by name, as the other adapters do."""
    broker = InMemoryBroker(clock=FakeClock())
    with pytest.raises(ConfigurationError) as raised:
        broker.publish(QUEUE, b"{}")  # type: ignore[arg-type]
    assert raised.value.option == "message"
    assert tracing.spans == []
