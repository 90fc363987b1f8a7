"""scripts/module_sizes.py: which files are in scope, and the limit and allowlist rules (pure, on made-up sizes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("scripts_module_sizes", ROOT / "scripts" / "module_sizes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sizes = _load()


@pytest.mark.parametrize(
    "path",
    [
        "services/session/live.py",
        "services/common/stream.py",
        "infinitetalk_live/cli.py",
        "gateway/render.py",
        "clients/python/infinitetalk_live_client/client.py",
        "clients/node/src/client.ts",
        "web/src/lib/controller.ts",
        "web/src/app/live-page.tsx",
    ],
)
def test_hand_written_modules_are_in_scope(path: str) -> None:
    assert sizes.in_scope(path)


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_video.py",  # tests and bench are out of scope
        "bench/pipeline.py",
        "scripts/module_sizes.py",
        "web/src/lib/playback.test.ts",
        "clients/node/src/events.test.ts",
        "clients/python/infinitetalk_live_client/avatar/v1/session_pb2.py",  # generated
        "clients/python/infinitetalk_live_client/avatar/v1/__init__.py",
        "clients/node/src/gen/avatar/v1/session_pb.ts",
        "web/src/gen/avatar/v1/session_pb.ts",
        "protos/avatar/v1/llm_pb2.py",
        "services/video/Dockerfile",  # not Python or TypeScript
        "web/src/app/globals.css",
        "servicesx/module.py",  # a prefix of a root is not the root
    ],
)
def test_tests_bench_generated_and_other_files_are_out_of_scope(path: str) -> None:
    assert not sizes.in_scope(path)


def test_lines_are_counted_as_wc_does() -> None:
    assert sizes.count_lines(b"") == 0
    assert sizes.count_lines(b"a\nb\n") == 2
    assert sizes.count_lines(b"a\nb") == 2
    assert sizes.count_lines(b"a\r\nb\r\n\n") == 3


def test_a_module_at_the_limit_passes_and_one_over_fails() -> None:
    failures, notes = sizes.check({"a.py": 400, "b.py": 401}, {}, limit=400)
    assert len(failures) == 1 and failures[0].startswith("b.py: 401 lines") and not notes


def test_an_allowlisted_module_may_stay_at_or_under_its_pin_but_not_grow() -> None:
    assert sizes.check({"big.py": 700}, {"big.py": 700}, limit=400) == ([], [])
    failures, notes = sizes.check({"big.py": 701}, {"big.py": 700}, limit=400)
    assert failures == ["big.py: 701 lines, over its pin of 700 (allowlisted, it may not grow): split it"]
    failures, notes = sizes.check({"big.py": 650}, {"big.py": 700}, limit=400)
    assert not failures and notes == ["big.py: 650 lines, under its pin of 700: lower the pin"]


def test_stale_allowlist_entries_fail() -> None:
    failures, _ = sizes.check({"split.py": 380}, {"split.py": 700, "gone.py": 500}, limit=400)
    assert failures == [
        "split.py: 380 lines, within the limit of 400: delete its allowlist entry",
        "gone.py: allowlisted but not a module in scope: delete its allowlist entry",
    ]


def test_the_walk_finds_modules_in_scope_only(tmp_path: Path) -> None:
    files = {
        "services/a.py": 3,
        "services/x/__pycache__/a.py": 1,
        "web/src/lib/c.ts": 2,
        "web/src/lib/c.test.ts": 2,
        "web/node_modules/d.ts": 1,
        "web/src/gen/e.ts": 1,
        "tests/f.py": 1,
    }
    for path, lines in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x\n" * lines)
    assert sorted(sizes.module_paths(tmp_path)) == ["services/a.py", "web/src/lib/c.ts"]


def test_the_allowlist_only_names_modules_over_the_limit() -> None:
    assert all(sizes.in_scope(path) and lines > sizes.LIMIT for path, lines in sizes.ALLOWLIST.items())
