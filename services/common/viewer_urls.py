"""Signed, expiring viewer URLs for the HLS playlist (optional: HLS_SIGNING_KEY on the session service and the
packagers).

Why in the path: a playlist's parts, segments and init segment are relative URIs, and players (hls.js, Safari,
ffmpeg) resolve them against the playlist's URL without its query string, so a signature in `?sig=` would be lost
on the first part. As one path component, `/hls/<stream_id>~<exp>~<sig>/index.m3u8`, every request of the stream
carries it, a CDN caches each grant as its own path, and nothing else changes. `exp` is a Unix time (seconds); `sig`
is HMAC-SHA256(key, "<stream_id>~<exp>"), base64url, 22 characters (128 bits). Without a key, the path component is
the bare stream id (random, unguessable, view-only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from services.common.config import ConfigError, env_str

SEPARATOR = "~"
SIGNATURE_CHARS = 22
MIN_KEY_CHARS = 32
_GRANT = re.compile(r"^([A-Za-z0-9_-]{16,64})~([0-9]{1,12})~([A-Za-z0-9_-]{22})$")


def signing_key_from_env() -> bytes | None:
    """HLS_SIGNING_KEY (at least MIN_KEY_CHARS characters; the same on the session service and every packager)."""
    key = env_str("HLS_SIGNING_KEY", "")
    if not key:
        return None
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"HLS_SIGNING_KEY must be at least {MIN_KEY_CHARS} random characters")
    return key.encode()


def _signature(key: bytes, stream_id: str, expires: int) -> str:
    mac = hmac.new(key, f"{stream_id}{SEPARATOR}{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:SIGNATURE_CHARS]


def signed_component(key: bytes, stream_id: str, expires: int) -> str:
    """The path component that grants viewing `stream_id` until `expires` (Unix seconds)."""
    return f"{stream_id}{SEPARATOR}{expires}{SEPARATOR}{_signature(key, stream_id, expires)}"


def verified_stream(key: bytes, component: str, now: float) -> str | None:
    """The stream id `component` grants at `now`; None when it is malformed, forged or expired."""
    match = _GRANT.fullmatch(component)
    if match is None:
        return None
    stream_id, expires, signature = match.group(1), int(match.group(2)), match.group(3)
    if not hmac.compare_digest(signature, _signature(key, stream_id, expires)):
        return None
    return stream_id if now < expires else None
