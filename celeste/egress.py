"""Outbound HTTP to URLs that users give us (Web Push endpoints, product image URLs).

A URL a user controls must not make our servers talk to themselves, the local
network or the cloud metadata service (SSRF). The rule lives here, once:

- ``url_check_public(url)`` resolves the host and returns its addresses, or raises
  ``EgressRefused`` saying why: https only, no credentials in the URL, every
  address public, the host on the allow-list when there is one.
- ``pinned_session(url, address)`` is a requests session that connects to that
  checked address (never resolving the name again, so a DNS answer that changes
  between the check and the connection cannot redirect it), verifies TLS for the
  URL's host name, ignores proxy variables and follows no redirects.
- ``fetch(url, …)`` downloads a body through both: every redirect is a new URL,
  checked and pinned again (at most ``max_redirects``), the body is streamed under
  a hard size cap and the whole fetch under one deadline.

Check at the time the URL is accepted, and again right before connecting: DNS can
change in between.
"""

import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address in their last 32 bits: the IPv4
# address is where the packets end up, so it is the one that must be public.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressError(ValueError):
    """The URL may not be fetched; the message says why, for the user."""


class EgressRefused(EgressError):
    """The URL breaks the rule: never fetch it."""


class EgressLookupFailed(EgressError):
    """The host name did not resolve: it may later."""


class EgressTooLarge(EgressRefused):
    """The body is larger than the caller accepts."""


class EgressFailed(EgressError):
    """The server could not be reached, was too slow, or answered an error: it may work later
    (``status`` is the HTTP status when there was one)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def address_is_public(address: Address) -> bool:
    """Whether packets to ``address`` go to the public internet, not to us or our networks.

    ``is_global`` alone is not enough on Python 3.11: it calls multicast global,
    and IPv4 addresses wrapped in IPv6 (mapped, 6to4, NAT64) are judged by the
    wrapper, not by the IPv4 address they lead to.
    """
    if address.version == 6:
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_is_public(embedded)
        if address.teredo is not None:  # a tunnel to an arbitrary IPv4 host
            return False
    special = (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (address.version == 6 and address.is_site_local)
    )
    return address.is_global and not special


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """``host`` is on the list: an exact name, or ``*.example.com`` for its subdomains."""
    host = host.lower().rstrip(".")
    for entry in allowed_hosts:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
        if host == entry:
            return True
    return False


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressLookupFailed(f"The host {host!r} could not be resolved.") from exc
    addresses: list[Address] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        # sockaddr[0] of an IPv6 link-local address can carry a scope ("fe80::1%eth0").
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise EgressLookupFailed(f"The host {host!r} could not be resolved.")
    return addresses


def url_check_public(
    url: str,
    *,
    allowed_hosts: Iterable[str] = (),
    allow_private: bool = False,
    allow_loopback: bool = False,
    allow_http: bool = False,
) -> list[Address]:
    """The addresses ``url``'s host resolves to, all of them checked; raises
    EgressRefused (or EgressLookupFailed when the name does not resolve).

    ``allowed_hosts``: when not empty, the host must be on it (see host_allowed).
    ``allow_private``: for development and tests only (loopback servers): accept
    non-public addresses, and plain http to them (never to a public address).
    ``allow_loopback``: the same for loopback addresses only (tests): every other
    non-public address is still refused, so a redirect to the metadata service is.
    ``allow_http``: plain http to public addresses too (image URLs; never push).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(f"Not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not (allow_private or allow_loopback or allow_http)):
        raise EgressRefused("The URL must use http or https." if allow_http else "The URL must use https.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise EgressRefused("The URL must not contain a user name or password.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EgressRefused("The URL has no host.")
    allowed_hosts = [entry for entry in allowed_hosts if entry.strip()]
    if allowed_hosts and not host_allowed(host, allowed_hosts):
        raise EgressRefused(f"The host {host!r} is not an allowed push service.")
    addresses = _resolve(host, port or (443 if scheme == "https" else 80))
    public = [address for address in addresses if address_is_public(address)]
    tolerated = [
        address
        for address in addresses
        if address not in public and (allow_private or (allow_loopback and address.is_loopback))
    ]
    if len(public) + len(tolerated) < len(addresses):
        refused = next(address for address in addresses if address not in public and address not in tolerated)
        raise EgressRefused(f"The host {host!r} resolves to {refused}, which is not a public address.")
    if scheme == "http" and public and not allow_http:
        raise EgressRefused("The URL must use https.")
    return addresses


class _PinnedAdapter(HTTPAdapter):
    """Connects to one checked address for one host, whatever DNS says now."""

    def __init__(self, host: str, address: Address):
        self.host, self.address = host, address
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if (urlsplit(request.url).hostname or "").rstrip(".") != self.host:
            raise EgressRefused("This session may only connect to the host that was checked.")
        host_params["host"] = str(self.address)
        if host_params["scheme"] == "https":
            # SNI and certificate verification for the name, not the address.
            pool_kwargs["server_hostname"] = self.host
        return host_params, pool_kwargs

    def send(self, request, *args, **kwargs):
        # The connection is to the address, so the Host header must name the host itself.
        request.headers["Host"] = urlsplit(request.url).netloc
        return super().send(request, *args, **kwargs)


class _PinnedSession(requests.Session):
    def request(self, method, url, *args, **kwargs):
        kwargs["allow_redirects"] = False  # a redirect could point anywhere; it is the caller's answer
        return super().request(method, url, *args, **kwargs)


def pinned_session(url: str, address: Address) -> requests.Session:
    """A session for ``url`` that connects only to ``address`` (from url_check_public)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    session = _PinnedSession()
    # Proxy variables would send the request elsewhere than the checked address.
    session.trust_env = False
    adapter = _PinnedAdapter(host, address)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Fetched:
    url: str  # the last one, after redirects
    content: bytes
    content_type: str


def fetch(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int = 3,
    allow_http: bool = False,
    allow_loopback: bool = False,
    verify: bool | str = True,
) -> Fetched:
    """GET ``url`` under the rule: each hop (the URL, then every redirect) checked with
    url_check_public and fetched through a session pinned to its checked address.

    Raises EgressRefused (the rule, more than ``max_redirects`` redirects, a body over
    ``max_bytes``: EgressTooLarge), EgressLookupFailed, or EgressFailed (connection
    error, ``timeout`` seconds passed for the whole fetch, an HTTP error status).
    The body is read as it arrives, never more than ``max_bytes`` + one chunk of it.
    """
    deadline = time.monotonic() + timeout
    for _hop in range(max_redirects + 1):
        addresses = url_check_public(url, allow_http=allow_http, allow_loopback=allow_loopback)
        session = pinned_session(url, addresses[0])
        remaining = deadline - time.monotonic()
        try:
            # identity: a compressed body would be inflated past the cap before we could count it.
            response = session.get(
                url,
                stream=True,
                timeout=(max(remaining, 0.01), max(remaining, 0.01)),
                verify=verify,
                headers={"Accept-Encoding": "identity"},
            )
        except requests.RequestException as exc:
            session.close()
            raise EgressFailed(f"Could not fetch {url}: {type(exc).__name__}.") from exc
        with session, response:
            if response.status_code in REDIRECTS and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status_code != 200:
                raise EgressFailed(f"{url} answered HTTP {response.status_code}.", status=response.status_code)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise EgressTooLarge(f"{url} is larger than {max_bytes} bytes ({declared}).")
            content = _read_capped(response, url=url, max_bytes=max_bytes, deadline=deadline)
            return Fetched(url=url, content=content, content_type=response.headers.get("Content-Type", ""))
    raise EgressRefused(f"More than {max_redirects} redirects.")


def _read_capped(response, *, url: str, max_bytes: int, deadline: float) -> bytes:
    chunks, size = [], 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise EgressFailed(f"{url} took longer than the time allowed.")
            # read1: whatever has arrived (up to 64 KiB), so a server that trickles
            # bytes cannot hold us past the deadline by more than one socket timeout.
            chunk = response.raw.read1(65536, decode_content=False)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > max_bytes:
                raise EgressTooLarge(f"{url} is larger than {max_bytes} bytes.")
            chunks.append(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise EgressFailed(f"Could not fetch {url}: {type(exc).__name__}.") from exc
