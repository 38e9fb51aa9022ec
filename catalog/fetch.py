"""Fetching images by URL without letting a URL reach inside our own network.

Every hop (the first URL and each redirect) is resolved once, every address it resolves to
is checked, and the connection goes to that checked address, so DNS cannot swap in a
private address between the check and the connect.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage

from catalog.images import ImageRejected, IntakeImage, image_validate
from catalog.storage import image_name_for

_CHUNK = 64 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}
USER_AGENT = "simsite-image-fetcher/1"


def _refuse(code: str, message: str, field: str) -> ImageRejected:
    return ImageRejected(code, message, field=field)


# IPv6 prefixes that carry an IPv4 address a gateway forwards to: NAT64 (RFC 6052, 8215).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through a translator or tunnel, if any:
    IPv4-mapped, NAT64, 6to4 (2002::/16) or Teredo's client."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if any(ip in network for network in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        ip = embedded
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def _resolve(host: str, port: int, *, field: str) -> list[str]:
    """Return the addresses to connect to, refusing hosts that resolve to non-public space."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _refuse("url_unreachable", f"Host '{host}' could not be resolved.", field) from None
    addresses = [info[4][0] for info in infos]
    if host.lower() not in {h.lower() for h in settings.IMAGE_FETCH_ALLOWED_HOSTS}:
        blocked = [a for a in addresses if not _address_is_public(a)]
        if blocked:
            raise _refuse(
                "url_host_not_allowed",
                f"Host '{host}' resolves to a non-public address ({blocked[0]}); refused.",
                field,
            )
    return list(dict.fromkeys(addresses))


def _connect_pinned(addresses: list[str], port: int, read_timeout: float) -> socket.socket:
    """Connect to the first vetted address that answers (never re-resolving the host)."""
    last_error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), settings.IMAGE_FETCH_CONNECT_TIMEOUT)
        except OSError as error:
            last_error = error
            continue
        sock.settimeout(read_timeout)
        return sock
    raise last_error or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: list[str], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = self.raw_sock = _connect_pinned(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: list[str], timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses = addresses

    def connect(self) -> None:
        self.raw_sock = _connect_pinned(self._addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(self.raw_sock, server_hostname=self.host)


def _abort(connection: http.client.HTTPConnection) -> None:
    """The deadline passed: cut the connection, which ends any read blocked on it (the
    socket as connected: http.client hands it to the response and forgets it)."""
    sock = getattr(connection, "raw_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _get_once(url: str, *, field: str, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET without following redirects: (status, Location, body capped at the limit),
    all of it before ``deadline`` (monotonic): a server that drips bytes is cut off there."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        raise _refuse("url_invalid", "The URL is malformed.", field) from None
    if "\x00" in url or any(ord(char) < 32 for char in url):
        raise _refuse("url_invalid", "The URL contains control characters.", field)
    if parts.scheme not in ("http", "https"):
        raise _refuse("url_scheme_not_allowed", f"Only http and https URLs are accepted, got '{parts.scheme}:'.", field)
    if not hostname:
        raise _refuse("url_invalid", f"URL '{url}' has no host.", field)
    if parts.username or parts.password:
        raise _refuse("url_invalid", "URLs with credentials are not accepted.", field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _refuse("url_invalid", f"URL '{url}' has an invalid port.", field) from None
    addresses = _resolve(parts.hostname, port, field=field)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timed_out(field)
    connection_class = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(parts.hostname, port, addresses, min(settings.IMAGE_FETCH_READ_TIMEOUT, remaining))
    watchdog = threading.Timer(remaining, _abort, [connection])
    watchdog.daemon = True
    watchdog.start()
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    limit = settings.IMAGE_MAX_UPLOAD_BYTES
    try:
        connection.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        response = connection.getresponse()
        if response.status in _REDIRECTS:
            return response.status, response.getheader("Location"), b""
        if response.status != 200:
            raise _refuse("url_http_error", f"The URL answered HTTP {response.status}.", field)
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _refuse("url_too_large", f"The URL's image is larger than {limit // (1024 * 1024)} MB.", field)
        chunks: list[bytes] = []
        received = 0
        while chunk := response.read1(_CHUNK):
            received += len(chunk)
            if received > limit:
                raise _refuse("url_too_large", f"The URL's image is larger than {limit // (1024 * 1024)} MB.", field)
            chunks.append(chunk)
        if time.monotonic() >= deadline:  # cut off by the watchdog: what came is not the image
            raise _timed_out(field)
        return response.status, None, b"".join(chunks)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() >= deadline:
            raise _timed_out(field) from None
        if isinstance(exc, TimeoutError):
            raise _refuse("url_unreachable", f"Timed out fetching '{url}'.", field) from None
        raise _refuse("url_unreachable", f"Could not fetch '{url}': {exc.__class__.__name__}.", field) from None
    finally:
        watchdog.cancel()
        connection.close()


def _timed_out(field: str) -> ImageRejected:
    return _refuse("url_unreachable", f"The URL took longer than {settings.IMAGE_FETCH_TOTAL_TIMEOUT} s to fetch, "
                   "redirects included.", field)  # fmt: skip


def _cache_key(url: str) -> str:
    return "image-url:" + hashlib.sha256(url.encode()).hexdigest()


def image_fetch(
    *, url: str, field: str = "image_url", use_cache: bool = True, decode_min_side: int | None = None
) -> IntakeImage:
    """Download ``url`` and return it as a validated image, or raise ImageRejected.

    Results are cached by URL (``IMAGE_URL_CACHE_SECONDS``): a URL fetched before whose
    content is still stored is not fetched again, unless ``use_cache`` is off (imports: the
    image behind a URL may have changed since).
    """
    url = url.strip()
    if len(url) > 2048:
        raise _refuse("url_invalid", "URL is longer than 2048 characters.", field)
    cached = cache.get(_cache_key(url)) if settings.IMAGE_URL_CACHE_SECONDS and use_cache else None
    if cached:
        name = image_name_for(sha256=cached["sha256"], extension=cached["extension"])
        if default_storage.exists(name):
            with default_storage.open(name, "rb") as stored:
                return image_validate(data=stored.read(), field=field, decode_min_side=decode_min_side)
    current = url
    deadline = time.monotonic() + settings.IMAGE_FETCH_TOTAL_TIMEOUT
    for _hop in range(settings.IMAGE_FETCH_MAX_REDIRECTS + 1):
        status, location, body = _get_once(current, field=field, deadline=deadline)
        if location is None and status in _REDIRECTS:
            raise _refuse("url_http_error", f"The URL answered HTTP {status} without a Location.", field)
        if location is None:
            break
        try:
            current = urljoin(current, location)
        except ValueError:
            raise _refuse("url_invalid", "The URL redirected to a malformed address.", field) from None
    else:
        raise _refuse("url_too_many_redirects", f"More than {settings.IMAGE_FETCH_MAX_REDIRECTS} redirects.", field)
    try:
        image = image_validate(data=body, field=field, decode_min_side=decode_min_side)
    except ImageRejected as exc:
        raise _refuse("url_not_an_image", f"The URL did not return an acceptable image: {exc.message}", field) from None
    if settings.IMAGE_URL_CACHE_SECONDS:
        cache.set(
            _cache_key(url),
            {"sha256": image.sha256, "extension": image.extension},
            settings.IMAGE_URL_CACHE_SECONDS,
        )
    return image
