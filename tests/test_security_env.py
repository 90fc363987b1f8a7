"""Each process of the local stack sees only the environment it needs: provider keys reach the llm and the tts
only, the session service's API keys the session only, Envoy the base only (infinitetalk_live/envscope.py). Checked on
the computed environments, against every variable the services' code reads, and in /proc/<pid>/environ of a real
running stack."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import pytest

from infinitetalk_live import envscope
from infinitetalk_live.ports import GATEWAY, SERVICE_ORDER, StackPorts, service_of
from infinitetalk_live.stack import Supervisor, shared_box_voice_env

ROOT = Path(__file__).resolve().parent.parent
OPENAI_KEY = "sk-envtest-OPENAI-0123456789"
ELEVENLABS_KEY = "sk_envtestELEVENLABS0123456789"
API_KEYS = "itk-envtest-apikey-0123456789abcdef"
FILE_KEY = "itk-envtest-filekey-0123456789abcdef"
HLS_KEY = "itk-envtest-hls-signing-key-0123456789abcdef"

# variable -> the services that may see it (GATEWAY never appears: Envoy gets the base only)
SECRETS: dict[str, set[str]] = {
    "OPENAI_API_KEY": {"llm", "tts"},
    "OPENAI_BASE_URL": {"llm", "tts"},
    "ELEVENLABS_API_KEY": {"tts"},
    "SESSION_API_KEYS": {"session"},
    "SESSION_API_KEYS_FILE": {"session"},
    "HLS_SIGNING_KEY": {"session", "packager"},
    "HTTPS_PROXY": {"llm", "tts"},
    "GITHUB_TOKEN": set(),
    "AWS_SECRET_ACCESS_KEY": set(),
    "HF_TOKEN": set(),
    "DATABASE_URL": set(),
}


def secret_environment(monkeypatch: pytest.MonkeyPatch, keys_file: Path) -> None:
    values = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": "https://api.openai.com/v1",
        "ELEVENLABS_API_KEY": ELEVENLABS_KEY,
        "SESSION_API_KEYS": API_KEYS,
        "SESSION_API_KEYS_FILE": str(keys_file),
        "HLS_SIGNING_KEY": HLS_KEY,
        "HTTPS_PROXY": "http://user:proxy-password@127.0.0.1:1",
        "NO_PROXY": "127.0.0.1,localhost",
        "GITHUB_TOKEN": "ghp_envtest0123456789abcdefghij",
        "AWS_SECRET_ACCESS_KEY": "envtest-aws-secret",
        "HF_TOKEN": "hf_envtest0123456789abcdefghij",
        "DATABASE_URL": "postgres://user:pw@db.internal:5432/x",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLM_PROVIDER", raising=False)
    monkeypatch.delenv("TTS_PROVIDER", raising=False)


def check_scoped(name: str, env: dict[str, str]) -> None:
    """`env` (process `name`'s environment) holds exactly the SECRETS meant for it, and nothing it may not see."""
    service = GATEWAY if name == GATEWAY else service_of(name)
    for variable, readers in SECRETS.items():
        assert (variable in env) == (service in readers), (
            f"{variable} {'missing in' if variable not in env else 'leaked to'} {name}"
        )
    if service == GATEWAY:
        assert all(envscope.BASE.allows(variable) for variable in env), sorted(env)


def test_the_table_names_the_stacks_processes() -> None:
    assert envscope.GATEWAY == GATEWAY
    assert set(envscope.SERVICES) == set(SERVICE_ORDER) == set(envscope.SCOPES) - {GATEWAY}
    with pytest.raises(KeyError):
        envscope.allowed("mystery", "PATH")


def test_keys_reach_only_the_processes_that_use_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_environment(monkeypatch, tmp_path / "keys")
    supervisor = Supervisor(StackPorts.free(video_workers=2, packagers=2), report=False, gateway=True)
    names = set(supervisor.processes)
    assert names == {"session", "llm", "tts", "video-0", "video-1", "packager-0", "packager-1", GATEWAY}
    for name, managed in supervisor.processes.items():
        check_scoped(name, managed.env)
        assert "PATH" in managed.env and "HOME" in managed.env
    gateway = supervisor.processes[GATEWAY].env
    assert set(gateway) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP"} | {
        name for name in gateway if name.startswith("LC_")
    }


def test_each_service_still_gets_its_ports_peers_and_the_callers_extra_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_SESSIONS", "7")
    monkeypatch.setenv("VIDEO_CRF", "30")
    monkeypatch.setenv("VIDEO_WIDTH", "256")
    monkeypatch.setenv("PACKAGER_MAX_STREAMS", "9")
    monkeypatch.setenv("LLM_MODEL", "some-model")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    ports = StackPorts.free(video_workers=2)
    supervisor = Supervisor(ports, report=False, gateway=True, extra_env={"VIDEO_BURN_CLOCK": "1"})
    for name, managed in supervisor.processes.items():
        env = managed.env
        if name == GATEWAY:
            assert "VIDEO_BURN_CLOCK" not in env and "LOG_LEVEL" not in env
            continue
        assert env["VIDEO_BURN_CLOCK"] == "1"  # explicit extra_env reaches every service, as it always did
        assert (env["HOST"], env["PORT"]) == (ports.host, str(ports.grpc[name])) and env["LOG_LEVEL"] == "DEBUG"
        service = service_of(name)
        assert ("MAX_SESSIONS" in env) == (service == "session")
        assert ("VIDEO_CRF" in env) == (service == "video")
        assert ("VIDEO_WIDTH" in env) == (service in ("video", "session"))  # the session reads it too
        assert ("PACKAGER_MAX_STREAMS" in env) == (service == "packager")
        assert ("LLM_MODEL" in env) == (service == "llm")
    session = supervisor.processes["session"].env
    assert session["VIDEO_ADDR"] == ports.addrs("video") and session["LLM_ADDR"] == ports.addr("llm")
    assert session["PUBLIC_HLS_URL"] == ports.gateway_url
    assert supervisor.processes["packager"].env["HTTP_PORT"] == str(ports.http)


def test_the_local_voice_keeps_at_most_half_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """On one box with the whole stack, Piper's threads x its sentences at once stay within half the cores."""
    assert shared_box_voice_env({}, 1) == {"TTS_THREADS": "1", "TTS_CONCURRENCY": "1"}
    assert shared_box_voice_env({}, 2) == {"TTS_THREADS": "1", "TTS_CONCURRENCY": "1"}
    assert shared_box_voice_env({}, 4) == {"TTS_THREADS": "2", "TTS_CONCURRENCY": "1"}
    assert shared_box_voice_env({}, 16) == {"TTS_THREADS": "2", "TTS_CONCURRENCY": "4"}
    # What the caller sets stands; the other one follows from it.
    assert shared_box_voice_env({"TTS_THREADS": "2"}, 2) == {"TTS_CONCURRENCY": "1"}
    assert shared_box_voice_env({"TTS_THREADS": "1"}, 16) == {"TTS_CONCURRENCY": "8"}
    assert shared_box_voice_env({"TTS_THREADS": "1", "TTS_CONCURRENCY": "3"}, 2) == {}
    assert shared_box_voice_env({"TTS_THREADS": "lots"}, 2) == {}, "left for the tts service to refuse"
    monkeypatch.delenv("TTS_THREADS", raising=False)
    monkeypatch.setenv("TTS_CONCURRENCY", "2")
    supervisor = Supervisor(StackPorts.free(), report=False, gateway=False)
    tts = supervisor.processes["tts"].env
    assert tts["TTS_CONCURRENCY"] == "2" and int(tts["TTS_THREADS"]) in (1, 2)
    assert "TTS_THREADS" not in supervisor.processes["video"].env


_READS = (
    re.compile(r"(?:env_str|env_int|env_float|env_bool|environ\.get|getenv|env\.get|number)\(\s*\"([A-Z][A-Z0-9_]*)\""),
    re.compile(r"environ\[\s*\"([A-Z][A-Z0-9_]*)\"\s*\]"),
    re.compile(r"^\s*[A-Z_]*ENV\s*=\s*\"([A-Z][A-Z0-9_]*)\"", re.MULTILINE),
)


def variables_read(path: Path) -> set[str]:
    found: set[str] = set()
    for source in path.rglob("*.py") if path.is_dir() else [path]:
        text = source.read_text()
        for pattern in _READS:
            found.update(pattern.findall(text))
    return found


def common_variables(service: str) -> set[str]:
    """What the services/common modules that `service` uses read: those its own code imports, and the bootstrap's
    (services.common.server and what it imports), which every service runs."""
    common = ROOT / "services" / "common"
    bootstrap = (common / "server.py").read_text()
    own_code = "\n".join(source.read_text() for source in (ROOT / "services" / service).rglob("*.py"))
    found: set[str] = set()
    for module in common.glob("*.py"):
        name = f"services.common.{module.stem}"
        if module.stem == "server" or name in bootstrap or name in own_code:
            found |= variables_read(module)
    return found


def test_every_variable_a_service_reads_reaches_it() -> None:
    """Reads the services' code for the variables it reads: a new one that no row allows fails here, not in a
    deployment where the service silently falls back to its default."""
    assert {"HOST", "PORT", "LOG_LEVEL", "SHUTDOWN_GRACE_S"} <= common_variables("llm")
    for service in SERVICE_ORDER:
        own = variables_read(ROOT / "services" / service)
        assert own, f"found no variable read in services/{service}: the patterns have rotted"
        missing = sorted(name for name in own | common_variables(service) if not envscope.allowed(service, name))
        assert not missing, f"services/{service} reads {missing}, which infinitetalk_live/envscope.py does not give it"
    assert {"OPENAI_API_KEY", "LLM_MODEL"} <= variables_read(ROOT / "services" / "llm")
    assert {"ELEVENLABS_API_KEY", "TTS_THREADS", "TTS_FIRST_BYTE_TIMEOUT_S"} <= variables_read(
        ROOT / "services" / "tts"
    )
    assert {"FACE_MODEL_DIR", "INFINITETALK_WAN_DIR", "WORLD_SIZE"} <= variables_read(ROOT / "services" / "video")


def read_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0") if entry)
    return {name: value for name, _, value in pairs}


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(FILE_KEY + "\n")
    return path


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
async def test_running_processes_hold_only_their_own_keys(monkeypatch: pytest.MonkeyPatch, keys_file: Path) -> None:
    """The real stack (five services and Envoy, as `up` starts them): /proc/<pid>/environ of each process."""
    secret_environment(monkeypatch, keys_file)
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-envtest-"))
    supervisor = Supervisor(StackPorts.free(), log_dir=logs, report=False, extra_env={"VIDEO_WARM_SIZE": "0"})
    async with supervisor.running():
        seen = {name: read_environ(supervisor.pid(name)) for name in supervisor.processes}
    assert set(seen) == {*SERVICE_ORDER, GATEWAY}
    for name, env in seen.items():
        check_scoped(name, env)
    assert seen["llm"]["OPENAI_API_KEY"] == OPENAI_KEY and seen["tts"]["ELEVENLABS_API_KEY"] == ELEVENLABS_KEY
    assert seen["session"]["SESSION_API_KEYS"] == API_KEYS
    for name, env in seen.items():
        if name not in ("llm", "tts"):
            assert not [v for v in env.values() if OPENAI_KEY in v or ELEVENLABS_KEY in v], name
        if name != "session":
            assert not [v for v in env.values() if API_KEYS in v], name
    for log, text in await asyncio.to_thread(read_logs, logs):
        assert not [key for key in (OPENAI_KEY, ELEVENLABS_KEY, API_KEYS, FILE_KEY) if key in text], log


def read_logs(logs: Path) -> list[tuple[str, str]]:
    return [(log.name, log.read_text(errors="replace")) for log in sorted(logs.glob("*.log"))]
