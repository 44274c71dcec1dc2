"""The safety check of ``miaopi loadtest``: load is only ever sent to this machine."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    host: str  # address to connect to
    port: int
    host_header: str
    base_path: str  # prefix of /v1/..., usually ""


class UnsafeTarget(ValueError):
    """The URL is not on this machine's loopback interface."""


def loopback_target(url: str) -> Target:
    """Parse ``url``; refuse anything but http:// on 127.0.0.0/8, ``localhost`` or ::1.

    Load tests never leave the machine: a mistyped production address must fail here.
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise UnsafeTarget(f"{url!r}: only http:// URLs on the loopback interface are allowed")
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or 80
    except ValueError as error:
        raise UnsafeTarget(f"{url!r}: bad port") from error
    if host == "localhost":
        address = "127.0.0.1"
    else:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise UnsafeTarget(
                f"{url!r}: host {host!r} is not loopback; load tests target only "
                "127.0.0.0/8, localhost or ::1"
            ) from None
        if not ip.is_loopback:
            raise UnsafeTarget(
                f"{url!r}: {host} is not a loopback address; load tests target only "
                "127.0.0.0/8, localhost or ::1"
            )
        address = str(ip)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UnsafeTarget(f"{url!r}: give only scheme, host, port and an optional path")
    netloc = f"[{address}]" if ":" in address else address
    return Target(address, port, f"{netloc}:{port}", parts.path.rstrip("/"))
