"""Build hooks (metadata lives in pyproject.toml): build_py generates avatar.v1 into the build, sdist bundles the
.proto files it is generated from. See build_protos.py for why and how."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

# Loaded by path: a PEP 517 backend does not promise that this directory is on sys.path.
_spec = importlib.util.spec_from_file_location("build_protos", Path(__file__).resolve().parent / "build_protos.py")
assert _spec is not None and _spec.loader is not None
build_protos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_protos)


class BuildPyWithProtos(build_py):
    """Copies the package as usual, then generates avatar.v1 beside it: into the build directory for a wheel, into
    the source tree for an editable install (where the files are gitignored)."""

    def run(self) -> None:
        super().run()
        base = build_protos.HERE if getattr(self, "editable_mode", False) else Path(self.build_lib)
        build_protos.generate(build_protos.proto_root(), base / build_protos.GEN_DIR)


class SdistWithProtos(sdist):
    """An sdist carries the .proto files, so a wheel builds from it where the repository is not around."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        build_protos.bundle(build_protos.proto_root(), Path(base_dir))


setup(cmdclass={"build_py": BuildPyWithProtos, "sdist": SdistWithProtos})
