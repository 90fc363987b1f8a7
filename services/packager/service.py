"""PackagerService: each session's live fMP4 HLS playlist, muxed from already-encoded video and the session's audio.

Two streams meet here per session, joined by session id and a per-session token: the session's Publish (the clock:
one commit per chunk of the timeline, saying which pictures show and carrying the audio under them) and the video
worker's PublishVideo (the avatar's idle loop, uploaded once per packager, and the chunks it rendered for speech).
A commit of an idle chunk re-stamps the loop's pictures; a commit of a rendered chunk takes the worker's chunk, waits
a little when it is not there yet, and shows the loop instead when it is too late (reported as a stall). However the
Publish stream stops (end, half-close, error, cancel, server shutdown) the playlist gets ENDLIST.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from prometheus_client import Counter, Gauge

from avatar.v1 import packager_pb2, packager_pb2_grpc
from services.common.errors import abort_failed_precondition, abort_invalid_argument, abort_resource_exhausted
from services.common.interceptors import SESSION_ID_METADATA_KEY
from services.common.stream import InvalidRequest, bidi_stream
from services.packager.chunks import ChunkRejected, RenderedChunks
from services.packager.config import PackagerConfig
from services.packager.loops import IdleLoops, LoopError, LoopUpload, StoredLoop
from services.packager.muxer import SessionMuxer, VideoChunk
from services.packager.publishing import mux, publish_part, publish_remains, publish_segment
from services.packager.store import HlsStore, HlsStream, StreamExists
from services.packager.validation import check_commit, check_video_config, settings_from_config

log = logging.getLogger(__name__)

OFFLINE_WAIT_S = 600.0  # offline pacing: how long a commit waits for its rendered chunk

CHUNKS = Counter("packager_chunks_total", "Chunks muxed, by source", ["source"])
STALLED_CHUNKS = Counter("packager_stalled_chunks_total", "Rendered chunks not usable at their time", ["reason"])
LIVE_STREAMS = Gauge("packager_live_streams", "Playlists being published")
LOOPS_HELD = Gauge("packager_idle_loops", "Idle loops held")


def playlist_path(stream_id: str) -> str:
    return f"/hls/{stream_id}/index.m3u8"


@dataclass
class _SessionMedia:
    """What meets here for one session: its token, the chunks its worker rendered, and who is connected."""

    token: str
    chunks: RenderedChunks
    publishing: bool = False
    parameter_sets: tuple[bytes, bytes] | None = None  # the playlist's SPS and PPS, once it exists
    video_streams: int = 0  # PublishVideo streams open for this session
    video_generation: int = 0  # the newest stream's number: only it may add chunks


class PackagerServicer(packager_pb2_grpc.PackagerServiceServicer):
    def __init__(self, config: PackagerConfig, store: HlsStore) -> None:
        self.config = config
        self.store = store
        self.loops = IdleLoops(config.loop_cache_bytes)
        self._media: dict[str, _SessionMedia] = {}
        self._live: dict[str, HlsStream] = {}
        self._shutting_down = False

    @property
    def live_streams(self) -> int:
        return len(self._live)

    # -- shared state ---------------------------------------------------------------------------------------------

    async def _join(
        self, session_id: str, token: str, chunk_frames: int, context: grpc.aio.ServicerContext
    ) -> _SessionMedia:
        media = self._media.get(session_id)
        if media is None:
            if len(self._media) >= 2 * self.config.max_streams:
                await abort_resource_exhausted(
                    context, "packager sessions", f"the packager already serves {len(self._media)} sessions; try later"
                )
            media = self._media[session_id] = _SessionMedia(
                token, RenderedChunks(chunk_frames, self.config.max_rendered_bytes)
            )
        elif media.token != token:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "publish_token does not match this session's")
        elif media.chunks.chunk_frames != chunk_frames:
            await abort_invalid_argument(context, "config.chunk_frames", "chunk_frames differs from the session's")
        return media

    def _leave(self, session_id: str, media: _SessionMedia) -> None:
        if not media.publishing and media.video_streams == 0 and self._media.get(session_id) is media:
            del self._media[session_id]

    # -- the session's stream -------------------------------------------------------------------------------------

    @bidi_stream("Publish", session_field="stream_id")
    async def Publish(
        self,
        config: packager_pb2.PublishConfig,
        requests: AsyncIterator[packager_pb2.PublishRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[packager_pb2.PublishResponse]:
        settings = settings_from_config(config, self.config)
        session_id = config.stream_id  # the stream's id: the packager keeps playlists by it
        caller_id = dict(context.invocation_metadata() or ()).get(SESSION_ID_METADATA_KEY)
        if caller_id and caller_id != session_id:
            raise InvalidRequest(
                "config.stream_id", f"config.stream_id differs from the {SESSION_ID_METADATA_KEY} metadata"
            )
        if self._shutting_down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the packager is shutting down")
        if self.store.get(session_id) is not None:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} already has a playlist (live or recently ended)"
            )
        if len(self._live) >= self.config.max_streams:
            await abort_resource_exhausted(
                context, "packager streams", f"the packager already has {self.config.max_streams} playlists; try later"
            )
        loop = self.loops.get(config.idle_loop_id)
        if loop is None:
            await abort_failed_precondition(
                context,
                "config.idle_loop_id",
                f"idle loop {config.idle_loop_id} is not on this packager: the session's video worker uploads it first",
            )
        if (loop.width, loop.height, loop.fps, loop.chunk_frames) != (
            settings.width,
            settings.height,
            settings.fps,
            settings.chunk_frames,
        ):
            raise InvalidRequest("config.idle_loop_id", "the idle loop's size, rate or chunking differ")
        media = await self._join(session_id, config.publish_token, settings.chunk_frames, context)
        if media.publishing:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} is already publishing")
        epoch = config.media_epoch
        try:
            stream = self.store.open(
                session_id,
                epoch.seconds * 1_000_000 + epoch.nanos // 1000,
                settings.segment_frames * 1_000_000 // settings.fps,
                -(-settings.chunk_frames * 1_000_000 // settings.fps),  # rounded up: every part fits under it
            )
        except StreamExists:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} already has a playlist")
        media.publishing = True
        media.parameter_sets = (loop.sps, loop.pps)
        self.loops.pin(loop)
        muxer = SessionMuxer(settings, loop.sps, loop.pps)
        self.store.set_init(stream, muxer.init_segment)
        self._live[session_id] = stream
        LIVE_STREAMS.set(len(self._live))
        wait_s = OFFLINE_WAIT_S if config.offline else self.config.render_grace_s
        log.info("publish started", extra={"width": settings.width, "height": settings.height, "loop": loop.loop_id})
        finished = False
        try:
            yield packager_pb2.PublishResponse(
                ready=packager_pb2.PlaylistReady(playlist_path=playlist_path(session_id))
            )
            expected = 0
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "end" or stream.playlist.ended:  # ended: the packager is shutting down
                    break
                if kind != "chunk":
                    problem = "config may be sent only once" if kind == "config" else "set chunk or end"
                    raise InvalidRequest(kind or "request", problem)
                commit = request.chunk
                check_commit(commit, expected, settings)
                loop = self._current_loop(loop, commit.idle_loop_id)
                video = loop.chunk(commit.idle_chunk_index)
                if commit.rendered:
                    rendered = await media.chunks.take(commit.start_frame_index, commit.epoch, wait_s)
                    if isinstance(rendered, VideoChunk):
                        video = rendered
                        CHUNKS.labels("rendered").inc()
                    else:
                        STALLED_CHUNKS.labels(rendered).inc()
                        log.warning(
                            "rendered chunk not usable: the idle loop shows instead",
                            extra={"frame_index": commit.start_frame_index, "reason": rendered},
                        )
                        yield packager_pb2.PublishResponse(
                            stall=packager_pb2.ChunkStalled(
                                start_frame_index=commit.start_frame_index,
                                frame_count=settings.chunk_frames,
                                reason=rendered,
                            )
                        )
                else:
                    CHUNKS.labels("loop").inc()
                expected += settings.chunk_frames
                part, segment = await mux(muxer, video, commit)
                if stream.playlist.ended:  # ended by shutdown: what comes now has nowhere to go
                    continue
                # Both on the playlist before anyone (a held request) can see it in between.
                published = publish_part(self.store, stream, part)
                completed = publish_segment(self.store, stream, segment) if segment is not None else None
                yield packager_pb2.PublishResponse(part=published)
                if completed is not None:
                    yield packager_pb2.PublishResponse(segment=completed)
            last = muxer.finish() if not stream.playlist.ended else None
            if last is not None:
                yield packager_pb2.PublishResponse(segment=publish_segment(self.store, stream, last))
            finished = True
            self.store.end(stream)
            log.info("publish ended", extra={"segments": stream.playlist.next_sequence})
            yield packager_pb2.PublishResponse(
                ended=packager_pb2.PlaylistEnded(segment_count=stream.playlist.next_sequence)
            )
        finally:
            if not finished and not stream.playlist.ended:
                publish_remains(self.store, stream, muxer)
            self.store.end(stream)
            self.loops.unpin(loop)
            media.publishing = False
            if self._live.get(session_id) is stream:
                del self._live[session_id]
            LIVE_STREAMS.set(len(self._live))
            self._leave(session_id, media)

    def _current_loop(self, loop: StoredLoop, loop_id: str) -> StoredLoop:
        """The loop a commit names (re-pinned when it changes, e.g. the session moved to another worker); the
        current one when the named loop is unknown or cannot follow in this playlist."""
        if loop_id == loop.loop_id:
            return loop
        named = self.loops.get(loop_id)
        if named is None or (named.sps, named.pps, named.chunk_frames) != (loop.sps, loop.pps, loop.chunk_frames):
            log.warning(
                "commit names an idle loop that cannot be used; keeping the current one", extra={"loop": loop_id}
            )
            return loop
        self.loops.pin(named)
        self.loops.unpin(loop)
        return named

    # -- the video worker's stream --------------------------------------------------------------------------------

    @bidi_stream("PublishVideo", session_field="stream_id")
    async def PublishVideo(
        self,
        config: packager_pb2.PublishVideoConfig,
        requests: AsyncIterator[packager_pb2.PublishVideoRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[packager_pb2.PublishVideoResponse]:
        check_video_config(config)
        session_id = config.stream_id  # the stream's id: the packager keeps playlists by it
        if self._shutting_down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the packager is shutting down")
        media = await self._join(session_id, config.publish_token, config.chunk_frames, context)
        if media.parameter_sets is not None and media.parameter_sets != (config.sps, config.pps):
            self._leave(session_id, media)
            await abort_failed_precondition(
                context,
                "config.sps",
                "this worker's H.264 parameter sets differ from the playlist's (another encoder build)",
            )
        media.video_generation += 1
        generation = media.video_generation
        media.video_streams += 1
        media.chunks.sources += 1
        media.chunks.wake()
        loop: StoredLoop | None = None
        try:
            loop = self.loops.get(config.idle_loop_id)
            if loop is not None:
                self.loops.pin(loop)
                if (loop.sps, loop.pps) != (config.sps, config.pps):
                    raise InvalidRequest("config.sps", "parameter sets differ from the idle loop's")
            else:
                yield packager_pb2.PublishVideoResponse(loop_wanted=packager_pb2.IdleLoopWanted())
                loop = await self._receive_loop(config, requests)
            LOOPS_HELD.set(len(self.loops))
            yield packager_pb2.PublishVideoResponse(ready=packager_pb2.PublishVideoReady())
            async for request in requests:
                if request.WhichOneof("request") != "chunk":
                    raise InvalidRequest("chunk", "after the loop, send only chunks")
                if media.video_generation != generation:
                    continue  # a newer stream for this session took over
                chunk = request.chunk
                try:
                    media.chunks.put(chunk.start_frame_index, chunk.first_frame_index, chunk.epoch, chunk.frames)
                except ChunkRejected as problem:
                    STALLED_CHUNKS.labels("unusable").inc()
                    log.warning(
                        "rendered chunk refused", extra={"frame_index": chunk.start_frame_index, "why": str(problem)}
                    )
        finally:
            if loop is not None:
                self.loops.unpin(loop)
            media.video_streams -= 1
            media.chunks.sources -= 1
            media.chunks.wake()
            self._leave(session_id, media)

    async def _receive_loop(
        self,
        config: packager_pb2.PublishVideoConfig,
        requests: AsyncIterator[packager_pb2.PublishVideoRequest],
    ) -> StoredLoop:
        try:
            upload = LoopUpload(
                config.idle_loop_id,
                config.width,
                config.height,
                config.fps,
                config.chunk_frames,
                config.sps,
                config.pps,
                config.idle_loop_chunks,
            )
            while not upload.complete:
                request = await anext(requests, None)
                if request is None or request.WhichOneof("request") != "loop_chunk":
                    raise LoopError("the loop's chunks must come first, all of them")
                upload.add(request.loop_chunk.index, request.loop_chunk.frames, self.config.loop_cache_bytes)
            stored = upload.finish()
        except LoopError as problem:
            raise InvalidRequest("loop_chunk", str(problem)) from None
        log.info("idle loop received", extra={"loop": stored.loop_id, "bytes": stored.size})
        return self.loops.add_pinned(stored)

    async def shutdown(self) -> None:
        """Ends every playlist (ENDLIST) with what it has so far."""
        self._shutting_down = True
        for stream in list(self._live.values()):
            self.store.end(stream)
