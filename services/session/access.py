"""Who may do what: the operator's API keys open sessions, each session's control token steers it.

Why three names for one session: the session id names it (in requests and logs), the playlist's stream id lets one
watch its video (a URL handed to viewers and CDNs), and only the control token steers it. A backend holds an API key
and hands the browser the token and the playlist URL, never the key (LiveKit's model: keys on servers, narrow grants
in browsers).

API keys come from SESSION_API_KEYS (comma-separated) or SESSION_API_KEYS_FILE (commas or one per line, `#`
comments). An entry is `KEY` or `KEY:GRANT+GRANT` (`*` for every grant). Grants are what costs the operator more than
a plain live session: `pacing` (offline pacing, a full core while it runs), `llm` (choosing the LLM provider or
model), `voice` (choosing a voice other than the server's default). A key without grants gets none of them. With no
keys configured anyone may create sessions with every grant: for a stack on loopback only (see `require_keys`).

Keys and tokens are compared in constant time and never logged; a key appears in logs as its id, the first 8 hex
digits of its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common.config import ConfigError

GRANTS = frozenset({"pacing", "llm", "voice"})
MIN_KEY_CHARS = 16
MAX_KEYS = 1000
TOKEN_BYTES = 24  # 192 random bits
AUTHORIZATION = "authorization"
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    """Whoever called CreateSession: a key's id (or `anonymous`) and what it may choose."""

    key_id: str
    grants: frozenset[str]


@dataclass(frozen=True)
class Refusal(Exception):
    """Why a call is refused: a canonical code and a sentence that says what to do (no secret in it)."""

    code: grpc.StatusCode
    message: str


@dataclass(frozen=True)
class _Key:
    secret: bytes
    caller: Caller


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def new_token() -> str:
    """A control token or stream id: URL-safe, TOKEN_BYTES random bytes."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def token_digest(token: str) -> bytes:
    """What is kept of an ended session's token: enough to tell its holder that the session has ended."""
    return hashlib.sha256(token.encode()).digest()


def matches_digest(token: str, digest: bytes) -> bool:
    return hmac.compare_digest(token_digest(token), digest)


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The credential of `authorization: Bearer <credential>`; None when absent or not a bearer credential."""
    for name, value in metadata or ():
        if name.lower() != AUTHORIZATION:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, credential = text.strip().partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return credential.strip()
        return None
    return None


def _parse_entry(entry: str, number: int) -> _Key:
    key, _, grant_text = entry.partition(":")
    key = key.strip()
    if len(key) < MIN_KEY_CHARS or any(ch.isspace() for ch in key):
        raise ConfigError(
            f"API key entry {number} is shorter than {MIN_KEY_CHARS} characters or contains spaces: use long random "
            "keys, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    grants = {g.strip() for g in grant_text.split("+") if g.strip()} if grant_text else set()
    if "*" in grants:
        grants = set(GRANTS)
    unknown = grants - GRANTS
    if unknown:
        raise ConfigError(f"API key entry {number}: unknown grant(s) {sorted(unknown)}; grants are {sorted(GRANTS)}")
    return _Key(key.encode(), Caller(key_id(key), frozenset(grants)))


class ApiKeys:
    """The configured keys; `authenticate` maps CreateSession's metadata to a Caller or a Refusal."""

    def __init__(self, entries: Sequence[str] = ()) -> None:
        if len(entries) > MAX_KEYS:
            raise ConfigError(f"{len(entries)} API keys; at most {MAX_KEYS}")
        self._keys = [_parse_entry(entry, n) for n, entry in enumerate(entries, 1)]
        if len({k.secret for k in self._keys}) != len(self._keys):
            raise ConfigError("an API key is listed twice")

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        entries = []
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            entries += [e.strip() for e in line.split(",") if e.strip()]
        return cls(entries)

    @classmethod
    def from_env(cls, keys: str, keys_file: str) -> ApiKeys:
        """SESSION_API_KEYS and SESSION_API_KEYS_FILE together (a file that cannot be read fails start-up)."""
        text = keys
        if keys_file:
            try:
                text += "\n" + Path(keys_file).read_text()
            except OSError as error:
                raise ConfigError(f"SESSION_API_KEYS_FILE={keys_file}: cannot read it ({error.strerror})") from None
        return cls.parse(text)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never the keys themselves
        return f"ApiKeys({len(self._keys)} keys)"

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller:
        if not self._keys:
            return Caller(ANONYMOUS, GRANTS)
        credential = bearer(metadata)
        if credential is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "creating a session needs an API key: send gRPC metadata 'authorization: Bearer <API key>' "
                "(the operator configures keys with SESSION_API_KEYS)",
            )
        given = credential.encode()
        match = None
        for key in self._keys:  # every key compared, in constant time each: the answer's timing says nothing
            if hmac.compare_digest(given, key.secret):
                match = key
        if match is None:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "the API key is not valid: check the key you send")
        return match.caller


def is_loopback(host: str) -> bool:
    """Whether a listening host (an IP literal or `localhost`) accepts connections from this machine only."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_keys(keys: ApiKeys, host: str, allow_anonymous: bool) -> None:
    """Refuses to serve anonymous CreateSession beyond loopback unless explicitly allowed."""
    if keys.enabled or allow_anonymous or is_loopback(host):
        return
    raise ConfigError(
        f"no API keys (SESSION_API_KEYS or SESSION_API_KEYS_FILE) while listening on {host}: anyone who can reach it "
        "could create sessions; configure keys, listen on 127.0.0.1, or set SESSION_ALLOW_ANONYMOUS=1 deliberately"
    )


def check_grants(caller: Caller, *, offline: bool, llm_choice: bool, voice_choice: bool) -> None:
    """Refuses options the caller's key may not use, naming the grant it would need."""
    for wanted, grant, what in (
        (offline, "pacing", "offline pacing"),
        (llm_choice, "llm", "choosing the LLM provider or model"),
        (voice_choice, "voice", "choosing a voice other than the default"),
    ):
        if wanted and grant not in caller.grants:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this API key may not use {what}: the operator can grant it ('{grant}' in SESSION_API_KEYS)",
            )
