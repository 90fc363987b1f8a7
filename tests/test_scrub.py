"""services/common/scrub.py: the one scrubber the llm and the tts use for what clients read and what logs hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.scrub import ADDRESS, MAX_INPUT_CHARS, REDACTED, redact, redact_exception, scrub
from services.llm import openai as llm_openai
from services.tts import remote
from services.tts import synthesis as tts_synthesis
from services.tts.engine import VoiceInfo

KEY = "sk-test-SECRET123"
SELF_HOSTED_KEY = "hunter2-self-hosted-key"


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"Incorrect API key provided: {KEY}.", ["SECRET123", "sk-test"]),
        ("header Authorization: Bearer abc.def-ghi", ["abc.def-ghi"]),
        ("authorization=Basic dXNlcjpwYXNz", ["dXNlcjpwYXNz"]),
        ("xi-api-key: qwertyuiop123", ["qwertyuiop123"]),
        ('{"api_key": "abcdefgh123", "max_tokens": 4096}', ["abcdefgh123"]),
        ("GET /v1/x?key=AIzaSyA1234567890abcdefghij&alt=json", ["AIzaSyA1234567890abcdefghij"]),
        ("keys sk-proj-AbCdEf123456 and sk_0123456789abcdef0123", ["AbCdEf123456", "0123456789abcdef0123"]),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl", ["eyJzdWIiOiIxMjM0In0"]),
        (f"the server echoed {SELF_HOSTED_KEY}", [SELF_HOSTED_KEY]),
    ],
)
def test_secrets_are_removed_for_clients_and_for_logs(text: str, gone: list[str]) -> None:
    for cleaned in (scrub(text, SELF_HOSTED_KEY), redact(text, SELF_HOSTED_KEY)):
        assert REDACTED in cleaned, cleaned
        assert not [secret for secret in gone if secret in cleaned], cleaned


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("could not reach http://10.0.4.7:8000/v1/chat/completions", ["10.0.4.7", "8000", "/v1/chat"]),
        ("Cannot connect to host api.elevenlabs.io:443 ssl:default", ["api.elevenlabs.io"]),
        ("peer llm:50052 is down; video dns:///video-headless:50054", ["llm:50052", "video-headless"]),
        ("connect to 192.168.1.20 failed", ["192.168.1.20"]),
        ("upstream [fe80::1]:8080 or 2001:db8::5 or ::1", ["fe80::1", "2001:db8::5", "::1"]),
        ("vllm.internal refused; session.default.svc too", ["vllm.internal", "session.default.svc"]),
        ("proxy https://user:pw@proxy.corp:3128/?token=t0ken", ["user:pw", "proxy.corp", "t0ken"]),
    ],
)
def test_addresses_are_removed_for_clients_kept_for_logs(text: str, gone: list[str]) -> None:
    cleaned = scrub(text)
    assert ADDRESS in cleaned, cleaned
    assert not [part for part in gone if part in cleaned], cleaned
    logged = redact(text)
    assert not [part for part in ("user:pw", "t0ken") if part in logged], logged  # credentials go, even in logs
    if "user:pw" not in gone:
        assert gone[0] in logged, logged  # the operator keeps the address


def test_ordinary_words_numbers_and_times_stay() -> None:
    text = (
        "This model's maximum context length is 8192 tokens; 3.5 percent, e.g. 1,000 people at 10:30:00; "
        "Error code:429 in std::string, max_tokens: 4096"
    )
    assert scrub(text) == text


def test_client_text_is_one_short_line_without_control_characters() -> None:
    assert scrub("a\nb\r\n\tc\x00d\x1b[31m") == "a b c d [31m"
    long = scrub("x" * 5000)
    assert len(long) == 300 and long.endswith("\u2026")
    assert len(scrub("y" * 5000, limit=None)) == 5000


def test_a_huge_text_is_cut_at_whitespace_never_through_a_key() -> None:
    filler = "word " * (MAX_INPUT_CHARS // 5 - 3)
    text = filler + "x" * 14 + " " + SELF_HOSTED_KEY + " and more " * 1000  # the key straddles the cut
    for cleaned in (redact(text, SELF_HOSTED_KEY), scrub(text, SELF_HOSTED_KEY, limit=None)):
        assert "hunter" not in cleaned and "more characters)" in cleaned
        assert len(cleaned) <= MAX_INPUT_CHARS + 40
    assert redact("y" * (MAX_INPUT_CHARS + 1)).startswith(" \u2026 (")  # one blob: nothing of it stays


def test_a_logged_traceback_keeps_its_lines_and_loses_the_key() -> None:
    try:
        raise RuntimeError(f"upstream 10.0.0.9:8000 rejected {KEY} (Authorization: Bearer {SELF_HOSTED_KEY})")
    except RuntimeError as error:
        logged = redact_exception(error, SELF_HOSTED_KEY)
    assert "Traceback" in logged and "\n" in logged and "10.0.0.9:8000" in logged
    assert "SECRET123" not in logged and SELF_HOSTED_KEY not in logged


def test_llm_and_tts_use_the_one_copy() -> None:
    assert llm_openai.scrub is scrub and remote.scrub is scrub
    error = remote.status_error("ElevenLabs", 500, f"Bearer {SELF_HOSTED_KEY} at 10.1.2.3:9000", {}, "KEY", [KEY])
    assert SELF_HOSTED_KEY not in error.message and "10.1.2.3" not in error.message  # the old tts copy missed both
    failure = remote.transport_error("ElevenLabs", OSError("Connect call failed ('10.9.8.7', 443)"), [KEY])
    assert "10.9.8.7" not in failure.message


def test_the_tts_service_scrubs_bearer_tokens_of_unexpected_failures() -> None:
    assert tts_synthesis.scrub is scrub
    info = VoiceInfo("elevenlabs:voice", "en", "elevenlabs", "a voice", "elevenlabs:voice")
    error = RuntimeError(f"upstream said: Authorization: Bearer {SELF_HOSTED_KEY} (Bearer tok.en-123456)")
    _, message = tts_synthesis._describe(error, info)
    assert SELF_HOSTED_KEY not in message and "tok.en-123456" not in message and "Bearer " + REDACTED in message


def test_one_scrubber_in_the_tree() -> None:
    services = Path(__file__).resolve().parent.parent / "services"
    sources = {str(path.relative_to(services.parent)): path.read_text("utf-8") for path in services.rglob("*.py")}
    defining = sorted(name for name, text in sources.items() if "def scrub(" in text or "_BEARER = re.compile" in text)
    assert defining == ["services/common/scrub.py"]
