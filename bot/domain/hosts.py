"""Host names: which ones stay on this machine."""

from __future__ import annotations

import ipaddress


def is_loopback(hostname: str) -> bool:
    """True for localhost and loopback IP literals."""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
