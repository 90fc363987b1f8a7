"""What a session tells its watchers (WatchSession): its state, and everything that happens to its utterances.

Every event carries the session's playout position (media time) and the wall-clock time it was emitted; a new
watcher first gets the current state, so it misses nothing from then on. Fan-out and each watcher's bound are the
EventBus's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from google.protobuf.timestamp_pb2 import Timestamp

from infinitetalk_live_client.avatar.v1 import session_pb2
from services.session.events import EventBus


class Narrator:
    def __init__(self, max_watchers: int, media_time_us: Callable[[], int]) -> None:
        self.bus = EventBus(max_watchers)
        self._media_time_us = media_time_us
        self.state = session_pb2.SESSION_STATE_IDLE
        self.utterance_id = ""
        self.expected_start_us = 0

    def set_state(self, state: int, utterance_id: str, expected_start_us: int = 0) -> None:
        """Tells a change of state (nothing when the state and its utterance are as they were)."""
        if state == self.state and utterance_id == self.utterance_id:
            return
        self.state = state
        self.utterance_id = utterance_id
        self.expected_start_us = expected_start_us
        self.emit(
            state_changed=session_pb2.StateChanged(
                state=state, utterance_id=utterance_id, expected_start_us=expected_start_us
            )
        )

    def emit(self, **event) -> None:
        """One WatchSessionResponse to every watcher, e.g. `emit(word_spoken=...)`."""
        self.bus.publish(self._event(**event))

    def watch(self) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        first = self._event(
            state_changed=session_pb2.StateChanged(
                state=self.state, utterance_id=self.utterance_id, expected_start_us=self.expected_start_us
            )
        )
        return self.bus.watch(first, lambda: self._event(heartbeat=session_pb2.Heartbeat()))

    def close(self) -> None:
        self.bus.close()

    def _event(self, **event) -> session_pb2.WatchSessionResponse:
        now = Timestamp()
        now.GetCurrentTime()
        return session_pb2.WatchSessionResponse(media_time_us=self._media_time_us(), time=now, **event)
