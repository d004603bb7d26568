"""`RabbitMQBroker`: the `AsyncBroker` protocol on RabbitMQ, through aio-pika.

Install with ``pip install "failsafe-kit[rabbitmq]"``. Only this module imports ``aio_pika``;
``failsafe.queue`` does not.

Topology (every queue durable and of type **quorum**, so a message survives a node restart
and RabbitMQ counts its deliveries):

- ``{queue}``, the **work queue**. Arguments: ``x-queue-type: quorum``, ``x-delivery-limit``
  (only when ``delivery_limit`` is given), and a dead-letter route to the parking queue
  (``x-dead-letter-exchange: ""``, ``x-dead-letter-routing-key: {queue}.parked``,
  ``x-dead-letter-strategy: at-least-once``, ``x-overflow: reject-publish``), so a message
  RabbitMQ gives up on at its delivery limit is parked, not dropped.
- ``{queue}.parked``, the **parking queue** (``x-queue-type: quorum``).
- ``{queue}.delay.{ms}``, one **delay queue** per distinct delay, created on first use:
  ``x-message-ttl: {ms}`` and a dead-letter route back to the work queue
  (``x-dead-letter-exchange: ""``, ``x-dead-letter-routing-key: {queue}``) with
  ``x-dead-letter-strategy: at-least-once`` (which requires ``x-overflow: reject-publish``):
  an expired message is moved to the work queue and removed from the delay queue only once
  the work queue has confirmed it, so no message is lost on the way back. Delays are rounded
  up to whole milliseconds; since every message in one delay queue has the same TTL, the
  queue's head always expires first and each message comes back on time. Each distinct delay
  is a queue of its own: prefer a few fixed delays to finely jittered ones.
- ``{queue}.delays``, the **index of the delay queues** (durable, and ``classic``, so that
  reading it counts against no delivery limit): one message per delay queue, its
  milliseconds as the body, written (confirmed) by a broker before it first declares that
  delay queue. AMQP cannot list queues: the DLQ tools of another process find the delay
  queues through it, to say how many messages wait there.

Message mapping (an `Envelope` onto an AMQP message, published persistent, with publisher
confirms, ``mandatory``):

- ``body`` is the body, raw; ``id`` the ``message_id``; ``content_type`` the
  ``content_type``; application ``headers`` the AMQP headers (as strings);
- failsafe's counts travel in headers named ``x-failsafe-*``: ``immediate-attempts`` and
  ``delayed-attempts`` (integers), ``first-seen`` (a float, written as text so that it
  round-trips exactly: AMQP tables carry floats in single precision), ``error-type``,
  ``error-message`` and ``error-at`` (the last error), and ``parked-at`` on a parked message.

A message published by anything else (a plain aio-pika or pika publisher) is still a valid
envelope: no ``x-failsafe-*`` headers means zero counts; an invalid ``x-failsafe-*`` value is
ignored (as if absent); a missing ``content_type`` reads as ``application/octet-stream``;
header values that are not strings become text (bytes as UTF-8, numbers with ``str``, tables
and arrays as JSON); RabbitMQ's own headers (``x-death``, ``x-delivery-count``,
``x-first-death-*``, ``x-last-death-*``) are left out. A message with no ``message_id`` gets
an id derived from its content (the SHA-256 of its body, timestamp, correlation id, app id
and headers, as 32 hex digits): every redelivery of that message gets the same id, so an
idempotent consumer can recognise it, but two identical messages without ids share one.
Once failsafe defers or parks such a message it writes that id as its ``message_id``.

Deliveries: each work queue has a channel of its own, and a consumer on it
(``basic.consume``, with ``prefetch`` unacknowledged messages at most) started by the first
`receive` that waits; deliveries wait in a local buffer until `receive` takes them. A
`receive` that finds nothing there by its deadline asks the queue with ``basic.get`` for
what is ready now, so ``receive(wait=0)`` (and ``process_available``) sees a message
already in the queue rather than one a consumer's prefetch would bring a moment later.
`Delivery.deliveries` is RabbitMQ's ``x-delivery-count`` header plus one. RabbitMQ 3.10
increments that count whenever a message goes back to its queue: after its connection or
channel closed with it unacknowledged (including messages prefetched but not yet received),
and on `release` (a ``basic.nack`` with requeue), so a released message comes back with
``deliveries`` one higher (a floor that errs on the side of caution).

Settling: `ack` is ``basic.ack``, `release` ``basic.nack(requeue=True)``; `defer` publishes
the updated message to the delay queue and `park` to the parking queue (each confirmed by
RabbitMQ) and only then acknowledges the delivery, so a crash in between leaves a duplicate
(the original comes back to the work queue too), never a loss. ``basic.ack`` has no reply in
AMQP 0-9-1: if the connection drops before RabbitMQ reads it, the message is delivered
again (at-least-once). A delivery already settled, or whose channel has closed since (the
connection dropped and was restored: RabbitMQ has put the message back), raises
`SettleConflict` without sending anything, so the channel stays open.

The DLQ tools (`dead_letter_page`, `count_dead_letters`, `replay_batch`, `purge_batch`,
`dead_letters`, `replay`, `purge`, `count_unlisted_delayed`) never declare a queue: they ask
with passive declares, and raise `NoSuchQueue` when neither the work queue nor its parking
queue exists (a misspelt ``--queue`` used to create both). They read the parking queue in
**passes**: a consumer on a
channel of its own, with a prefetch of what the pass still needs, holding what it reads
unacknowledged and putting back what it leaves by closing that channel. RabbitMQ cannot
browse a queue, so a pass always starts at the head: a page far into the parking queue
costs reading every message before it, and a pass reads ``dlq_browse_limit`` messages at
most (10,000 by default; a page that stops there says it is ``truncated``). A replay
publishes the pass's matches to the work queue (confirmed) before acknowledging them, then
makes sure RabbitMQ has applied the acknowledgements before the channel closes
(rabbitmq/rabbitmq-server#10327 would put some back: duplicates), and waits (2 s at most)
until the messages it put back are ready again, so that the next pass sees them. Passes
of one broker on one queue take turns; passes of other processes running at the same
time may see part of the queue. Messages waiting in delay queues are **not** listed:
RabbitMQ cannot read a queue without taking its head, which would disturb the TTL timers.
`count_unlisted_delayed` says how many wait there (the index names the delay queues, a
passive declare of each counts its messages).
`DeadLetter.since` is when the message was parked. The rate of a replay is bounded by
RabbitMQ's publisher confirms on the quorum work queue (about 1,000 to 2,000 messages a
second on one loopback node), not by the DLQ tools.

The connection is ``aio_pika.connect_robust``: when RabbitMQ restarts it reconnects (every
``reconnect_interval`` seconds) and restores the consumers; deliveries handed out before then raise
`SettleConflict` when settled. An operation that cannot reach RabbitMQ within ``timeout``
raises `BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import decimal
import hashlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from failsafe._extras import missing_extra

try:
    import aio_pika
    import aio_pika.abc
    import aio_pika.exceptions
    import aiormq.exceptions
except ImportError as exc:
    raise missing_extra("rabbitmq", "failsafe.queue.rabbitmq", exc) from exc
import attrs

from failsafe import _tracing
from failsafe import _validators as _v
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.exceptions import ConfigurationError
from failsafe.queue import _trace
from failsafe.queue.broker import (
    COUNT_LIMIT,
    BrokerError,
    BrokerUnavailable,
    DeadLetter,
    DeadLetterBatch,
    DeadLetterCount,
    DeadLetterCursor,
    DeadLetterFilter,
    DeadLetterPage,
    Delivery,
    NoSuchQueue,
    Place,
    SettleConflict,
    UnlistedDelayed,
)
from failsafe.queue.envelope import Envelope, ErrorInfo
from failsafe.queue.memory import check_queue_name

__all__ = ["DEFAULT_URL", "RabbitMQBroker"]

_log = logging.getLogger("failsafe.queue.rabbitmq")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
"""The URL `RabbitMQBroker` connects to by default (a local server, guest account)."""

_PREFIX = "x-failsafe-"
_IMMEDIATE = "x-failsafe-immediate-attempts"
_DELAYED = "x-failsafe-delayed-attempts"
_FIRST_SEEN = "x-failsafe-first-seen"
_ERROR_TYPE = "x-failsafe-error-type"
_ERROR_MESSAGE = "x-failsafe-error-message"
_ERROR_AT = "x-failsafe-error-at"
_PARKED_AT = "x-failsafe-parked-at"
_BROKER_HEADERS = frozenset({"x-death", "x-delivery-count"})
_BROKER_PREFIXES = ("x-first-death-", "x-last-death-")
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_MAX_NAME_BYTES = 255  # RabbitMQ's limit on a queue name
_MAX_SUFFIX = len(".delay.") + 10  # the longest name derived from a work queue's
_MAX_TTL_MS = 2**32 - 1  # the largest x-message-ttl RabbitMQ accepts
_IDLE = 1.0  # seconds a DLQ pass waits for a counted message before taking the queue as read
_SETTLE_WAIT = 2.0  # seconds a DLQ pass waits at most for the messages it put back
_SETTLE_POLL = 0.005  # seconds between looks at the parking queue's count meanwhile
_UNLISTED = (
    "they cannot be listed on RabbitMQ: a delay queue is read only by taking its messages, "
    "which would disturb their timers"
)


def _reserved_header(name: str) -> bool:
    return name.startswith(_PREFIX) or name in _BROKER_HEADERS or name.startswith(_BROKER_PREFIXES)


def _check_name(queue: object) -> str:
    name = check_queue_name(queue)
    if name.startswith("amq."):
        raise ConfigurationError("queue", f"names starting with 'amq.' are RabbitMQ's: {name!r}")
    if len(name.encode()) > _MAX_NAME_BYTES - _MAX_SUFFIX:
        raise ConfigurationError(
            "queue",
            f"must be at most {_MAX_NAME_BYTES - _MAX_SUFFIX} bytes in UTF-8 (RabbitMQ's limit "
            f"is {_MAX_NAME_BYTES}, less room for the delay queues' suffix): {name!r}",
        )
    return name


def _delay_ms(delay: float) -> int:
    _v.check("delay", delay, _v.number(at_least=0))
    ms = max(1, math.ceil(delay * 1000 - 1e-6))
    if ms > _MAX_TTL_MS:
        raise ConfigurationError(
            "delay", f"must be at most {_MAX_TTL_MS / 1000:g} s on RabbitMQ, got {delay!r}"
        )
    return ms


def _redact(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    except ValueError:
        return "<the given URL>"


# -- the envelope on the wire ----------------------------------------------------------------
def _as_text(value: object) -> str | None:
    """A header value as text (``None``: leave the header out)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | decimal.Decimal):
        return str(value)
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str | bytes):
        try:
            value = int(value)
        except ValueError:
            return None
    if isinstance(value, int) and value >= 0:
        return value
    return None


def _time(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    try:
        if isinstance(value, str | bytes | int | float | decimal.Decimal):
            number = float(value)
            if math.isfinite(number) and number >= 0:
                return number
    except ValueError:
        pass
    return None


def _derived_id(
    body: bytes,
    timestamp: object,
    correlation_id: object,
    app_id: object,
    headers: Mapping[str, Any],
) -> str:
    digest = hashlib.sha256()
    stamp = _time(timestamp)
    fields = [
        "" if stamp is None else repr(stamp),
        str(correlation_id or ""),
        str(app_id or ""),
        json.dumps(
            {k: _as_text(v) for k, v in headers.items() if not _reserved_header(k)},
            sort_keys=True,
        ),
    ]
    for field in fields:
        data = field.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)
    digest.update(body)
    return digest.hexdigest()[:32]


def _envelope(message: aio_pika.abc.AbstractMessage) -> Envelope:
    """Read any AMQP message as an envelope (never raises for a message's content)."""
    raw: Mapping[str, Any] = message.headers or {}
    headers = {}
    for key, value in raw.items():
        if not isinstance(key, str) or _reserved_header(key):
            continue
        text = _as_text(value)
        if text is not None:
            headers[key] = text
    body = bytes(message.body)
    message_id = message.message_id or _derived_id(
        body, message.timestamp, message.correlation_id, message.app_id, raw
    )
    last_error = None
    error_type = _as_text(raw.get(_ERROR_TYPE))
    error_at = _time(raw.get(_ERROR_AT))
    if error_type and error_at is not None:
        last_error = ErrorInfo(
            type=error_type, message=_as_text(raw.get(_ERROR_MESSAGE)) or "", at=error_at
        )
    return Envelope(
        body=body,
        id=message_id,
        content_type=message.content_type or _DEFAULT_CONTENT_TYPE,
        headers=headers,
        immediate_attempts=_count(raw.get(_IMMEDIATE)) or 0,
        delayed_attempts=_count(raw.get(_DELAYED)) or 0,
        first_seen=_time(raw.get(_FIRST_SEEN)),
        last_error=last_error,
    )


def _amqp_message(envelope: Envelope, now: float, **extra: Any) -> aio_pika.Message:
    """The envelope as a persistent AMQP message (``extra``: more ``x-failsafe-`` headers)."""
    headers: dict[str, Any] = {}
    for key, value in envelope.headers.items():
        if _reserved_header(key):
            raise ConfigurationError(
                "headers",
                f"{key!r} is reserved on RabbitMQ (x-failsafe-*, x-death, x-delivery-count, "
                "x-first-death-*, x-last-death-*)",
            )
        headers[key] = value
    headers[_IMMEDIATE] = envelope.immediate_attempts
    headers[_DELAYED] = envelope.delayed_attempts
    if envelope.first_seen is not None:
        headers[_FIRST_SEEN] = repr(float(envelope.first_seen))
    if envelope.last_error is not None:
        headers[_ERROR_TYPE] = envelope.last_error.type
        headers[_ERROR_MESSAGE] = envelope.last_error.message
        headers[_ERROR_AT] = repr(float(envelope.last_error.at))
    headers.update(extra)
    return aio_pika.Message(
        body=envelope.body,
        message_id=envelope.id,
        content_type=envelope.content_type,
        headers=headers,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=_dt.datetime.fromtimestamp(int(now), _dt.UTC),
    )


def _channel_open(message: aio_pika.abc.AbstractIncomingMessage) -> bool:
    """Whether the channel the message came on is still open (its delivery tag still valid)."""
    try:
        return not message.channel.is_closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return False


def _deliveries(message: aio_pika.abc.AbstractIncomingMessage) -> int:
    count = _count((message.headers or {}).get("x-delivery-count"))
    if count is not None:
        return count + 1
    return 2 if message.redelivered else 1


# -- state ---------------------------------------------------------------------------------
@attrs.define(eq=False)
class _Token:
    """What a `Delivery` holds: the AMQP message, and whether it has been settled."""

    message: aio_pika.abc.AbstractIncomingMessage
    settled: bool = False


@attrs.define(eq=False)
class _Taken:
    """A parked message a DLQ pass holds (unacknowledged), and how it reads."""

    message: aio_pika.abc.AbstractIncomingMessage
    letter: DeadLetter


class _Reader:
    """Reads a queue's messages in order, ``limit`` at most, through consumers in windows.

    Each window is a consumer whose prefetch is the messages still wanted (at least what
    the caller asks for, doubling when a window falls short), so no more is in flight and
    unacknowledged than the pass needs. Messages stay unacknowledged until the channel
    closes or the caller settles them.

    How many there are to read comes from a passive ``queue.declare`` (the messages ready,
    not held by anyone), asked again when that many have been read: messages another
    pass's channel put back just before are counted late, and are read all the same.
    """

    def __init__(
        self, channel: aio_pika.abc.AbstractChannel, queue: aio_pika.abc.AbstractQueue, limit: int
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.limit = limit  # messages to read at most (dlq_browse_limit)
        self.total = 0  # messages known to be there to read
        self.granted = 0  # deliveries the windows so far allow
        self.read = 0
        self.window = 0
        self.truncated = False  # stopped at ``limit`` with more there
        self.seen = 0  # the most messages counted there at once (read + ready)
        self.tag: str | None = None
        self.buffer: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def _arrived(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.buffer.put_nowait(message)

    async def _count(self) -> bool:
        """Ask how many more are ready; return whether there is one more to read."""
        declared = await self.channel.declare_queue(self.queue.name, passive=True, durable=True)
        ready = declared.declaration_result.message_count or 0
        self.seen = max(self.seen, self.read + ready)
        self.total = min(self.read + ready, self.limit)
        self.truncated = self.read + ready > self.limit
        return self.read < self.total

    async def next(self, wanted: int) -> aio_pika.abc.AbstractIncomingMessage | None:
        """The next message (``wanted``: how many the caller may still need, this one too).

        ``None`` at the end: none left, ``limit`` read (``truncated`` says whether more
        were there), or none came within `_IDLE` seconds although some were counted (held
        by another pass, or taken meanwhile).
        """
        if self.read >= self.total and not await self._count():
            return None
        if self.read >= self.granted:
            await self.stop()
            self.window = min(self.total - self.read, max(wanted, 2 * self.window))
            await self.channel.set_qos(prefetch_count=self.window)
            self.tag = await self.queue.consume(self._arrived, no_ack=False)
            self.granted = self.read + self.window
        try:
            async with asyncio.timeout(_IDLE):
                message = await self.buffer.get()
        except TimeoutError:
            return None
        self.read += 1
        return message

    async def stop(self) -> None:
        """Cancel the current window's consumer (what it delivered stays held)."""
        if self.tag is not None:
            tag, self.tag = self.tag, None
            await self.queue.cancel(tag)


@attrs.define(eq=False)
class _Consumer:
    """A work queue's channel: ``basic.get`` on it, and its consumer once one is started."""

    channel: aio_pika.abc.AbstractRobustChannel
    queue: aio_pika.abc.AbstractQueue
    buffer: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]
    consuming: bool = False


class RabbitMQBroker:
    """The `AsyncBroker` protocol on RabbitMQ (quorum queues, TTL delay queues).

    See the module documentation for the queues, their arguments and the message headers.

    Args:
        url: The AMQP URL of the server (``amqp://user:password@host:port/vhost``).
        prefetch: Unacknowledged messages each work queue's consumer may hold at most
            (RabbitMQ's per-consumer ``basic.qos``): received ones plus those waiting in
            the local buffer.
        delivery_limit: RabbitMQ's ``x-delivery-limit`` on the work queues: once a message
            has gone back to its queue more times than this (released, or its consumer
            lost), RabbitMQ moves it to the parking queue itself. ``None``: no limit.
            Every process declaring a queue must use the same value (else `declare` raises
            `BrokerError`: the queue's arguments differ).
        connect_timeout: Seconds to wait for the first connection.
        timeout: Seconds one operation may wait for RabbitMQ (for instance while the
            connection is being restored) before raising `BrokerUnavailable`.
        reconnect_interval: Seconds between attempts to restore a lost connection.
        clock: Wall-clock time for the stamps it writes (when a message was parked, the AMQP
            ``timestamp``); delays run on RabbitMQ's own TTL timers.
        dlq_browse_limit: Parked messages one pass of the DLQ tools reads at most (and so
            holds unacknowledged at once): a listing, a count with filters, a replay or a
            purge looks no further into the parking queue than this.

    Raises:
        ConfigurationError: At construction, naming a bad option.

    It connects on first use, or with `connect()` / ``async with``. One instance belongs to
    one event loop; for blocking code wrap it with
    [`as_blocking`][failsafe.queue.as_blocking]
    (``as_blocking(lambda: RabbitMQBroker(url))``).

    Example:
        ```python
        from failsafe.queue import Envelope
        from failsafe.queue.rabbitmq import RabbitMQBroker

        async with RabbitMQBroker("amqp://guest:guest@localhost/") as broker:
            await broker.declare("orders")
            await broker.publish("orders", Envelope(body=b'{"orderId": "o-1"}'))
        ```
    """

    #: Consumers may have every worker wait in `receive` at once (a wait costs no thread).
    concurrent_receive = True

    #: The ``messaging.system`` of its spans.
    messaging_system: ClassVar[str] = "rabbitmq"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefetch: int = 32,
        delivery_limit: int | None = None,
        connect_timeout: float = 10.0,
        timeout: float = 30.0,
        reconnect_interval: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        dlq_browse_limit: int = 10_000,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
            raise ConfigurationError("url", f"must be an amqp:// or amqps:// URL, got {url!r}")
        _v.check("prefetch", prefetch, _v.integer(1))
        if prefetch > 65535:
            raise ConfigurationError("prefetch", f"must be at most 65535, got {prefetch!r}")
        if delivery_limit is not None:
            _v.check("delivery_limit", delivery_limit, _v.integer(1))
        _v.check("connect_timeout", connect_timeout, _v.number(above=0))
        _v.check("timeout", timeout, _v.number(above=0))
        _v.check("reconnect_interval", reconnect_interval, _v.number(above=0))
        _v.check("dlq_browse_limit", dlq_browse_limit, _v.integer(1))
        self.url = url
        self.prefetch = prefetch
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.reconnect_interval = float(reconnect_interval)
        self.clock = clock
        self.dlq_browse_limit = dlq_browse_limit
        self._limit = delivery_limit
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: aio_pika.abc.AbstractRobustChannel | None = None
        self._consumers: dict[str, _Consumer] = {}
        self._declared: set[str] = set()
        self._connect_lock = asyncio.Lock()
        self._declare_lock = asyncio.Lock()
        self._consume_lock = asyncio.Lock()
        self._dlq_locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    # -- connection ----------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect now (otherwise the first operation does).

        Raises:
            BrokerUnavailable: If the server cannot be reached within ``connect_timeout``.
        """
        await self._connected()

    async def __aenter__(self) -> RabbitMQBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _connected(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._closed:
            raise BrokerError("this RabbitMQBroker is closed")
        if self._connection is not None:
            return self._connection
        async with self._connect_lock:
            if self._connection is not None:
                return self._connection
            try:
                async with asyncio.timeout(self.connect_timeout):
                    connection = await aio_pika.connect_robust(
                        self.url,
                        timeout=self.connect_timeout,
                        reconnect_interval=self.reconnect_interval,
                    )
            except TimeoutError as exc:
                raise BrokerUnavailable(
                    f"cannot reach RabbitMQ at {_redact(self.url)}: no connection within "
                    f"{self.connect_timeout:g} s"
                ) from exc
            except aio_pika.exceptions.ProbableAuthenticationError as exc:
                raise BrokerUnavailable(
                    f"RabbitMQ at {_redact(self.url)} refused the login (check the user and "
                    f"password in the URL): {exc}"
                ) from exc
            except (OSError, aio_pika.exceptions.AMQPError) as exc:
                raise BrokerUnavailable(
                    f"cannot reach RabbitMQ at {_redact(self.url)}: {exc}"
                ) from exc
            try:
                publisher = connection.channel(publisher_confirms=True, on_return_raises=True)
                async with asyncio.timeout(self.timeout):
                    await publisher.initialize()
            except BaseException:
                await connection.close()
                raise
            self._publisher = publisher
            self._connection = connection
            return connection

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """Run an operation under ``timeout``, turning client errors into broker errors."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except (BrokerError, ConfigurationError):
            raise
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"{what}: RabbitMQ at {_redact(self.url)} did not answer within {self.timeout:g} s"
            ) from exc
        except (
            aio_pika.exceptions.AMQPConnectionError,
            aio_pika.exceptions.ChannelInvalidStateError,
            ConnectionError,
            OSError,
        ) as exc:
            raise BrokerUnavailable(
                f"{what}: lost the connection to RabbitMQ at {_redact(self.url)}: {exc!r}"
            ) from exc
        except aio_pika.exceptions.AMQPError as exc:
            raise BrokerError(f"{what}: RabbitMQ refused: {exc!r}") from exc

    async def _channel(self) -> aio_pika.Channel:
        """A plain (not restored on reconnect) channel, for one declaration or one DLQ pass."""
        connection = await self._connected()
        await connection.ready()  # while the connection is being restored, wait for it
        channel = aio_pika.Channel(connection, publisher_confirms=False)
        await channel.initialize()
        return channel

    @staticmethod
    async def _close_channel(channel: aio_pika.abc.AbstractChannel) -> None:
        if channel.is_closed:
            return
        with contextlib.suppress(Exception):
            await channel.close()

    # -- topology --------------------------------------------------------------------------
    def _work_arguments(self, queue: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{queue}.parked",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        if self._limit is not None:
            arguments["x-delivery-limit"] = self._limit
        return arguments

    @staticmethod
    def _delay_arguments(queue: str, ms: int) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def _declare_one(self, name: str, arguments: dict[str, Any]) -> None:
        if name in self._declared:
            return
        channel = await self._channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise BrokerError(
                f"queue {name!r} already exists on RabbitMQ with different arguments than "
                f"failsafe declares ({arguments!r}); RabbitMQ said: {exc}. Delete it or use "
                "another queue name (a different delivery_limit also counts as different)"
            ) from exc
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise BrokerError(f"RabbitMQ refused to declare queue {name!r}: {exc}") from exc
        finally:
            await self._close_channel(channel)
        self._declared.add(name)

    async def _ensure(self, queue: str) -> None:
        if queue in self._declared and f"{queue}.parked" in self._declared:
            return
        async with self._declare_lock:
            await self._declare_one(f"{queue}.parked", {"x-queue-type": "quorum"})
            await self._declare_one(queue, self._work_arguments(queue))

    async def _delay_queue(self, queue: str, ms: int) -> str:
        name = f"{queue}.delay.{ms}"
        if name not in self._declared:
            async with self._declare_lock:
                if name not in self._declared:
                    await self._index_delay(queue, ms)
                    await self._declare_one(name, self._delay_arguments(queue, ms))
        return name

    async def _index_delay(self, queue: str, ms: int) -> None:
        """Write ``ms`` in ``queue``'s index of delay queues (confirmed), before declaring it.

        AMQP cannot list queues, so the DLQ tools of another process find the delay queues
        (to count what waits there) through this index: one message per delay queue, its
        milliseconds as the body. It is written first, so that no delay queue holds a
        message without being in the index; each broker writes each delay once, and the
        DLQ tools drop the duplicates.
        """
        index = f"{queue}.delays"
        await self._declare_one(index, {"x-queue-type": "classic"})
        await self._publish(
            index,
            aio_pika.Message(
                str(ms).encode(),
                content_type="text/plain",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
        )

    @property
    def declared(self) -> frozenset[str]:
        """Every RabbitMQ queue this broker has declared so far (work, parking, delay)."""
        return frozenset(self._declared)

    async def declare(self, queue: str) -> None:
        """Declare the work queue ``queue`` and its parking queue (idempotent).

        Delay queues are declared when first needed.

        Raises:
            ConfigurationError: For a name RabbitMQ cannot hold (naming ``queue``).
            BrokerError: If a queue exists with other arguments (naming it).
            BrokerUnavailable: If RabbitMQ cannot be reached.
        """
        _check_name(queue)
        async with self._guard(f"declaring {queue!r}"):
            self._declared -= {queue, f"{queue}.parked"}  # declare() asks the server again
            await self._ensure(queue)

    # -- publishing --------------------------------------------------------------------------
    async def _publish(self, routing_key: str, message: aio_pika.Message) -> None:
        await self._connected()
        publisher = self._publisher
        assert publisher is not None
        await publisher.ready()  # while the connection is being restored, wait for it
        try:
            await publisher.default_exchange.publish(
                message, routing_key=routing_key, mandatory=True
            )
        except aio_pika.exceptions.PublishError as exc:
            raise BrokerError(
                f"RabbitMQ could not route the message to queue {routing_key!r} (does it "
                f"exist?): {exc}"
            ) from exc
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerError(
                f"RabbitMQ refused the message for queue {routing_key!r}: {exc}"
            ) from exc

    async def _publish_envelope(
        self, queue: str, envelope: Envelope, delay: float, **extra: Any
    ) -> None:
        await self._ensure(queue)
        target = queue
        if delay > 0:
            target = await self._delay_queue(queue, _delay_ms(delay))
        await self._publish(target, _amqp_message(envelope, self.clock.time(), **extra))

    async def publish(self, queue: str, message: Envelope, *, delay: float = 0.0) -> None:
        """Publish ``message``; return once RabbitMQ has confirmed it (persistent).

        ``delay`` > 0 publishes it to the delay queue of that many milliseconds (rounded
        up), declared on first use, from where RabbitMQ moves it to the work queue when due.
        The work queue is declared if this broker has not declared it yet. With tracing
        installed, in a producer span whose ``traceparent`` the message carries (unless it
        has one already).
        """
        _check_name(queue)
        _v.check("delay", delay, _v.number(at_least=0))
        if not isinstance(message, Envelope):
            raise ConfigurationError("message", f"must be an Envelope, got {message!r}")
        tracing = _tracing.installed()
        if tracing is None:
            async with self._guard(f"publishing to {queue!r}"):
                await self._publish_envelope(queue, message, delay)
            return
        with _trace.publishing(tracing, self.messaging_system, queue, (message,)) as traced:
            async with self._guard(f"publishing to {queue!r}"):
                await self._publish_envelope(queue, traced[0], delay)

    # -- receiving -------------------------------------------------------------------------
    async def _consumer(self, queue: str) -> _Consumer:
        consumer = self._consumers.get(queue)
        if consumer is not None:
            return consumer
        async with self._consume_lock:
            consumer = self._consumers.get(queue)
            if consumer is not None:
                return consumer
            await self._ensure(queue)
            connection = await self._connected()
            channel = connection.channel(publisher_confirms=False)
            await channel.initialize()
            try:
                await channel.set_qos(prefetch_count=self.prefetch)
                work = await channel.declare_queue(
                    queue, durable=True, arguments=self._work_arguments(queue)
                )
            except BaseException:
                await self._close_channel(channel)
                raise
            consumer = _Consumer(channel, work, asyncio.Queue())
            self._consumers[queue] = consumer
            return consumer

    async def _consume(self, consumer: _Consumer) -> None:
        """Start the work queue's consumer (``basic.consume``), once."""
        async with self._consume_lock:
            if consumer.consuming:
                return
            buffer = consumer.buffer

            async def arrived(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                buffer.put_nowait(message)

            await consumer.queue.consume(arrived, no_ack=False)
            consumer.consuming = True

    async def _get_ready(self, consumer: _Consumer, limit: int) -> list[Delivery]:
        """Take up to ``limit`` messages ready in the work queue now, by ``basic.get``.

        Each ``basic.get`` is answered with a message or "empty": unlike a consumer's
        prefetch, which arrives a moment after ``basic.consume``, it sees what is already
        in the queue (``process_available`` on a fresh broker used to handle nothing).
        """
        out: list[Delivery] = []
        while len(out) < limit:
            message = await consumer.queue.get(no_ack=False, fail=False, timeout=self.timeout)
            if message is None:
                break
            out.append(self._delivery(consumer.queue.name, message))
        return out

    @staticmethod
    def _delivery(queue: str, message: aio_pika.abc.AbstractIncomingMessage) -> Delivery:
        return Delivery(
            queue=queue,
            message=_envelope(message),
            deliveries=_deliveries(message),
            token=_Token(message),
        )

    async def receive(self, queue: str, *, limit: int = 1, wait: float = 0.0) -> list[Delivery]:
        """Take up to ``limit`` messages of the work queue.

        First those the queue's consumer has received; a ``receive`` that waits
        (``wait`` > 0) starts that consumer on first use and waits up to ``wait`` seconds
        for the first message (``math.inf``: until one comes; cancel the call to stop
        waiting, nothing is lost). When none has come by then, it asks the queue itself with
        ``basic.get`` for the messages ready now, so that ``receive(wait=0)`` (what
        ``process_available`` calls) sees a message already in the queue, and a
        ``receive`` that does not wait never starts a consumer (whose prefetch would take
        the queue's messages out of ``basic.get``'s sight until they arrived). Messages
        whose channel closed while they waited in the buffer (RabbitMQ has put them back)
        are skipped.
        """
        consumer = self._consumers.get(queue)
        starting = wait > 0 and (consumer is None or not consumer.consuming)
        if consumer is None or starting or limit < 1 or not wait >= 0:  # the checks, once
            _check_name(queue)
            _v.check("limit", limit, _v.integer(1))
            if wait != math.inf:
                _v.check("wait", wait, _v.number(at_least=0))
            async with self._guard(f"receiving from {queue!r}"):
                consumer = await self._consumer(queue)
                if wait > 0:
                    await self._consume(consumer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        out: list[Delivery] = []
        while len(out) < limit:
            try:
                message = consumer.buffer.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if out or remaining <= 0:
                    break
                if remaining == math.inf:
                    message = await consumer.buffer.get()  # no timer to arm and disarm
                else:
                    try:
                        async with asyncio.timeout(remaining):
                            message = await consumer.buffer.get()
                    except TimeoutError:
                        break
            if message.processed or not _channel_open(message):
                continue  # its channel closed: RabbitMQ has put it back
            out.append(self._delivery(queue, message))
        if not out:
            async with self._guard(f"receiving from {queue!r}"):
                out = await self._get_ready(consumer, limit)
        return out

    # -- settling --------------------------------------------------------------------------
    def _claim(self, delivery: Delivery) -> _Token:
        """Mark the delivery settled (synchronously, so two settles cannot both proceed)."""
        token = delivery.token
        if not isinstance(token, _Token):
            raise ConfigurationError("delivery", "must come from this RabbitMQBroker's receive()")
        if token.settled or token.message.processed:
            raise SettleConflict(
                f"message {delivery.message.id} on {delivery.queue!r} was already settled"
            )
        if not _channel_open(token.message):
            raise SettleConflict(
                f"message {delivery.message.id} on {delivery.queue!r} is no longer reserved for "
                "this delivery: the channel it came on closed, and RabbitMQ puts it back"
            )
        token.settled = True
        return token

    async def _settle(
        self, delivery: Delivery, token: _Token, how: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            await how()  # basic.ack / basic.nack: a frame written, no answer awaited
        except (
            aio_pika.exceptions.ChannelInvalidStateError,
            aio_pika.exceptions.MessageProcessError,
            aio_pika.exceptions.AMQPError,
            ConnectionError,
            OSError,
            TimeoutError,
        ) as exc:
            raise SettleConflict(
                f"message {delivery.message.id} on {delivery.queue!r} could not be settled: "
                f"its channel closed ({exc!r}), and RabbitMQ puts it back"
            ) from exc

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge the delivery (``basic.ack``): RabbitMQ removes the message."""
        token = self._claim(delivery)
        await self._settle(delivery, token, token.message.ack)

    async def release(self, delivery: Delivery) -> None:
        """Give the message back at once (``basic.nack`` with requeue).

        RabbitMQ counts this in ``x-delivery-count``: the next delivery of the message has
        ``deliveries`` one higher.
        """
        token = self._claim(delivery)
        await self._settle(delivery, token, lambda: token.message.nack(requeue=True))

    async def _move(
        self, delivery: Delivery, message: Envelope, delay: float | None, what: str
    ) -> None:
        """Publish ``message`` (to the delay queue, or parked when ``delay`` is None), then ack."""
        if not isinstance(message, Envelope):
            raise ConfigurationError("message", f"must be an Envelope, got {message!r}")
        if message.id != delivery.message.id:
            raise ConfigurationError(
                "message", f"must keep the delivered message's id {delivery.message.id!r}"
            )
        queue = delivery.queue
        token = self._claim(delivery)
        try:
            async with self._guard(f"{what} message {message.id} of {queue!r}"):
                if delay is not None:
                    await self._publish_envelope(queue, message, delay)
                else:
                    await self._ensure(queue)
                    now = self.clock.time()
                    parked = _amqp_message(message, now, **{_PARKED_AT: repr(float(now))})
                    await self._publish(f"{queue}.parked", parked)
        except BaseException:
            token.settled = False  # nothing was moved: the delivery is still ours to settle
            raise
        # The copy is safe in RabbitMQ; if this ack is lost the original comes back too
        # (a duplicate, never a loss).
        await self._settle(delivery, token, token.message.ack)

    async def defer(self, delivery: Delivery, message: Envelope, delay: float) -> None:
        """Publish ``message`` to the delay queue for ``delay`` s (confirmed), then ack.

        A crash between the two leaves the original in the work queue as well: a duplicate,
        never a loss. ``delay`` is rounded up to whole milliseconds (0 goes straight back to
        the work queue).
        """
        _v.check("delay", delay, _v.number(at_least=0))
        await self._move(delivery, message, delay, "deferring")

    async def park(self, delivery: Delivery, message: Envelope) -> None:
        """Publish ``message`` to the parking queue (confirmed, stamped), then ack.

        A crash between the two leaves the original in the work queue as well: a duplicate,
        never a loss.
        """
        await self._move(delivery, message, None, "parking")

    # -- the DLQ tools -----------------------------------------------------------------------
    def _dlq_lock(self, queue: str) -> asyncio.Lock:
        return self._dlq_locks.setdefault(queue, asyncio.Lock())

    async def _walk(
        self,
        queue: str,
        where: DeadLetterFilter | None,
        after: DeadLetterCursor | None,
        limit: int,
        act: Callable[[list[_Taken]], Awaitable[None]] | None,
    ) -> tuple[list[_Taken], DeadLetterCursor | None, bool]:
        """One pass over the parking queue from its head: the next ``limit`` matches.

        It first asks whether the queue exists (`_require`: passive declares, which create
        nothing; `NoSuchQueue` if not). RabbitMQ cannot browse a queue, so the pass
        consumes from it on a channel of its own and holds what it reads unacknowledged;
        closing the channel puts back whatever ``act`` did not acknowledge. It steps over
        the messages earlier pages listed (recognised by id: the cursor carries them, so a
        listing reaches no further than ``dlq_browse_limit`` messages, ids included) and
        those ``where`` does not match, and takes matches until it has ``limit``, it has
        read every message that was ready when it started, or it has read
        ``dlq_browse_limit`` messages (then the result is truncated). ``act`` (replay or
        purge) runs on the matches while they are still held; what it took is gone, so
        its cursor carries no id.

        The consumer's prefetch is what the pass still needs (the messages to step over
        plus ``limit``; doubled for each new window when a filter leaves it short), so a
        page of 100 from the head has at most 100 messages in flight and unacknowledged.
        ``basic.get`` would cost one quorum-queue command, about 1.6 ms, per message. The
        pages follow the parking queue's order, which RabbitMQ keeps only roughly for
        messages that went back to it (the walk does not depend on it); each page is sorted
        oldest first.

        Returns the matches, the cursor for the next pass and whether it was truncated.
        """
        _v.check("limit", limit, _v.integer(1))
        where = where if where is not None else DeadLetterFilter()
        skip = _rabbit_key(after)
        ready = await self._require(queue)
        if where.place is Place.DELAYED or ready is None:
            # delay queues cannot be read without disturbing them; no parking queue: none
            return [], None, False
        channel = await self._channel()
        taken: list[_Taken] = []
        truncated = False
        parked = await channel.get_queue(f"{queue}.parked", ensure=False)
        reader = _Reader(channel, parked, self.dlq_browse_limit)
        try:
            while len(taken) < limit:
                message = await reader.next(len(skip) + limit - len(taken))
                if message is None:
                    truncated = reader.truncated
                    break
                if skip and _message_id(message) in skip:
                    continue
                letter = DeadLetter(
                    queue=queue,
                    message=_envelope(message),
                    place=Place.PARKED,
                    since=self._parked_at(message),
                )
                if where.matches(letter):
                    taken.append(_Taken(message, letter))
            await reader.stop()
            if act is not None and taken:
                await act(taken)
                await _fence(parked, self.timeout)
        finally:
            await self._close_channel(channel)
        gone = len(taken) if act is not None else 0
        if reader.read > gone:
            await self._settle_returns(f"{queue}.parked", reader.seen - gone)
        cursor = None
        if len(taken) == limit and not truncated:
            ids = () if act is not None else (*skip, *(t.letter.message.id for t in taken))
            cursor = DeadLetterCursor("rabbitmq", ids)
        # RabbitMQ keeps the order of the messages an earlier pass put back only roughly:
        # oldest first within the page
        taken.sort(key=lambda item: item.letter.since)
        return taken, cursor, truncated

    async def _passive(self, name: str) -> int | None:
        """The messages ready in queue ``name``, or ``None`` if RabbitMQ has no such queue.

        A passive ``queue.declare``, which never creates a queue, on a channel of its own:
        RabbitMQ closes the channel of a passive declare that fails.
        """
        channel = await self._channel()
        try:
            declared = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            await self._close_channel(channel)
        return declared.declaration_result.message_count or 0

    async def _require(self, queue: str) -> int | None:
        """The messages ready in ``queue``'s parking queue (``None``: it has none).

        What the DLQ tools ask instead of declaring: they never create a queue. Raises
        `NoSuchQueue` when neither the work queue nor its parking queue exists.
        """
        parked = await self._passive(f"{queue}.parked")
        if parked is None and await self._passive(queue) is None:
            raise NoSuchQueue(queue, f"RabbitMQ at {_redact(self.url)}")
        return parked

    async def _delays(self, queue: str) -> list[int]:
        """The delays (ms) of ``queue``'s delay queues: those its index names and ours.

        Reads the index (``{queue}.delays``) with ``basic.get``, holding what it reads
        unacknowledged, and puts it back by closing the channel; duplicates and entries
        that are not a number of milliseconds are acknowledged, so the index stays as
        small as the set of delays. A classic queue: reading it counts against no delivery
        limit.
        """
        ours = f"{queue}.delay."
        delays = {
            int(name[len(ours) :])
            for name in self._declared
            if name.startswith(ours) and name[len(ours) :].isdigit()
        }
        index = f"{queue}.delays"
        entries = await self._passive(index)
        if not entries:
            return sorted(delays)
        indexed: set[int] = set()
        channel = await self._channel()
        try:
            reader = await channel.get_queue(index, ensure=False)
            for _ in range(min(entries, self.dlq_browse_limit)):
                message = await reader.get(no_ack=False, fail=False, timeout=self.timeout)
                if message is None:
                    break
                ms = _count(bytes(message.body))
                if ms is None or ms < 1 or ms in indexed:
                    await message.ack()  # a duplicate (or not a delay): drop it
                    continue
                indexed.add(ms)
        finally:
            await self._close_channel(channel)  # the entries kept go back
        return sorted(delays | indexed)

    async def count_unlisted_delayed(self, queue: str) -> UnlistedDelayed:
        """How many messages of ``queue`` wait in its delay queues, which cannot be listed.

        The delay queues are found through their index (written when a broker first uses
        a delay; a delay queue made by a failsafe from before the index is found once a
        broker defers to it again) and counted with passive declares: no message is read
        and no queue created. A count at one moment: messages move on as they fall due.

        Raises:
            NoSuchQueue: If neither ``queue`` nor its parking queue exists.
        """
        _check_name(queue)
        async with self._guard(f"counting the delay queues of {queue!r}"):
            await self._require(queue)
            waiting = 0
            for ms in await self._delays(queue):
                waiting += await self._passive(f"{queue}.delay.{ms}") or 0
        return UnlistedDelayed(messages=waiting, reason=_UNLISTED)

    async def _settle_returns(self, name: str, expected: int) -> None:
        """Wait until the messages a pass put back are ready again (`_SETTLE_WAIT` at most).

        A quorum queue takes back the messages of a closed channel a moment after the
        channel is gone: a pass that starts meanwhile counts them out and would list (or
        replay) too few. So a pass waits, looking at the count every `_SETTLE_POLL` s, until
        the queue has as many ready as it had before less those the pass removed (a count
        other processes may change: then it gives up after `_SETTLE_WAIT` s).
        """
        channel = await self._channel()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _SETTLE_WAIT
            while True:
                declared = await channel.declare_queue(name, passive=True, durable=True)
                if (declared.declaration_result.message_count or 0) >= expected:
                    return
                if loop.time() >= deadline:
                    _log.debug("%s: %d messages still not back after a DLQ pass", name, expected)
                    return
                await asyncio.sleep(_SETTLE_POLL)  # a network wait, like the others here
        finally:
            await self._close_channel(channel)

    async def dead_letters(
        self, queue: str, *, place: Place | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        """List the parked messages of ``queue``, oldest first, without removing them.

        Delayed messages (in the delay queues) are not listed: RabbitMQ cannot read them
        without disturbing them. ``place=Place.DELAYED`` therefore lists nothing. The first
        page of `dead_letter_page`.
        """
        page = await self.dead_letter_page(queue, where=DeadLetterFilter(place=place), limit=limit)
        return list(page.letters)

    async def dead_letter_page(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterPage:
        """One page of ``queue``'s parked messages matching ``where``, oldest first.

        A pass reads the parking queue from its head (with a prefetch of what it still
        needs), steps over the messages earlier pages listed (the cursor carries their
        ids) and holds what it read unacknowledged until it returns: a page far into a
        large parking queue costs reading every message before it, ``dlq_browse_limit`` at
        most in all, past which the page is ``truncated``. Pages follow the order the
        messages were parked, which RabbitMQ keeps only roughly for messages a pass put
        back; each page is sorted by ``since``. Delayed messages are never listed.
        """
        _check_name(queue)
        async with self._dlq_lock(queue), self._guard(f"listing the parking queue of {queue!r}"):
            taken, cursor, truncated = await self._walk(queue, where, after, limit, None)
        return DeadLetterPage(
            letters=tuple(item.letter for item in taken), cursor=cursor, truncated=truncated
        )

    async def count_dead_letters(
        self, queue: str, *, where: DeadLetterFilter | None = None, at_most: int = COUNT_LIMIT
    ) -> DeadLetterCount:
        """Count ``queue``'s parked messages matching ``where``.

        Without a filter besides the place it asks RabbitMQ (a passive ``queue.declare``:
        the messages ready in the parking queue, none read). With one it reads the parking
        queue as `dead_letter_page` does, ``dlq_browse_limit`` messages at most (not
        ``exact`` past that). Delayed messages are not counted.
        """
        _check_name(queue)
        _v.check("at_most", at_most, _v.integer(1))
        where = where if where is not None else DeadLetterFilter()
        async with self._dlq_lock(queue), self._guard(f"counting the parking queue of {queue!r}"):
            if where == DeadLetterFilter(place=where.place):
                ready = await self._require(queue) or 0
                if where.place is Place.DELAYED:
                    return DeadLetterCount()
                return DeadLetterCount(parked=min(ready, at_most), exact=ready <= at_most)
            taken, _, truncated = await self._walk(queue, where, None, at_most + 1, None)
        counted = min(len(taken), at_most)
        return DeadLetterCount(parked=counted, exact=not truncated and len(taken) <= at_most)

    def _parked_at(self, message: aio_pika.abc.AbstractIncomingMessage) -> float:
        headers = message.headers or {}
        stamp = _time(headers.get(_PARKED_AT))
        if stamp is not None:
            return stamp
        deaths = headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
            stamp = _time(deaths[0].get("time"))  # parked by RabbitMQ at its delivery limit
            if stamp is not None:
                return stamp
        stamp = _time(message.timestamp)
        return stamp if stamp is not None else self.clock.time()

    async def _replay_taken(self, queue: str, taken: list[_Taken]) -> None:
        """Publish fresh copies to the work queue (confirmed, concurrently), then ack each."""
        now = self.clock.time()
        await asyncio.gather(
            *(
                self._publish(
                    queue,
                    _amqp_message(
                        attrs.evolve(item.letter.message, immediate_attempts=0, delayed_attempts=0),
                        now,
                    ),
                )
                for item in taken
            )
        )
        for item in taken:
            await item.message.ack()

    @staticmethod
    async def _ack_taken(taken: list[_Taken]) -> None:
        for item in taken:
            await item.message.ack()

    async def replay(self, queue: str, ids: Sequence[str]) -> int:
        """Move the listed parked messages back to the work queue with fresh counts.

        Each is published to the work queue (confirmed) and then removed from the parking
        queue; returns how many moved. The last error and ``first_seen`` are kept. A crash
        in between leaves a duplicate (the message in both queues), never a loss. The pass
        reads the parking queue from its head until it has found every id (the first copy
        of each) or read ``dlq_browse_limit`` messages.
        """
        _check_name(queue)
        wanted = _ids(ids)
        if not wanted:
            return 0
        where = DeadLetterFilter(ids=wanted)
        async with self._dlq_lock(queue), self._guard(f"replaying parked messages of {queue!r}"):
            taken, _, _ = await self._walk(
                queue, where, None, len(where.ids), lambda t: self._replay_taken(queue, t)
            )
        return len(taken)

    async def replay_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """Replay the next ``limit`` parked messages matching ``where``, in one pass.

        The pass is `dead_letter_page`'s; the matches are published to the work queue
        (confirmed, all at once) and then acknowledged, so a crash in between leaves
        duplicates, never a loss.
        """
        _check_name(queue)
        async with self._dlq_lock(queue), self._guard(f"replaying parked messages of {queue!r}"):
            taken, cursor, truncated = await self._walk(
                queue, where, after, limit, lambda t: self._replay_taken(queue, t)
            )
        return DeadLetterBatch(
            ids=tuple(item.letter.message.id for item in taken), cursor=cursor, truncated=truncated
        )

    async def purge(self, queue: str, ids: Sequence[str]) -> int:
        """Remove the listed parked messages for good; return how many were removed.

        As `replay`, the pass stops once every id is found (the first copy of each) or
        after ``dlq_browse_limit`` messages.
        """
        _check_name(queue)
        wanted = _ids(ids)
        if not wanted:
            return 0
        where = DeadLetterFilter(ids=wanted)
        async with self._dlq_lock(queue), self._guard(f"purging parked messages of {queue!r}"):
            taken, _, _ = await self._walk(queue, where, None, len(where.ids), self._ack_taken)
        return len(taken)

    async def purge_batch(
        self,
        queue: str,
        *,
        where: DeadLetterFilter | None = None,
        after: DeadLetterCursor | None = None,
        limit: int = 100,
    ) -> DeadLetterBatch:
        """Remove the next ``limit`` parked messages matching ``where`` for good."""
        _check_name(queue)
        async with self._dlq_lock(queue), self._guard(f"purging parked messages of {queue!r}"):
            taken, cursor, truncated = await self._walk(queue, where, after, limit, self._ack_taken)
        return DeadLetterBatch(
            ids=tuple(item.letter.message.id for item in taken), cursor=cursor, truncated=truncated
        )

    async def delivery_limit(self, queue: str) -> int | None:
        """The ``x-delivery-limit`` this broker declares its work queues with (or ``None``)."""
        return self._limit

    # -- closing ---------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the connection: RabbitMQ puts every unacknowledged delivery back.

        Idempotent. The broker cannot be used afterwards.
        """
        self._closed = True
        connection, self._connection = self._connection, None
        self._consumers.clear()
        self._publisher = None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._connection else "not connected"
        return f"RabbitMQBroker({_redact(self.url)!r}, {state})"


def _ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
        raise ConfigurationError("ids", f"must be a sequence of message ids, got {ids!r}")
    return [i for i in dict.fromkeys(ids) if i]


async def _fence(queue: aio_pika.abc.AbstractQueue, wait: float) -> None:
    """Make sure a quorum queue has applied the acks sent on this channel before it closes.

    RabbitMQ 3.10 may requeue messages acknowledged just before their channel closes
    (rabbitmq/rabbitmq-server#10327): measured here, 176 of 1,000 replayed messages came back
    to the parking queue, duplicates of the copies already in the work queue. A
    ``basic.get`` is a synchronous command to the same queue, applied after the acks sent
    before it; whatever it takes is left unacknowledged and goes back with the channel.
    """
    await queue.get(no_ack=False, fail=False, timeout=wait)


def _message_id(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    """The message's id as `_envelope` reads it, without reading the rest."""
    if message.message_id:
        return message.message_id
    return _envelope(message).id


def _rabbit_key(after: DeadLetterCursor | None) -> frozenset[str]:
    """The ids a RabbitMQ cursor says earlier pages listed (still there, to step over)."""
    if after is None:
        return frozenset()
    if (
        not isinstance(after, DeadLetterCursor)
        or after.adapter != "rabbitmq"
        or not all(isinstance(i, str) for i in after.key)
    ):
        raise ConfigurationError("after", f"must be a cursor from a RabbitMQBroker, got {after!r}")
    return frozenset(after.key)
