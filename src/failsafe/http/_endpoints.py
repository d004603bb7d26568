"""Endpoints: base URLs whose scheme, host, port and path prefix replace a request's."""

from __future__ import annotations

import httpx

from failsafe.exceptions import ConfigurationError

_CACHED_URLS = 1024


class Endpoint:
    """A parsed endpoint; ``point(request)`` aims a request at it, keeping path and query."""

    __slots__ = ("_urls", "host", "key", "netloc", "port", "prefix", "scheme")

    def __init__(self, base: str) -> None:
        try:
            url = httpx.URL(base)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigurationError("endpoints", f"{base!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(
                "endpoints", f"{base!r} must be an absolute http(s) URL such as http://host:8001"
            )
        if url.query or url.fragment:
            raise ConfigurationError("endpoints", f"{base!r} must not carry a query or fragment")
        self.key = base
        self.scheme = url.scheme
        self.host = url.host
        self.port = url.port
        self.netloc = url.netloc.decode("ascii")
        self.prefix = url.raw_path.rstrip(b"/")
        # httpx builds a URL in 20-40 us, as much as the rest of a request's overhead: keep the
        # URLs of the paths seen (URLs are immutable, so they are shared safely)
        self._urls: dict[bytes, httpx.URL] = {}

    def point(self, request: httpx.Request, raw_path: bytes) -> None:
        """Aim ``request`` at this endpoint (in place); ``raw_path`` is its original path+query."""
        url = self._urls.get(raw_path)
        if url is None:
            url = request.url.copy_with(
                scheme=self.scheme, host=self.host, port=self.port, raw_path=self.prefix + raw_path
            )
            if len(self._urls) >= _CACHED_URLS:
                self._urls.clear()
            self._urls[raw_path] = url
        request.url = url
        request.headers["Host"] = self.netloc


def parse_endpoints(endpoints: object) -> tuple[Endpoint, ...]:
    """Parse the ``endpoints`` option.

    Raises:
        ConfigurationError: If it is empty, a bare string, repeats an endpoint, or holds
            something that is not an absolute http(s) URL.
    """
    if isinstance(endpoints, str | bytes) or not hasattr(endpoints, "__iter__"):
        raise ConfigurationError("endpoints", f"must be a list of base URLs, got {endpoints!r}")
    parsed = tuple(Endpoint(str(e)) for e in endpoints)
    if not parsed:
        raise ConfigurationError("endpoints", "must name at least one endpoint")
    keys = [e.key for e in parsed]
    if len(set(keys)) != len(keys):
        raise ConfigurationError("endpoints", f"repeats an endpoint: {keys}")
    return parsed
