"""A bounded map that forgets its least recently used entries: a count cap, a weight (byte) budget, or both.

Why here: the services keep many small bounded memories (prepared portraits and warp rigs, drawn patches, encoded
idle loops, packager channels, the session service's rate buckets and ended sessions, a session's recent utterances,
a frame history, the tts service's per-utterance notes). Each was a hand-written OrderedDict with `move_to_end` and
`popitem(last=False)`, with small differences nobody chose. This one class states the rules once:

- `put` inserts or replaces an entry and makes it the most recent; `get` makes an entry the most recent too;
  `peek`, `in`, iteration and `values` do not (use them where reading must not keep an entry alive).
- After a `put`, the oldest entries go while there are more than `max_items`, and while the total weight is over
  `max_weight` with more than one entry left (an entry heavier than the whole budget is kept alone rather than
  thrown away at once). `on_evict(key, value)` hears of each entry evicted (not of `pop`, `clear` or replacement).

Not thread-safe: callers that share one across threads hold their own lock."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar, overload

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")

__all__ = ["Lru"]

_MISSING = object()


class Lru(Generic[K, V]):
    """A bounded least-recently-used map (see the module docstring for its rules)."""

    __slots__ = ("_items", "_weights", "max_items", "max_weight", "on_evict", "weigh", "weight")

    def __init__(
        self,
        max_items: int | None = None,
        *,
        max_weight: int | None = None,
        weigh: Callable[[V], int] | None = None,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        if max_items is None and max_weight is None:
            raise ValueError("an Lru needs max_items, max_weight or both")
        if max_items is not None and max_items < 0:
            raise ValueError(f"max_items must be at least 0, not {max_items}")
        if max_weight is not None and weigh is None:
            raise ValueError("max_weight needs weigh, the weight of a value")
        self.max_items = max_items
        self.max_weight = max_weight
        self.weigh = weigh
        self.on_evict = on_evict
        self.weight = 0  # the total weight of the entries (0 without `weigh`)
        self._items: OrderedDict[K, V] = OrderedDict()
        self._weights: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first."""
        return iter(self._items)

    def values(self) -> Iterator[V]:
        """Values, least recently used first."""
        return iter(self._items.values())

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) pairs, least recently used first."""
        return iter(self._items.items())

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: object = None) -> object:
        """The value of `key`, now the most recently used; `default` when absent."""
        value = self._items.get(key, _MISSING)
        if value is _MISSING:
            return default
        self._items.move_to_end(key)
        return value

    @overload
    def peek(self, key: K) -> V | None: ...
    @overload
    def peek(self, key: K, default: D) -> V | D: ...
    def peek(self, key: K, default: object = None) -> object:
        """The value of `key` without making it more recent; `default` when absent."""
        return self._items.get(key, default)

    def put(self, key: K, value: V) -> None:
        """Stores `value` under `key` as the most recently used entry, then evicts what is over the limits."""
        if self.weigh is not None:
            weight = self.weigh(value)
            self.weight += weight - self._weights.get(key, 0)
            self._weights[key] = weight
        self._items[key] = value
        self._items.move_to_end(key)
        self._evict()

    @overload
    def pop(self, key: K) -> V | None: ...
    @overload
    def pop(self, key: K, default: D) -> V | D: ...
    def pop(self, key: K, default: object = None) -> object:
        """Removes `key` and returns its value (`default` when absent); not an eviction."""
        if key not in self._items:
            return default
        self.weight -= self._weights.pop(key, 0)
        return self._items.pop(key)

    def clear(self) -> None:
        self._items.clear()
        self._weights.clear()
        self.weight = 0

    def _evict(self) -> None:
        while (self.max_items is not None and len(self._items) > self.max_items) or (
            self.max_weight is not None and self.weight > self.max_weight and len(self._items) > 1
        ):
            key, value = self._items.popitem(last=False)
            self.weight -= self._weights.pop(key, 0)
            if self.on_evict is not None:
                self.on_evict(key, value)
