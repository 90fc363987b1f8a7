"""A session's four peer streams (llm, tts, video, packager) as one part: where they go, and sending on them.

Each is a PeerLink (services.session.peers) with its config message and the bound on what a session holds for a
peer. The video stream follows its placement: when it breaks, room is reserved on the best worker before it
reconnects, and its queued drives are dropped (a new worker is sent everything again once it is ready). The packager
stream is not reconnected: a playlist cannot be resumed mid-stream. A send that cannot go out is answered with the
status code and sentence an utterance fails with, so the caller decides what it costs. What the peers answer, and
what a lost stream means, belong to the parts the coordinator hands in (`on_response`, `on_down`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from avatar.v1 import llm_pb2_grpc, tts_pb2_grpc
from services.session.peers import OutboxFull, PeerLink, PeerRefused
from services.session.placement import Packager, Packagers, VideoWorker, VideoWorkers

log = logging.getLogger(__name__)

Unsent = tuple[grpc.StatusCode, str]  # why not sent: RESOURCE_EXHAUSTED (outbox full), FAILED_PRECONDITION (refused)


class SessionStartError(Exception):
    """The session's streams could not be brought up."""


@dataclass
class PeerStubs:
    """The peer services: stubs on shared channels to llm and tts; the video workers and packagers sessions are
    placed on."""

    llm: llm_pb2_grpc.LlmServiceStub
    tts: tts_pb2_grpc.TtsServiceStub
    video: VideoWorkers
    packagers: Packagers


@dataclass
class Readiness:
    """What the streams said about themselves: the video worker put the idle loop on the packager (or refused), it
    is connected now, the packager opened the playlist (None) or refused it (why), the playlist ended."""

    video_ready: asyncio.Future[None]
    packager_accepted: asyncio.Future[str | None]
    playlist_ended: asyncio.Event = field(default_factory=asyncio.Event)
    video_connected: bool = False

    @classmethod
    def new(cls) -> Readiness:
        loop = asyncio.get_running_loop()
        return cls(loop.create_future(), loop.create_future())


class SessionLinks:
    def __init__(
        self,
        stubs: PeerStubs,
        configs: dict[str, Message],
        *,
        session_id: str,
        stream_id: str,
        video_worker: VideoWorker,
        packager: Packager,
        outbox_bytes: int,
        on_response: Callable[[str, Any], None],
        on_down: Callable[[str, Exception], None],
    ) -> None:
        """`configs`: each stream's first message, by component. `video_worker` and `packager`: where the session
        was placed (released by `release_placement`). `on_response(component, response)`, `on_down(component,
        error)`: what a peer said, or that its stream broke."""
        self.stubs = stubs
        self.video_worker = video_worker
        self.packager = packager
        self.placement_released = False
        self.ready = Readiness.new()
        self._on_down = on_down

        def link(component: str, open_call: Callable[..., Any], key: str, **options: Any) -> PeerLink:
            return PeerLink(
                component,
                open_call,
                configs[component],
                key,
                lambda response: on_response(component, response),
                lambda error: self._down(component, error),
                **options,
            )

        self.peers = {
            "llm": link("llm", stubs.llm.Generate, session_id),
            "tts": link("tts", stubs.tts.Synthesize, session_id),
            "video": link(
                "video",
                lambda **kwargs: self.video_worker.stub.Render(**kwargs),
                session_id,
                before_reconnect=self._place_video_again,
            ),
            # A playlist cannot be resumed mid-stream: losing it ends the session.
            "packager": link("packager", packager.stub.Publish, stream_id, reconnect=False),
        }
        for peer in self.peers.values():
            peer.max_bytes = outbox_bytes  # whatever a peer does, a session holds at most this for it

    def __getitem__(self, component: str) -> PeerLink:
        return self.peers[component]

    def start(self, *components: str) -> None:
        for component in components:
            self.peers[component].start()

    def send(self, component: str, message: Message) -> Unsent | None:
        """Queues `message` for `component`; what stopped it, if anything (nothing is queued then)."""
        try:
            self.peers[component].send(message)
        except OutboxFull as error:
            return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
        except PeerRefused as error:
            return grpc.StatusCode.FAILED_PRECONDITION, str(error)
        return None

    async def close(self) -> None:
        await asyncio.gather(*(peer.close() for peer in self.peers.values()), return_exceptions=True)
        self.release_placement()

    def release_placement(self) -> None:
        if not self.placement_released:
            self.placement_released = True
            self.stubs.video.release(self.video_worker)
            self.stubs.packagers.release(self.packager)

    def _down(self, component: str, error: Exception) -> None:
        if component == "video":  # its queued drives are dropped: a new worker is sent everything once it is ready
            self.ready.video_connected = False
            self.peers["video"].clear_outbox()
        self._on_down(component, error)

    async def _place_video_again(self) -> None:
        """The video stream broke (its worker died, restarted or refused): reserve room on the best worker now
        (NoCapacity: the link waits and asks again; the idle loop shows meanwhile)."""
        lost = self.video_worker
        if not self.placement_released:
            self.stubs.video.release(lost)
        self.video_worker = await self.stubs.video.place(avoid=lost.addr)
        if self.placement_released:  # the session ended while waiting
            self.stubs.video.release(self.video_worker)
        elif self.video_worker.addr != lost.addr:
            log.info("video stream placed on another worker", extra={"from": lost.addr, "to": self.video_worker.addr})
