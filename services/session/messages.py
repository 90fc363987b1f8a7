"""What a session says to its peers, as protobuf messages: each stream's config, the video worker's frame drives and
clock, the packager's chunk commits, cancels and the text a voice speaks.

Pure: built from plain values (a timeline slot, a chunk's commit plan, the stream's shape), with no session state,
so each peer's wire format is in one place and the coordinator only decides when to send. A slot's phoneme marks
(session-clock microseconds) become the drive's PhonemeMarks here.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from avatar.v1 import llm_pb2, packager_pb2
from infinitetalk_live_client.avatar.v1 import media_pb2, session_pb2, tts_pb2, video_pb2
from services.common.clauses import split_clauses
from services.common.media import SAMPLE_RATE_HZ
from services.session.chunks import CommitPlan
from services.session.timeline import FrameSlot


@dataclass(frozen=True)
class StreamShape:
    """The session's stream, as the video worker and the packager are told it."""

    session_id: str
    stream_id: str
    width: int
    height: int
    fps: int
    chunk_frames: int
    phase_offset: int  # the idle loop's phase, in frames
    publish_token: str  # lets the video worker publish this stream's chunks on the packager
    segment_duration_ms: int
    realtime: bool


def timestamp(unix_s: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(unix_s * 1e9))
    return stamp


# -- stream configs (sent first on every (re)connection) ------------------------------------------------------------
def generate_config(session_id: str, options: session_pb2.SessionOptions) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        config=llm_pb2.GenerateConfig(
            session_id=session_id, persona=options.persona, provider=options.llm_provider, model=options.llm_model
        )
    )


def synthesize_config(session_id: str, voice: str) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(
        config=tts_pb2.SynthesizeConfig(session_id=session_id, voice=voice, sample_rate_hz=SAMPLE_RATE_HZ)
    )


def render_config(shape: StreamShape, avatar: str, portrait: bytes, packager_address: str) -> video_pb2.RenderRequest:
    """`portrait`: uploaded image bytes to animate (then `avatar`, its prepared name, is not sent)."""
    return video_pb2.RenderRequest(
        config=video_pb2.RenderConfig(
            session_id=shape.session_id,
            avatar="" if portrait else avatar,
            portrait=portrait,
            width=shape.width,
            height=shape.height,
            fps=shape.fps,
            sample_rate_hz=SAMPLE_RATE_HZ,
            chunk_frames=shape.chunk_frames,
            packager_address=packager_address,
            publish_token=shape.publish_token,
            idle_phase_offset=shape.phase_offset,
            stream_id=shape.stream_id,
        )
    )


def publish_config(shape: StreamShape, media_epoch: Timestamp, loop_id: str) -> packager_pb2.PublishRequest:
    return packager_pb2.PublishRequest(
        config=packager_pb2.PublishConfig(
            stream_id=shape.stream_id,
            width=shape.width,
            height=shape.height,
            fps=shape.fps,
            sample_rate_hz=SAMPLE_RATE_HZ,
            segment_duration_ms=shape.segment_duration_ms,
            media_epoch=media_epoch,
            chunk_frames=shape.chunk_frames,
            publish_token=shape.publish_token,
            idle_loop_id=loop_id,
            offline=not shape.realtime,
        )
    )


# -- the video worker -----------------------------------------------------------------------------------------------
def clock(media_epoch: Timestamp) -> video_pb2.RenderRequest:
    return video_pb2.RenderRequest(clock=video_pb2.PlayoutClock(media_epoch=media_epoch))


def frame_drive(slot: FrameSlot) -> video_pb2.RenderRequest:
    drive = video_pb2.FrameDrive(
        frame_index=slot.frame_index,
        utterance_id=slot.utterance_id,
        pcm_s16le=slot.pcm,
        epoch=slot.epoch,
        phonemes=[media_pb2.PhonemeMark(phoneme=p.text, start_us=p.start_us, end_us=p.end_us) for p in slot.phonemes],
    )
    return video_pb2.RenderRequest(frame=drive)


def reset(from_frame_index: int, epoch: int) -> video_pb2.RenderRequest:
    return video_pb2.RenderRequest(reset=video_pb2.ResetTimeline(from_frame_index=from_frame_index, epoch=epoch))


# -- the packager ---------------------------------------------------------------------------------------------------
def chunk_commit(plan: CommitPlan) -> packager_pb2.PublishRequest:
    commit = packager_pb2.ChunkCommit(
        start_frame_index=plan.start_frame_index,
        pcm_s16le=plan.pcm_s16le,
        speech=plan.speech,
        idle_loop_id=plan.idle_loop_id,
        idle_chunk_index=plan.idle_chunk_index,
        rendered=plan.rendered,
        epoch=plan.epoch,
        lookahead_samples=plan.lookahead_samples,
        lookahead_pcm_s16le=plan.lookahead_pcm_s16le,
    )
    return packager_pb2.PublishRequest(chunk=commit)


def end_of_stream() -> packager_pb2.PublishRequest:
    return packager_pb2.PublishRequest(end=packager_pb2.EndOfStream())


# -- utterances (llm and tts) ---------------------------------------------------------------------------------------
def user_turn(utterance_id: str, text: str) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(turn=llm_pb2.UserTurn(utterance_id=utterance_id, text=text))


def said_clauses(utterance_id: str, text: str) -> list[tts_pb2.SynthesizeRequest]:
    """`Say` text for the voice, clause by clause (services.common.clauses)."""
    return [
        tts_pb2.SynthesizeRequest(
            clause=media_pb2.TextClause(utterance_id=utterance_id, clause_index=index, text=clause)
        )
        for index, clause in enumerate(split_clauses(text))
    ]


def cancel_generate(utterance_id: str) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(cancel=media_pb2.CancelUtterance(utterance_id=utterance_id))


def cancel_synthesize(utterance_id: str) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(cancel=media_pb2.CancelUtterance(utterance_id=utterance_id))
