"""Builds the Python modules of avatar.v1 from the .proto files beside them.

Run `python protos/generate.py` after editing a .proto; `--check` fails when the committed code is stale (a test
runs it). The output is generated: never edit it by hand.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "avatar" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _generate(out_dir: Path) -> None:
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


def _generated_files(root: Path) -> dict[str, Path]:
    pkg = root / "avatar" / "v1"
    return {p.name: p for p in pkg.iterdir() if p.name.endswith(GENERATED_SUFFIXES)} if pkg.exists() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _generate(Path(tmp))
        fresh = _generated_files(Path(tmp))
        current = _generated_files(PROTO_ROOT)
        if args.check:
            stale = sorted(
                name
                for name in fresh.keys() | current.keys()
                if name not in fresh or name not in current or not filecmp.cmp(fresh[name], current[name], False)
            )
            if stale:
                print("generated code is stale, run python protos/generate.py:", ", ".join(stale), file=sys.stderr)
                return 1
            return 0
        for name in current.keys() - fresh.keys():
            current[name].unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, PACKAGE_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
