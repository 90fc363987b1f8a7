"""Generates the client's avatar.v1 modules from the .proto files, at build time, with the pinned grpcio-tools.

Why at build time: the .proto files in the repository's `protos/` are the one source of truth; a copy made by hand
would go stale. The wheel gets exactly what `session.proto` needs (it and the files it imports, transitively), with
messages (`_pb2.py`), typed stubs (`_pb2.pyi`) and the gRPC stub of the public service (`session_pb2_grpc.py`).

These are the only copy of the public API's generated code: the server and the repository's CLI import them from
this package too (scripts/install.sh installs it editable, which writes them into the source tree, gitignored).
`shipped_files()` names them; protos/generate.py leaves exactly those out of the server's own `avatar.v1`, which
holds only the internal services' modules and imports the public ones from here.

Why the imports are rewritten: protoc writes `from avatar.v1 import tts_pb2` for a file that imports
`avatar/v1/tts.proto`. Installed as a top-level `avatar` package, the client would clash with the server's own
`avatar` package in the same environment (and shadow or be shadowed by it). So the modules live in
`infinitetalk_live_client.avatar.v1` and their `avatar.` imports become `infinitetalk_live_client.avatar.`; nothing
else changes (tests/test_client_python.py compares the result with protoc's plain output).

Where the .proto files come from: inside an sdist, its own `protos/` (the sdist step copies them there); in the
repository, `../../protos`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_PROTOS = HERE.parent.parent / "protos"
BUNDLED_PROTOS = HERE / "protos"  # only inside an sdist
GEN_DIR = Path("infinitetalk_live_client", "avatar", "v1")
# The public API; the files it imports are found by following `import` lines.
ROOT_PROTO = "avatar/v1/session.proto"
# Files whose services the client calls: only they get a _pb2_grpc.py (the internal services' stubs stay out).
SERVICE_PROTOS = ("avatar/v1/session.proto",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
PACKAGE_PREFIX = "infinitetalk_live_client."

_IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.MULTILINE)
_AVATAR_IMPORT = re.compile(r"^(from|import) avatar\.", re.MULTILINE)
# The module's own name, which protobuf gives its classes as __module__ (pickle and introspection look it up).
_MODULE_NAME = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')avatar\.")


def proto_root() -> Path:
    """The directory holding `avatar/v1/*.proto`: the sdist's bundled copy when building from an sdist (PKG-INFO marks
    one), else the repository's, so an in-tree build can never use a stale copy."""
    if (HERE / "PKG-INFO").exists() and (BUNDLED_PROTOS / ROOT_PROTO).is_file():
        return BUNDLED_PROTOS
    if (REPO_PROTOS / ROOT_PROTO).is_file():
        return REPO_PROTOS
    raise SystemExit(
        f"infinitetalk-live-client: {ROOT_PROTO} not found in {REPO_PROTOS} nor in {BUNDLED_PROTOS}: build from the "
        "repository's clients/python or from an sdist made there"
    )


def needed_protos(root: Path) -> list[str]:
    """`ROOT_PROTO` and every avatar/ file it imports, transitively (google/protobuf/* come with protobuf itself)."""
    seen: set[str] = set()
    pending = [ROOT_PROTO]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in _IMPORT.findall((root / name).read_text(encoding="utf-8")):
            if imported.startswith("avatar/"):
                pending.append(imported)
    return sorted(seen)


def shipped_files(root: Path) -> list[str]:
    """The names of the generated files the package ships (what `generate` writes): `x_pb2.py` and `x_pb2.pyi` for
    every needed .proto, `x_pb2_grpc.py` for `SERVICE_PROTOS` only."""
    names = [f"{Path(proto).stem}_pb2{ext}" for proto in needed_protos(root) for ext in (".py", ".pyi")]
    names += [f"{Path(proto).stem}_pb2_grpc.py" for proto in SERVICE_PROTOS]
    return sorted(names)


def rewrite_imports(source: str) -> str:
    """`from avatar.v1 import x_pb2` -> `from infinitetalk_live_client.avatar.v1 import x_pb2` (see the module doc),
    and the module's own name for its classes likewise; nothing else."""
    source = _AVATAR_IMPORT.sub(rf"\1 {PACKAGE_PREFIX}avatar.", source)
    return _MODULE_NAME.sub(rf"\1{PACKAGE_PREFIX}avatar.", source)


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc  # the build requirement; imported late so an sdist builds without it

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto as the generator knows them
    if protoc.main(["protoc", f"-I{include}", *args]) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


def generate(root: Path, package_dir: Path) -> list[Path]:
    """Writes the generated modules into `package_dir` (the build's infinitetalk_live_client/avatar/v1), replacing
    whatever generated modules were there, and returns their paths."""
    protos = needed_protos(root)
    with tempfile.TemporaryDirectory() as tmp:
        _protoc([f"-I{root}", f"--python_out={tmp}", f"--pyi_out={tmp}", *protos])
        _protoc([f"-I{root}", f"--grpc_python_out={tmp}", *SERVICE_PROTOS])
        package_dir.mkdir(parents=True, exist_ok=True)
        for stale in package_dir.iterdir():
            if stale.name.endswith(GENERATED_SUFFIXES):
                stale.unlink()
        written = []
        for source in sorted(Path(tmp, "avatar", "v1").iterdir()):
            target = package_dir / source.name
            text = rewrite_imports(source.read_text(encoding="utf-8"))
            if _AVATAR_IMPORT.search(text):
                raise SystemExit(f"{source.name}: an `avatar.` import was left unrewritten")
            target.write_text(text, encoding="utf-8")
            written.append(target)
    if sorted(path.name for path in written) != shipped_files(root):
        raise SystemExit(f"generated {sorted(path.name for path in written)}, expected {shipped_files(root)}")
    return written


def bundle(root: Path, release_dir: Path) -> None:
    """Copies the needed .proto files into an sdist's tree (`protos/avatar/v1/...`), so the sdist builds alone."""
    for name in needed_protos(root):
        target = release_dir / "protos" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, target)
