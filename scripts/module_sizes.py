"""Fails when a hand-written Python or TypeScript module is over LIMIT lines (issue 15: no module over ~400 lines).

In scope: the production trees in ROOTS. Out of scope: tests and bench, test files (`*.test.ts`), generated code
(protoc / buf output). Today's offenders are allowlisted, each pinned at its size when the check came in: one may
shrink but not grow, and the list is what issue 15 still has to split. Split a module under the limit, then delete its
entry (the check fails on an entry that is within the limit or no longer exists, so the list stays true).

Usage: python scripts/module_sizes.py [repository root]
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

LIMIT = 400
ROOTS = (
    "services",
    "infinitetalk_live",
    "gateway",
    "clients/python/infinitetalk_live_client",
    "clients/node/src",
    "web/src",
)
SUFFIXES = (".py", ".ts", ".tsx")
GENERATED = (  # folders of generated code, not to be split by hand
    "clients/python/infinitetalk_live_client/avatar/",
    "clients/node/src/gen/",
    "web/src/gen/",
)
GENERATED_NAME = re.compile(r"_pb2(_grpc)?\.pyi?$|\.d\.ts$")
TEST_NAME = re.compile(r"\.test\.tsx?$")
SKIPPED_DIRS = {"__pycache__", "node_modules"}

# Offenders pinned at their line counts, each with what it still mixes (and so where to split it). Empty since the
# split of 2026-11-30: a module that grows past the limit is split, not pinned.
ALLOWLIST: dict[str, int] = {}


def in_scope(path: str) -> bool:
    """Whether `path` (relative to the repository root, with /) is a hand-written module under the limit's rule."""
    return (
        path.endswith(SUFFIXES)
        and any(path.startswith(root + "/") for root in ROOTS)
        and not path.startswith(GENERATED)
        and not GENERATED_NAME.search(path)
        and not TEST_NAME.search(path)
    )


def count_lines(data: bytes) -> int:
    return len(data.splitlines())


def module_paths(root: Path) -> Iterable[str]:
    for top in ROOTS:
        for folder, dirs, files in os.walk(root / top):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                path = (Path(folder) / name).relative_to(root).as_posix()
                if in_scope(path):
                    yield path


def check(sizes: Mapping[str, int], allowlist: Mapping[str, int], limit: int = LIMIT) -> tuple[list[str], list[str]]:
    """(failures, notes) for modules of `sizes` (path: lines) against the limit and the allowlist's pins."""
    failures, notes = [], []
    for path, lines in sorted(sizes.items()):
        pinned = allowlist.get(path)
        if pinned is None:
            if lines > limit:
                failures.append(f"{path}: {lines} lines, over the limit of {limit}: split it")
        elif lines > pinned:
            failures.append(f"{path}: {lines} lines, over its pin of {pinned} (allowlisted, it may not grow): split it")
        elif lines <= limit:
            failures.append(f"{path}: {lines} lines, within the limit of {limit}: delete its allowlist entry")
        elif lines < pinned:
            notes.append(f"{path}: {lines} lines, under its pin of {pinned}: lower the pin")
    for path in sorted(set(allowlist) - set(sizes)):
        failures.append(f"{path}: allowlisted but not a module in scope: delete its allowlist entry")
    return failures, notes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    sizes = {path: count_lines((root / path).read_bytes()) for path in module_paths(root)}
    failures, notes = check(sizes, ALLOWLIST)
    for line in notes:
        print(f"module_sizes: note: {line}")
    for line in failures:
        print(f"module_sizes: {line}", file=sys.stderr)
    if failures:
        return 1
    pinned = f" but the {len(ALLOWLIST)} allowlisted" if ALLOWLIST else ""
    print(f"module_sizes: {len(sizes)} modules, none over {LIMIT} lines{pinned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
