"""The API reference (docs/api.md) is fresh and complete, and `buf breaking` against the release baseline
(protos/avatar-v1.binpb) stops a change that would break released clients."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2

from infinitetalk_live_client.avatar.v1 import session_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
BASELINE = PROTOS / "avatar-v1.binpb"
REFERENCE = ROOT / "docs" / "api.md"


def _load_reference():
    spec = importlib.util.spec_from_file_location("protos_reference", PROTOS / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


reference = _load_reference()


@pytest.fixture(scope="module")
def api():
    return reference.Api(reference.compile_protos())


def _buf() -> str:
    for candidate in (ROOT / "web" / "node_modules" / ".bin" / "buf", Path(sys.executable).parent / "buf"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("buf")
    if found is None:
        pytest.skip("no buf binary (cd web && npm ci installs it)")
    return found


def _breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_buf(), "breaking", str(protos), "--against", str(BASELINE)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the reference ---------------------------------------------------------------------------------------------------


def test_reference_is_fresh():
    result = subprocess.run(
        [sys.executable, str(PROTOS / "reference.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_reference_output_is_deterministic(api):
    again = reference.Api(reference.compile_protos())
    assert reference.render(api) == reference.render(again)


def test_public_api_is_fully_commented(api):
    """Every RPC, message, field, enum and enum value the public API reaches says what it is."""
    elements = list(api.public_elements())
    missing = [f"{e.kind} {e.name}" for e in elements if not e.comment]
    assert not missing, "add a // comment in the .proto for: " + ", ".join(missing)
    # The walk covers all of session.proto, as the runtime descriptors know it.
    names = {e.name for e in elements}
    file = session_pb2.DESCRIPTOR
    for service in file.services_by_name.values():
        assert {service.full_name} | {m.full_name for m in service.methods} <= names
    for message in file.message_types_by_name.values():
        assert {message.full_name} | {f.full_name for f in message.fields} <= names
    for enum in file.enum_types_by_name.values():
        assert {enum.full_name} | {f"{enum.full_name}.{v.name}" for v in enum.values} <= names
    assert {"avatar.v1.Avatar.name", "avatar.v1.Voice.name"} <= names  # reached through GetCatalogResponse


def test_reference_documents_every_public_field():
    text = REFERENCE.read_text(encoding="utf-8")
    for message in session_pb2.DESCRIPTOR.message_types_by_name.values():
        assert f"#### `{message.name}`" in text, message.name
        for field in message.fields:
            assert re.search(rf"^\| {field.number} \| `{field.name}` \|", text, re.M), field.full_name
    for enum in session_pb2.DESCRIPTOR.enum_types_by_name.values():
        for value in enum.values:
            assert f"| {value.number} | `{value.name}` |" in text, value.name
    for service in ("LlmService", "TtsService", "VideoService", "PackagerService"):
        assert f"#### `{service}`" in text.split("## Internal services", 1)[1], service


def test_reference_markdown_keeps_comment_text_visible():
    """Angle brackets outside code spans (e.g. /hls/<stream_id>/...) would vanish as HTML tags."""
    text = REFERENCE.read_text(encoding="utf-8")
    assert "/hls/&lt;stream_id&gt;/index.m3u8" in text
    prose = re.sub(r"`[^`]*`", "", text)
    tags = set(re.findall(r"<[^>]*>", prose)) - {"</a>", "<br>"}
    assert all(t.startswith(("<a id=", "<!--")) for t in tags), tags


def test_escape_keeps_code_spans():
    assert reference._escape("a <b> `<c>` d*e", table=True) == r"a &lt;b&gt; `<c>` d\*e"
    assert reference._escape("x | y", table=True) == r"x \| y"


# -- buf breaking ----------------------------------------------------------------------------------------------------


def test_breaking_config_covers_wire_and_json():
    config = yaml.safe_load((PROTOS / "buf.yaml").read_text())
    assert set(config["breaking"]["use"]) & {"FILE", "PACKAGE", "WIRE_JSON"}


def test_baseline_is_an_image_of_the_public_api():
    image = descriptor_pb2.FileDescriptorSet.FromString(BASELINE.read_bytes())  # a buf image is wire-compatible
    files = {f.name: f for f in image.file}
    assert {"avatar/v1/session.proto", "avatar/v1/packager.proto"} <= files.keys()
    session = next(m for m in files["avatar/v1/session.proto"].message_type if m.name == "Session")
    assert {f.name: f.number for f in session.field}["control_token"] == 10


def test_protos_pass_buf_breaking_against_the_baseline():
    result = _breaking(PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_protos(tmp_path: Path) -> Path:
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy, ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__", "*.binpb"))
    return copy


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("string control_token = 10;", "string control_token = 13;", "FIELD_NO_DELETE"),  # renumbered
        ("string control_token = 10;", "string session_token = 10;", "FIELD_SAME_"),  # renamed: JSON breaks
        ("int32 fps = 8;", "int64 fps = 8;", "FIELD_SAME_TYPE"),  # retyped
    ],
    ids=["renumbered", "renamed", "retyped"],
)
def test_buf_breaking_refuses_an_incompatible_change(tmp_path, old, new, rule):
    protos = _copy_protos(tmp_path)
    session = protos / "avatar" / "v1" / "session.proto"
    text = session.read_text()
    assert text.count(old) == 1
    session.write_text(text.replace(old, new))
    result = subprocess.run(
        [_buf(), "breaking", str(protos), "--against", str(BASELINE), "--error-format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, "buf breaking let an incompatible change through"
    assert rule in result.stdout, result.stdout + result.stderr
    assert "Session" in result.stdout


def test_buf_breaking_allows_additions_and_comments(tmp_path):
    protos = _copy_protos(tmp_path)
    session = protos / "avatar" / "v1" / "session.proto"
    text = session.read_text()
    old = "  google.protobuf.Timestamp expire_time = 12;\n"
    assert text.count(old) == 1
    session.write_text(text.replace(old, old + "  // A field added later.\n  string added_later = 13;\n"))
    result = _breaking(protos)
    assert result.returncode == 0, result.stdout + result.stderr
