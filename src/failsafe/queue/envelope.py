"""The message envelope: a body with the counts that failsafe's redelivery carries along.

A message's attempt counts travel in the message itself (a broker's own delivery counter is
only a floor), so the policy holds across processes, restarts and brokers. The JSON codec
(`encode` / `decode`) is how the SQLite broker stores messages and how the DLQ tools print
them; nothing is ever pickled.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from failsafe.exceptions import FailsafeError

__all__ = ["ErrorInfo", "Envelope", "MalformedMessage", "decode", "encode", "new_id"]

_CODEC_VERSION = 1
_MAX_TEXT = 4096  # an error message kept on a message is clipped to this many characters


class MalformedMessage(FailsafeError, ValueError):
    """Bytes that are not a failsafe envelope, or an envelope with a bad field.

    Attributes:
        field: The offending field, when one is to blame.
    """

    def __init__(self, problem: str, *, field: str | None = None) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


def new_id() -> str:
    """Return a new random message id (32 hex characters)."""
    return uuid.uuid4().hex


def _headers(value: Mapping[str, str] | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedMessage("must be a mapping of strings to strings", field="headers")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise MalformedMessage(
                f"must map strings to strings, got {key!r}: {item!r}", field="headers"
            )
        out[key] = item
    return out


def _text(name: str, *, optional: bool = False) -> Any:
    def check(inst: object, attr: Any, value: object) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str) or (not value and not optional):
            raise MalformedMessage(f"must be a non-empty string, got {value!r}", field=name)

    return check


def _count(name: str) -> Any:
    def check(inst: object, attr: Any, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MalformedMessage(f"must be an integer >= 0, got {value!r}", field=name)

    return check


def _time(inst: object, attr: Any, value: Any) -> None:
    if value is None:
        return
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise MalformedMessage(f"must be a finite time >= 0, got {value!r}", field=attr.name)


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """The last error a message met: its type's qualified name, its message and when.

    Attributes:
        type: The exception's class, as ``module.QualName``.
        message: ``str(exception)``, clipped to 4,096 characters.
        at: Wall-clock time of the failure (seconds since the epoch).
    """

    type: str = attrs.field(validator=_text("last_error.type"))
    message: str = attrs.field(validator=_text("last_error.message", optional=True))
    at: float = attrs.field(validator=_time)

    @classmethod
    def of(cls, error: BaseException, at: float) -> ErrorInfo:
        """Describe ``error``, raised at wall-clock time ``at``."""
        kind = type(error)
        module = kind.__module__
        name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
        return cls(type=name, message=str(error)[:_MAX_TEXT], at=at)


@attrs.frozen(kw_only=True)
class Envelope:
    """One message and what failsafe knows of its history.

    Attributes:
        body: The payload, as bytes.
        id: The message's id (a new random one by default); redelivered copies keep it, so
            an idempotent consumer can recognise them.
        content_type: The body's media type.
        headers: Application headers (strings to strings).
        immediate_attempts: Attempts made in process in the current round, as last
            recorded (0 for a new round).
        delayed_attempts: Delayed redeliveries made so far (rounds through the DLQ).
        first_seen: Wall-clock time a consumer first received it (``None`` before then).
        last_error: The last failure, once there was one.
    """

    body: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    id: str = attrs.field(factory=new_id, validator=_text("id"))
    content_type: str = attrs.field(default="application/json", validator=_text("content_type"))
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers, eq=True)
    immediate_attempts: int = attrs.field(default=0, validator=_count("immediate_attempts"))
    delayed_attempts: int = attrs.field(default=0, validator=_count("delayed_attempts"))
    first_seen: float | None = attrs.field(default=None, validator=_time)
    last_error: ErrorInfo | None = None

    def text(self) -> str | None:
        """The body as UTF-8 text, or ``None`` if it is not valid UTF-8."""
        try:
            return self.body.decode()
        except UnicodeDecodeError:
            return None

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            MalformedMessage: If the body is not JSON (an unrecoverable failure: the
                message goes straight to review).
        """
        try:
            return json.loads(self.body, parse_constant=_refuse_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise MalformedMessage(f"not JSON: {exc}", field="body") from exc

    def to_json(self) -> dict[str, Any]:
        """The envelope as JSON-ready data (the body as UTF-8 text when it is, else base64)."""
        text = self.text()
        data: dict[str, Any] = {"v": _CODEC_VERSION, "id": self.id}
        if text is not None:
            data["body"] = text
        else:
            data["body_base64"] = base64.b64encode(self.body).decode("ascii")
        data["content_type"] = self.content_type
        if self.headers:
            data["headers"] = dict(self.headers)
        data["immediate_attempts"] = self.immediate_attempts
        data["delayed_attempts"] = self.delayed_attempts
        if self.first_seen is not None:
            data["first_seen"] = self.first_seen
        if self.last_error is not None:
            data["last_error"] = {
                "type": self.last_error.type,
                "message": self.last_error.message,
                "at": self.last_error.at,
            }
        return data

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        """Build an envelope from `to_json`'s data.

        Raises:
            MalformedMessage: Naming the field that is missing or wrong.
        """
        if not isinstance(data, dict):
            raise MalformedMessage(f"an envelope is a JSON object, got {type(data).__name__}")
        version = data.get("v")
        if version != _CODEC_VERSION:
            raise MalformedMessage(
                f"unknown envelope version {version!r} (this failsafe reads {_CODEC_VERSION})",
                field="v",
            )
        if "body" in data:
            text = data["body"]
            if not isinstance(text, str):
                raise MalformedMessage("must be a string", field="body")
            try:
                body = text.encode()
            except UnicodeEncodeError as exc:
                raise MalformedMessage("is not valid Unicode text", field="body") from exc
        elif "body_base64" in data:
            raw = data["body_base64"]
            try:
                if not isinstance(raw, str):
                    raise TypeError
                body = base64.b64decode(raw, validate=True)
            except (TypeError, binascii.Error) as exc:
                raise MalformedMessage("must be base64 text", field="body_base64") from exc
        else:
            raise MalformedMessage("is missing (or body_base64)", field="body")
        get: Any = data.get  # values are checked by the fields' validators
        error = get("last_error")
        last_error = None
        if error is not None:
            if not isinstance(error, dict):
                raise MalformedMessage("must be an object", field="last_error")
            get_error: Any = error.get
            last_error = ErrorInfo(
                type=get_error("type"), message=get_error("message", ""), at=get_error("at")
            )
        return cls(
            body=body,
            id=get("id"),
            content_type=get("content_type", "application/json"),
            headers=get("headers"),
            immediate_attempts=get("immediate_attempts", 0),
            delayed_attempts=get("delayed_attempts", 0),
            first_seen=get("first_seen"),
            last_error=last_error,
        )


def encode(envelope: Envelope) -> bytes:
    """The envelope as compact JSON bytes."""
    return json.dumps(envelope.to_json(), separators=(",", ":"), allow_nan=False).encode()


def _refuse_constant(name: str) -> Any:
    raise MalformedMessage(f"{name} is not JSON")


def decode(data: bytes | str) -> Envelope:
    """Read an envelope written by `encode`.

    Raises:
        MalformedMessage: If the bytes are not JSON, or not an envelope (naming the field).
    """
    try:
        parsed = json.loads(data, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedMessage(f"not a JSON envelope: {exc}") from exc
    return Envelope.from_json(parsed)
