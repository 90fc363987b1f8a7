"""docs/ARCHITECTURE.md stays true: every module it names exists, and every module of the services, the tool package
and the gateway renderer is named in it (a new module gets its line, a removed one loses it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = ("services", "infinitetalk_live", "gateway")


def named_modules() -> set[str]:
    return set(re.findall(r"`((?:services|infinitetalk_live|gateway)/[\w/]+\.py)`", DOC.read_text()))


def tree_modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_every_named_module_exists() -> None:
    missing = sorted(name for name in named_modules() if not (ROOT / name).is_file())
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"


def test_every_module_is_named() -> None:
    unnamed = sorted(tree_modules() - named_modules())
    assert not unnamed, f"say in docs/ARCHITECTURE.md where these modules fit: {unnamed}"
