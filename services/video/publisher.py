"""A session's PublishVideo stream from this worker to the session's packager.

Opening it hands over the idle loop (only when the packager does not hold it yet) and waits for the packager's
`ready`; then encoded chunks go out in order from a bounded queue. A broken stream is not reopened: the packager
only loses its copy of the session's playlist with its process, and then the session ends anyway. Chunks that
cannot be sent are counted and dropped (the packager shows the loop for them and reports the stall).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from avatar.v1 import packager_pb2, packager_pb2_grpc
from services.common.interceptors import SESSION_ID_METADATA_KEY
from services.video.chunker import Chunk
from services.video.loops import EncodedLoop

log = logging.getLogger(__name__)

QUEUE_CHUNKS = 256


class PublishFailed(Exception):
    """The packager refused or did not answer the stream; the message says why."""


class VideoPublisher:
    def __init__(
        self,
        stub: packager_pb2_grpc.PackagerServiceStub,
        stream_id: str,
        token: str,
        loop: EncodedLoop,
        width: int,
        height: int,
        fps: int,
    ) -> None:
        self._stub = stub
        self.stream_id = stream_id
        self._config = packager_pb2.PublishVideoConfig(
            stream_id=stream_id,
            publish_token=token,
            width=width,
            height=height,
            fps=fps,
            chunk_frames=loop.chunk_frames,
            sps=loop.sps,
            pps=loop.pps,
            idle_loop_id=loop.loop_id,
            idle_loop_chunks=len(loop.chunks),
        )
        self._loop = loop
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue(QUEUE_CHUNKS)
        self._call: grpc.aio.StreamStreamCall | None = None
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sent = 0
        self.loop_uploaded = False

    async def open(self, timeout_s: float) -> None:
        """Opens the stream, uploads the loop if asked, waits for `ready` (PublishFailed otherwise)."""
        call = self._stub.PublishVideo(metadata=((SESSION_ID_METADATA_KEY, self.stream_id),))
        self._call = call
        try:
            async with asyncio.timeout(timeout_s):
                await call.write(packager_pb2.PublishVideoRequest(config=self._config))
                response = await call.read()
                if response is not grpc.aio.EOF and response.WhichOneof("response") == "loop_wanted":
                    for index, frames in enumerate(self._loop.chunks):
                        chunk = packager_pb2.IdleLoopChunk(index=index, frames=frames)
                        await call.write(packager_pb2.PublishVideoRequest(loop_chunk=chunk))
                    self.loop_uploaded = True
                    response = await call.read()
                if response is grpc.aio.EOF or response.WhichOneof("response") != "ready":
                    raise PublishFailed(await _why(call))
        except TimeoutError:
            call.cancel()
            raise PublishFailed(f"the packager did not take the video stream within {timeout_s:g} s") from None
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise PublishFailed(f"the packager did not take the video stream: {error.details()}") from None
            raise PublishFailed(f"the packager refused the video stream: {error.details()}") from None
        self._writer = asyncio.create_task(self._write(call), name=f"publish-video-{self.stream_id[:6]}")

    def send(self, chunk: Chunk) -> None:
        if self._writer is None or self._writer.done():
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(chunk)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("packager is not taking chunks; chunk dropped", extra={"frame_index": chunk.start_frame_index})

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while (chunk := await self._queue.get()) is not None:
                message = packager_pb2.EncodedChunk(
                    start_frame_index=chunk.start_frame_index,
                    first_frame_index=chunk.first_frame_index,
                    epoch=chunk.epoch,
                    frames=chunk.frames,
                )
                await call.write(packager_pb2.PublishVideoRequest(chunk=message))
                self.sent += 1
            await call.done_writing()
        except grpc.aio.AioRpcError as error:
            log.warning("video stream to the packager lost", extra={"error": str(error.details())[:200]})
        except asyncio.CancelledError:
            raise

    async def close(self) -> None:
        """Sends what is queued (briefly), then ends the stream."""
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), 1.0)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
        if self._call is not None:
            self._call.cancel()


async def _why(call: grpc.aio.StreamStreamCall) -> str:
    with contextlib.suppress(Exception):
        code = await call.code()
        details = await call.details()
        return f"the packager refused the video stream: {code.name} {details}"
    return "the packager ended the video stream before it was ready"
