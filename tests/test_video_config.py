"""The video service reads its environment once, at start, and refuses a bad value by naming the variable."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.video.config import VideoConfig

VARIABLES = (
    "VIDEO_PHOTO_AVATARS",
    "VIDEO_DEFAULT_AVATAR",
    "VIDEO_MAX_QUEUED_FRAMES",
    "VIDEO_CPU_BUDGET",
    "VIDEO_SPEAKING_SHARE",
    "VIDEO_MAX_STREAMS",
    "VIDEO_CRF",
    "VIDEO_MAX_KBPS",
    "VIDEO_WARM_SIZE",
    "VIDEO_BURN_CLOCK",
    "PORT",
    "METRICS_PORT",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    config = VideoConfig.from_env()
    assert config.server.port == 50054 and config.server.metrics_port == 9104
    assert config.photo_avatars and config.default_avatar == "" and not config.burn_clock
    assert (config.max_queued_frames, config.max_streams, config.crf, config.max_kbps, config.warm_size) == (
        50,
        64,
        23,
        3000,
        512,
    )
    assert config.cpu_budget_cores > 0 and config.speaking_share == 0.25


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "VIDEO_PHOTO_AVATARS": "0",
        "VIDEO_DEFAULT_AVATAR": "drawn",
        "VIDEO_CPU_BUDGET": "1.5",
        "VIDEO_BURN_CLOCK": "1",
        "VIDEO_WARM_SIZE": "0",
    }.items():
        monkeypatch.setenv(name, value)
    config = VideoConfig.from_env()
    assert not config.photo_avatars and config.default_avatar == "drawn" and config.burn_clock
    assert config.cpu_budget_cores == 1.5 and config.warm_size == 0


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("VIDEO_MAX_STREAMS", "0", "VIDEO_MAX_STREAMS"),
        ("VIDEO_CRF", "high", "VIDEO_CRF"),
        ("VIDEO_SPEAKING_SHARE", "2", "VIDEO_SPEAKING_SHARE"),
        ("VIDEO_CPU_BUDGET", "-1", "VIDEO_CPU_BUDGET"),
    ],
)
def test_a_bad_value_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        VideoConfig.from_env()
