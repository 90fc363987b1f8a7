"""API keys, bearer credentials and grants (services/session/access.py), without a server."""

from __future__ import annotations

import grpc
import pytest

from services.common.config import ConfigError
from services.session.access import (
    ANONYMOUS,
    GRANTS,
    ApiKeys,
    Refusal,
    bearer,
    check_grants,
    key_id,
    matches_digest,
    new_token,
    require_keys,
    token_digest,
)

KEY_A = "a" * 16 + "-key-one"
KEY_B = "b" * 16 + "_key_two"


def auth(value: str) -> list[tuple[str, str]]:
    return [("x-other", "1"), ("authorization", value)]


def test_bearer_reads_only_a_bearer_credential():
    assert bearer(auth("Bearer abc")) == "abc"
    assert bearer(auth("bearer   abc  ")) == "abc"
    assert bearer([("Authorization", b"Bearer xyz")]) == "xyz"
    assert bearer(auth("Basic abc")) is None
    assert bearer(auth("Bearer ")) is None
    assert bearer(None) is None and bearer([]) is None


def test_keys_parse_from_a_list_or_a_file_with_grants(tmp_path):
    keys = ApiKeys.parse(f"{KEY_A}, {KEY_B}:pacing+voice\n# a comment\n")
    assert len(keys) == 2 and keys.enabled
    assert keys.authenticate(auth(f"Bearer {KEY_A}")).grants == frozenset()
    caller = keys.authenticate(auth(f"Bearer {KEY_B}"))
    assert caller.grants == {"pacing", "voice"} and caller.key_id == key_id(KEY_B)
    assert ApiKeys.parse(f"{KEY_A}:*").authenticate(auth(f"Bearer {KEY_A}")).grants == GRANTS
    path = tmp_path / "keys"
    path.write_text(f"{KEY_B}\n")
    both = ApiKeys.from_env(KEY_A, str(path))
    assert len(both) == 2
    assert KEY_A not in repr(both) and KEY_B not in repr(both)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("short", "shorter than 16"),
        (f"{KEY_A}:admin", "unknown grant"),
        (f"{KEY_A},{KEY_A}", "twice"),
    ],
)
def test_bad_keys_fail_start_up_without_showing_the_key(text, needle):
    with pytest.raises(ConfigError) as caught:
        ApiKeys.parse(text)
    assert needle in str(caught.value)
    assert KEY_A not in str(caught.value)


def test_an_unreadable_keys_file_fails_start_up(tmp_path):
    with pytest.raises(ConfigError, match="SESSION_API_KEYS_FILE"):
        ApiKeys.from_env("", str(tmp_path / "missing"))


def test_authenticate_refuses_missing_and_wrong_keys():
    keys = ApiKeys([KEY_A])
    for metadata in ([], auth("Basic x"), auth(f"Bearer {KEY_B}"), auth(f"Bearer {KEY_A}x")):
        with pytest.raises(Refusal) as caught:
            keys.authenticate(metadata)
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert KEY_A not in caught.value.message
    anonymous = ApiKeys().authenticate([])
    assert anonymous.key_id == ANONYMOUS and anonymous.grants == GRANTS


def test_grants_refuse_what_costs_more_naming_the_grant():
    plain = ApiKeys([KEY_A]).authenticate(auth(f"Bearer {KEY_A}"))
    check_grants(plain, offline=False, llm_choice=False, voice_choice=False)
    for kwargs, grant in (
        ({"offline": True}, "pacing"),
        ({"llm_choice": True}, "llm"),
        ({"voice_choice": True}, "voice"),
    ):
        flags = {"offline": False, "llm_choice": False, "voice_choice": False} | kwargs
        with pytest.raises(Refusal) as caught:
            check_grants(plain, **flags)
        assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED and f"'{grant}'" in caught.value.message


def test_anonymous_sessions_only_on_loopback_unless_allowed():
    for host in ("127.0.0.1", "::1", "[::1]", "localhost"):
        require_keys(ApiKeys(), host, allow_anonymous=False)
    for host in ("0.0.0.0", "10.1.2.3", "[::]", "session.example"):
        with pytest.raises(ConfigError, match="SESSION_API_KEYS"):
            require_keys(ApiKeys(), host, allow_anonymous=False)
        require_keys(ApiKeys(), host, allow_anonymous=True)
        require_keys(ApiKeys([KEY_A]), host, allow_anonymous=False)


def test_tokens_are_random_and_only_their_digest_is_kept():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 22 for t in tokens)
    token = tokens.pop()
    digest = token_digest(token)
    assert matches_digest(token, digest) and not matches_digest(token + "x", digest)
    assert token.encode() not in digest
