"""What the session's clock (services.session.playout) sends out as it places and commits frames: drives to the video
worker, chunk commits to the packager, and the pre-roll's expected start to the watchers.

A drive goes out only while a video worker is connected; otherwise it is marked unsent, and the next worker gets it
with every other frame of the chunks it must render once it is ready (after the clock: a new worker knows nothing).
A commit the packager cannot take (its outbox is full) means it is not keeping up: the playlist is lost.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from infinitetalk_live_client.avatar.v1 import session_pb2
from services.common.media import frame_start_us
from services.session import messages
from services.session.chunks import ChunkPlan, CommitPlan
from services.session.links import SessionLinks
from services.session.narration import Narrator
from services.session.timeline import FrameSlot, Timeline


class ClockOutputs:
    def __init__(
        self,
        links: SessionLinks,
        timeline: Timeline,
        plan: ChunkPlan,
        narrator: Narrator,
        media_epoch: Callable[[], Timestamp],
        lose_playlist: Callable[[str], None],
    ) -> None:
        """`media_epoch()`: the wall-clock time of media time 0. `lose_playlist(why)`: the session's playlist is gone
        (nothing happens once the session is ending)."""
        self.links = links
        self.timeline = timeline
        self.plan = plan
        self.narrator = narrator
        self._media_epoch = media_epoch
        self._lose_playlist = lose_playlist

    def drive(self, slot: FrameSlot) -> None:
        if self.links.ready.video_connected:
            self.links.send("video", messages.frame_drive(slot))
        else:  # the next worker gets it when it is ready
            self.plan.sent.discard(slot.frame_index)

    def send_clock(self) -> None:
        self.links.send("video", messages.clock(self._media_epoch()))

    def video_back(self) -> None:
        """The video stream is up again, maybe on a new worker that knows nothing: the clock, and every frame of the
        chunks it must render."""
        self.send_clock()
        for slot in self.plan.reconnected(self.timeline.slots):
            self.links.send("video", messages.frame_drive(slot))

    def commit(self, plan: CommitPlan) -> None:
        unsent = self.links.send("packager", messages.chunk_commit(plan))
        if unsent is not None and unsent[0] == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._lose_playlist("the packager is not keeping up with the stream")

    def announce_preroll(self, utterance_id: str, start_frame: int) -> None:
        self.narrator.set_state(
            session_pb2.SESSION_STATE_RENDERING,
            utterance_id,
            expected_start_us=frame_start_us(start_frame, self.timeline.fps),
        )
