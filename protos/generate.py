"""Builds the server's own Python modules of avatar.v1 from the .proto files beside them.

The public API's modules (`session.proto` and the files it imports, and the stub of `SessionService`) live once, in
the client package: `infinitetalk_live_client.avatar.v1`, generated when clients/python is built (its
build_protos.py, which also names them: `shipped_files`). The server and the CLI import them from there. This
script writes into `avatar/v1/` only the rest: the internal services' messages (llm, packager) and gRPC stubs (llm,
packager, tts, video), with their imports of public modules pointed at the client package, e.g. `from
infinitetalk_live_client.avatar.v1 import tts_pb2` in `tts_pb2_grpc.py`.

Run `python protos/generate.py` after editing a .proto: it rewrites those files and, where clients/python holds
generated modules (the editable install scripts/install.sh makes), refreshes them too. `--check` fails when any of
them is stale, missing or extra (a test runs it). The output is generated: never edit it by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "avatar" / "v1"
CLIENT_DIR = PROTO_ROOT.parent / "clients" / "python"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

_SERVICE = re.compile(r"^\s*service\s+\w+", re.MULTILINE)
_AVATAR_IMPORT = re.compile(r"^from avatar\.v1 import (\w+)", re.MULTILINE)


def _load_build_protos() -> ModuleType:
    """The client's generator, loaded by path (as its setup.py does): the split public/internal is defined there."""
    spec = importlib.util.spec_from_file_location("build_protos", CLIENT_DIR / "build_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_protos = _load_build_protos()
CLIENT_PACKAGE_DIR = CLIENT_DIR / build_protos.GEN_DIR


def _generate(out_dir: Path) -> None:
    """protoc's plain output for every .proto (messages, typed stubs, gRPC stubs) into `out_dir`/avatar/v1."""
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def _point_at_client(name: str, source: str, public: set[str]) -> str:
    """`from avatar.v1 import tts_pb2` -> `from infinitetalk_live_client.avatar.v1 import tts_pb2` for the modules
    the client ships; imports of internal modules stay."""
    prefix = f"from {build_protos.PACKAGE_PREFIX}avatar.v1 import "
    source = _AVATAR_IMPORT.sub(lambda m: prefix + m[1] if m[1] in public else m[0], source)
    if re.search(rf"^(from|import) avatar\.v1\b.*\b({'|'.join(sorted(public))})\b", source, re.MULTILINE):
        raise SystemExit(f"{name}: an import of a public module was left unrewritten")
    return source


def _server_files(raw: Path) -> dict[str, str]:
    """What the server keeps of protoc's output in `raw` (see `_generate`): every file the client does not ship,
    except the empty gRPC module of a .proto without a service, with its public imports pointed at the client."""
    shipped = set(build_protos.shipped_files(PROTO_ROOT))
    public = {name.removesuffix(".py") for name in shipped if name.endswith(".py")}
    with_services = {p.stem for p in PACKAGE_DIR.glob("*.proto") if _SERVICE.search(p.read_text(encoding="utf-8"))}
    kept = {}
    for path in sorted((raw / "avatar" / "v1").iterdir()):
        name = path.name
        if not name.endswith(GENERATED_SUFFIXES) or name in shipped:
            continue
        if name.endswith("_pb2_grpc.py") and name.removesuffix("_pb2_grpc.py") not in with_services:
            continue
        kept[name] = _point_at_client(name, path.read_text(encoding="utf-8"), public)
    return kept


def _client_files(out_dir: Path) -> dict[str, str]:
    """What the client's build writes (build_protos.generate) from these .proto files, by name."""
    return {p.name: p.read_text(encoding="utf-8") for p in build_protos.generate(PROTO_ROOT, out_dir)}


def _generated_files(package_dir: Path) -> dict[str, Path]:
    if not package_dir.is_dir():
        return {}
    return {p.name: p for p in package_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def _differing(fresh: dict[str, str], current: dict[str, Path]) -> list[str]:
    return sorted(
        name
        for name in fresh.keys() | current.keys()
        if name not in fresh or name not in current or current[name].read_text(encoding="utf-8") != fresh[name]
    )


def _write(fresh: dict[str, str], package_dir: Path) -> None:
    for name, path in _generated_files(package_dir).items():
        if name not in fresh:
            path.unlink()
    for name, text in fresh.items():
        (package_dir / name).write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the generated code differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _generate(Path(tmp, "raw"))
        server = _server_files(Path(tmp, "raw"))
        # The client's modules exist in the tree only after an editable install; a wheel's are checked by tests.
        client_current = _generated_files(CLIENT_PACKAGE_DIR)
        client = _client_files(Path(tmp, "client")) if client_current else {}
    if args.check:
        stale = [f"protos/avatar/v1/{name}" for name in _differing(server, _generated_files(PACKAGE_DIR))]
        stale += [f"clients/python/{build_protos.GEN_DIR}/{name}" for name in _differing(client, client_current)]
        if stale:
            print("generated code is stale, run python protos/generate.py:", ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    _write(server, PACKAGE_DIR)
    if client:
        _write(client, CLIENT_PACKAGE_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
