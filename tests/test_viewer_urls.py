"""Signed, expiring viewer URLs (services/common/viewer_urls.py), and the packager serving only them when keyed."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.common.viewer_urls import signed_component, signing_key_from_env, verified_stream

KEY = b"k" * 32
STREAM = "AbCdEfGhIjKlMnOpQrStUv"


def test_a_grant_names_its_stream_until_it_expires():
    component = signed_component(KEY, STREAM, 2_000)
    assert component.startswith(f"{STREAM}~2000~") and "/" not in component
    assert verified_stream(KEY, component, now=1_999.0) == STREAM
    assert verified_stream(KEY, component, now=2_000.0) is None, "expired"


def test_forged_or_altered_grants_are_refused():
    component = signed_component(KEY, STREAM, 2_000)
    stream, expires, signature = component.split("~")
    for forged in (
        f"{stream}~3000~{signature}",  # a later expiry
        f"{'B' * 22}~{expires}~{signature}",  # another stream
        signed_component(b"x" * 32, STREAM, 2_000),  # another key
        STREAM,  # the bare id
        f"{component}~extra",
        "",
    ):
        assert verified_stream(KEY, forged, now=1_000.0) is None, forged


def test_the_key_comes_from_the_environment_and_must_be_long(monkeypatch):
    monkeypatch.delenv("HLS_SIGNING_KEY", raising=False)
    assert signing_key_from_env() is None
    monkeypatch.setenv("HLS_SIGNING_KEY", "short")
    with pytest.raises(ConfigError, match="HLS_SIGNING_KEY"):
        signing_key_from_env()
    monkeypatch.setenv("HLS_SIGNING_KEY", "z" * 40)
    assert signing_key_from_env() == b"z" * 40
