"""services/common/lru.py: the one bounded least-recently-used map the services use."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.lru import Lru

REPO = Path(__file__).resolve().parent.parent


def test_a_count_cap_evicts_the_least_recently_used() -> None:
    evicted: list[tuple[str, int]] = []
    lru: Lru[str, int] = Lru(2, on_evict=lambda key, value: evicted.append((key, value)))
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # now the most recent
    lru.put("c", 3)
    assert list(lru) == ["a", "c"] and evicted == [("b", 2)]
    assert "b" not in lru and lru.get("b") is None and lru.get("b", 0) == 0


def test_peek_membership_and_iteration_do_not_refresh() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.peek("a") == 1 and "a" in lru and list(lru.values()) == [1, 2] and next(lru.items()) == ("a", 1)
    lru.put("c", 3)
    assert list(lru) == ["b", "c"]
    assert lru.peek("a") is None and lru.peek("a", -1) == -1


def test_put_replaces_and_refreshes() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.put("a", 10)
    lru.put("c", 3)
    assert dict(lru.items()) == {"a": 10, "c": 3}


def test_a_weight_budget_evicts_oldest_but_keeps_one_heavy_entry() -> None:
    evicted: list[str] = []
    lru: Lru[str, bytes] = Lru(max_weight=10, weigh=len, on_evict=lambda key, _: evicted.append(key))
    lru.put("a", b"1234")
    lru.put("b", b"1234")
    assert lru.weight == 8 and not evicted
    lru.put("c", b"1234")
    assert list(lru) == ["b", "c"] and lru.weight == 8 and evicted == ["a"]
    lru.put("big", b"x" * 50)  # heavier than the whole budget: kept alone
    assert list(lru) == ["big"] and lru.weight == 50
    lru.put("small", b"12")
    assert list(lru) == ["small"] and lru.weight == 2


def test_replacing_a_weighed_entry_counts_its_new_weight_only() -> None:
    lru: Lru[str, bytes] = Lru(max_weight=100, weigh=len)
    lru.put("a", b"x" * 10)
    lru.put("a", b"x" * 30)
    assert lru.weight == 30
    assert lru.pop("a") == b"x" * 30 and lru.weight == 0 and len(lru) == 0
    assert lru.pop("a") is None and lru.pop("a", b"") == b""


def test_both_limits_and_clear() -> None:
    evicted: list[str] = []
    lru: Lru[str, bytes] = Lru(3, max_weight=10, weigh=len, on_evict=lambda key, _: evicted.append(key))
    for key in "abcd":
        lru.put(key, b"12")
    assert list(lru) == ["b", "c", "d"] and evicted == ["a"]
    lru.put("e", b"123456")
    assert list(lru) == ["c", "d", "e"] and lru.weight == 10
    lru.clear()
    assert len(lru) == 0 and lru.weight == 0 and evicted == ["a", "b"]  # clear is not an eviction


def test_a_cap_of_zero_keeps_nothing() -> None:
    lru: Lru[str, int] = Lru(0)
    lru.put("a", 1)
    assert len(lru) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"max_items": -1}, {"max_weight": 10}],  # no limit; a negative cap; a budget without weigh
)
def test_nonsense_limits_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Lru(**kwargs)


def test_the_services_use_the_one_class() -> None:
    """No service hand-writes the pattern again (an OrderedDict evicting with popitem(last=False)); the packager's
    idle loops stay apart on purpose: pinned loops are never evicted, whatever their age."""
    allowed = {"services/common/lru.py", "services/packager/loops.py"}
    found = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "services").rglob("*.py")
        if "popitem(last=False)" in path.read_text("utf-8") or "move_to_end(" in path.read_text("utf-8")
    )
    assert set(found) <= allowed, found
