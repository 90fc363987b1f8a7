"""The whole pipeline as real processes on 127.0.0.1: text in, a live HLS stream of a speaking avatar out."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, timedelta

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatar.v1 import tts_pb2_grpc
from infinitetalk_live.client import SessionClient, control_metadata, media_time, playlist_url
from infinitetalk_live.hls import PlaylistFollower, fetch, fetch_playlist
from infinitetalk_live.ports import SERVICE_ORDER
from infinitetalk_live.stack import check_health
from infinitetalk_live_client.avatar.v1 import media_pb2, session_pb2, tts_pb2
from services.common.clauses import split_clauses
from services.common.media import FPS, SAMPLE_RATE_HZ
from tests.hls_analysis import decode, lip_sync, loud_span, window_rms

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

HELLO = "Hello there. This is a live avatar speaking."
LONG = (
    "Once upon a time, in a quiet village by the sea, there lived an old lighthouse keeper who knew every ship by "
    "the sound of its horn. Each night he climbed the winding stairs, trimmed the wick, and watched the dark water "
    "for travellers who needed a light to find their way home. The villagers said he never slept at all."
)
SERVICE_NAMES = {
    "session": "avatar.v1.SessionService",
    "llm": "avatar.v1.LlmService",
    "tts": "avatar.v1.TtsService",
    "video": "avatar.v1.VideoService",
    "packager": "avatar.v1.PackagerService",
}


async def tts_audio(stack, text: str) -> np.ndarray:
    """What the tts service says for `text`, asked directly: the reference for spans in the stream."""
    async with grpc.aio.insecure_channel(stack.ports.addr("tts")) as channel:
        call = tts_pb2_grpc.TtsServiceStub(channel).Synthesize()
        await call.write(tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig(sample_rate_hz=SAMPLE_RATE_HZ)))
        clauses = split_clauses(text)
        for index, clause in enumerate(clauses):
            await call.write(
                tts_pb2.SynthesizeRequest(
                    clause=media_pb2.TextClause(utterance_id="ref", clause_index=index, text=clause)
                )
            )
        pcm = bytearray()
        done = 0
        async for response in call:
            if response.WhichOneof("response") == "audio":
                pcm += response.audio.pcm_s16le
            elif response.WhichOneof("response") == "clause_done":
                done += 1
                if done == len(clauses):
                    break
        call.cancel()
    return np.frombuffer(bytes(pcm), "<i2").astype(np.float32) / 32768.0


def longest_pause(audio: np.ndarray, sample_rate: int, window_s: float = 0.02) -> float:
    """The longest run of near-silence (20 ms windows below -50 dBFS) in `audio`, in seconds."""
    quiet = window_rms(audio, sample_rate, window_s) < 0.003
    longest = run = 0
    for value in quiet:
        run = run + 1 if value else 0
        longest = max(longest, run)
    return longest * window_s


async def segments_on(url: str, count: int = 1, timeout_s: float = 10.0) -> int:
    """Waits until the playlist holds at least `count` segments; returns the last sequence number."""
    async with asyncio.timeout(timeout_s):
        while True:
            playlist = await asyncio.to_thread(fetch_playlist, url)
            if playlist is not None and len(playlist.segments) >= count:
                return playlist.segments[-1].sequence
            await asyncio.sleep(0.05)


async def client_for(stack) -> SessionClient:
    return SessionClient(stack.ports.addr("session"))


def hls_url(stack, session) -> str:
    return playlist_url(session, stack.ports.hls_base_url)


async def test_all_services_are_separate_processes_and_serving(stack):
    pids = {stack.pid(name) for name in SERVICE_ORDER}
    assert len(pids) == 5 and os.getpid() not in pids
    for name in SERVICE_ORDER:
        async with grpc.aio.insecure_channel(stack.ports.addr(name)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_NAMES[name]):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (name, service)
        metrics = await asyncio.to_thread(fetch, f"http://127.0.0.1:{stack.ports.metrics[name]}/metrics")
        assert b"grpc_server_started_total" in metrics and f"{name}_".encode() in metrics, name


async def test_catalog_lists_what_the_server_offers(stack):
    client = await client_for(stack)
    try:
        catalog = await client.stub.GetCatalog(session_pb2.GetCatalogRequest(), timeout=10)
    finally:
        await client.close()
    avatars = [a.name for a in catalog.avatars]
    voices = [v.name for v in catalog.voices]
    assert catalog.default_avatar == "astronaut", "a photo avatar by default"
    assert {"astronaut", "drawn", "drawn-kai"} <= set(avatars)
    assert {a.name: a.backend for a in catalog.avatars}["astronaut"] == "photo"
    assert not any(name.startswith("portrait-") for name in avatars), "uploads are never listed"
    assert catalog.default_voice in voices and "joe" in voices and "espeak-en-us" in voices
    assert all(v.engine and v.language for v in catalog.voices)


async def test_chat_answers_through_the_llm_and_remembers(stack):
    client = await client_for(stack)
    try:
        session = await client.create()
        url = hls_url(stack, session)
        first = await client.speak(session, "Hello! My name is Ada.", chat=True, hls_url=url)
        assert first.reason == session_pb2.FINISH_REASON_COMPLETED and first.words
        assert first.latency is not None and first.latency.first_clause_us > 0
        assert first.first_speech_ms is not None
        second = await client.speak(session, "What is my name?", chat=True, hls_url=url)
        assert second.reason == session_pb2.FINISH_REASON_COMPLETED
        assert "Ada" in second.spoken_text, second.spoken_text
        await client.end(session)
    finally:
        await client.close()


async def test_say_streams_speech_with_moving_mouth_in_sync(stack, artifacts):
    client = await client_for(stack)
    try:
        session = await client.create()
        url = hls_url(stack, session)
        follower = PlaylistFollower(url)
        await asyncio.sleep(1.5)  # some idle first
        result = await client.speak(session, HELLO, hls_url=url, follower=follower)
        assert result.reason == session_pb2.FINISH_REASON_COMPLETED, result
        assert [w.word for w in result.words] == HELLO.split()
        assert result.first_speech_ms is not None and result.latency is not None
        # Some idle after the speech too.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            playlist = await asyncio.to_thread(follower.poll)
            last = playlist.segments[-1]
            covered = last.program_date_time + timedelta(seconds=last.duration_s)
            if covered > media_time(session, result.end_us) + timedelta(seconds=1.5):
                break
            await asyncio.sleep(0.1)
        data = follower.fmp4_bytes()
        (artifacts / "say_hello.mp4").write_bytes(data)
        await client.end(session)
    finally:
        await client.close()

    media = decode(data, rgb=True)
    assert (media.video_codec, media.width, media.height) == ("h264", 512, 512)
    assert abs(media.fps - FPS) < 0.01
    assert media.audio_codec == "aac"
    assert abs(media.frame_times[0]) < 0.05, "the playlist starts at media time 0"

    # Speech is present, loud, and as long as what the tts service says for the same text.
    span = loud_span(media.audio, media.sample_rate)
    assert span is not None, "no speech in the stream"
    onset_s, offset_s = span[0] + media.audio_start_s, span[1] + media.audio_start_s
    reference_audio = await tts_audio(stack, HELLO)
    reference = loud_span(reference_audio, SAMPLE_RATE_HZ)
    assert reference is not None
    # Piper's phoneme durations vary a little from run to run (a few tenths of a second over a sentence); a gap in
    # the stream (late audio) would also show as a longer pause than the voice's own, checked next.
    assert abs((offset_s - onset_s) - (reference[1] - reference[0])) < 0.3
    stream_pause = longest_pause(media.audio[int(span[0] * media.sample_rate) : int(span[1] * media.sample_rate)],
                                 media.sample_rate)  # fmt: skip
    voice_pause = longest_pause(
        reference_audio[int(reference[0] * SAMPLE_RATE_HZ) : int(reference[1] * SAMPLE_RATE_HZ)], SAMPLE_RATE_HZ
    )
    assert stream_pause <= voice_pause + 0.1, (stream_pause, voice_pause)
    speech = media.audio[int(span[0] * media.sample_rate) : int(span[1] * media.sample_rate)]
    assert np.sqrt(np.mean(speech**2)) > 0.03, "speech is well above silence"
    assert result.start_us / 1e6 - 0.05 <= onset_s <= result.end_us / 1e6

    # Lip sync as the viewer gets it: the landmark model reads the mouth of every decoded frame. It opens with the
    # speech, follows its loudness, is closed in silence, and starts moving within 80 ms of the audio.
    sync = lip_sync(media, (onset_s, offset_s))
    assert sync.silence_opening < 0.075, sync
    assert sync.speech_opening > sync.silence_opening + 0.04, sync
    assert sync.envelope_correlation > 0.3, sync
    assert sync.mouth_onset_s is not None, "the mouth never moved"
    assert abs(sync.mouth_onset_s - onset_s) <= 0.08, sync


async def test_after_speech_the_idle_playlist_grows_in_real_time(stack):
    client = await client_for(stack)
    try:
        session = await client.create()
        url = hls_url(stack, session)
        spoken = await client.speak(session, "Now I will rest for a while.", hls_url=url)
        assert spoken.reason == session_pb2.FINISH_REASON_COMPLETED
        seen: dict[int, tuple[float, float]] = {}
        started = time.monotonic()
        while time.monotonic() - started < 12.0:
            playlist = await asyncio.to_thread(fetch_playlist, url)
            now = time.monotonic()
            for segment in playlist.segments if playlist else []:
                if segment.sequence not in seen:
                    end = segment.program_date_time + timedelta(seconds=segment.duration_s)
                    seen[segment.sequence] = (now, (end - media_time(session, 0)).total_seconds())
            await asyncio.sleep(0.02)
        assert playlist is not None and not playlist.ended
        await client.end(session)
        ended = await asyncio.to_thread(fetch_playlist, url)
        assert ended is not None and ended.ended, "EndSession puts EXT-X-ENDLIST on the playlist"
    finally:
        await client.close()
    points = sorted(seen.values())[1:]  # the first poll may find a backlog
    assert len(points) >= 9
    wall = np.array([p[0] for p in points])
    media = np.array([p[1] for p in points])
    assert wall[-1] - wall[0] >= 9.0
    rate = np.polyfit(wall, media, 1)[0]
    assert 0.95 <= rate <= 1.05, rate


async def test_interrupt_cuts_speech_and_next_say_plays(stack):
    client = await client_for(stack)
    try:
        session = await client.create()
        url = hls_url(stack, session)
        follower = PlaylistFollower(url)
        watch = client.stub.WatchSession(
            session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
        )
        await watch.read()
        long_id = (
            await client.stub.Say(
                session_pb2.SayRequest(session_id=session.session_id, text=LONG), metadata=control_metadata(session)
            )
        ).utterance_id
        while True:
            event = await watch.read()
            if event.WhichOneof("event") == "speech_started" and event.speech_started.utterance_id == long_id:
                break
        # Interrupt mid-word: right after a word (at least a second into the speech) starts playing.
        spoken_after = time.monotonic() + 1.0
        while True:
            event = await watch.read()
            if event.WhichOneof("event") == "word_spoken" and time.monotonic() > spoken_after:
                word = event.word_spoken
                break
        interrupted_at = time.time()
        reply = await client.stub.Interrupt(
            session_pb2.InterruptRequest(session_id=session.session_id), metadata=control_metadata(session)
        )
        assert reply.utterance_id == long_id
        while True:
            event = await watch.read()
            if event.WhichOneof("event") == "speech_finished" and event.speech_finished.utterance_id == long_id:
                assert event.speech_finished.reason == session_pb2.FINISH_REASON_INTERRUPTED
                assert len(event.speech_finished.spoken_text) < len(LONG) // 2
                break
        watch.cancel()
        after = await client.speak(session, HELLO, hls_url=url, follower=follower)
        assert after.reason == session_pb2.FINISH_REASON_COMPLETED
        assert [w.word for w in after.words] == HELLO.split()
        await client.end(session)
    finally:
        await client.close()
    media = decode(follower.fmp4_bytes())
    interrupt_media_s = interrupted_at - session.media_epoch.ToDatetime(tzinfo=UTC).timestamp()
    second_start_s = after.start_us / 1e6
    first_part = media.audio[: int((second_start_s - media.audio_start_s) * media.sample_rate)]
    span = loud_span(first_part, media.sample_rate)
    assert span is not None and span[1] + media.audio_start_s >= word.start_us / 1e6, "it was speaking"
    assert span[1] + media.audio_start_s <= interrupt_media_s + 0.5, (span, interrupt_media_s)
    later = loud_span(media.audio[int((second_start_s - media.audio_start_s) * media.sample_rate) :], media.sample_rate)
    assert later is not None, "the next Say is heard"


async def test_two_sessions_stay_independent(stack):
    client = await client_for(stack)
    texts = ["The red fox jumps over the fence.", "Blue whales sing in the deep ocean at night, far from any shore."]
    try:
        sessions = await asyncio.gather(client.create(), client.create())
        assert sessions[0].session_id != sessions[1].session_id
        followers = [PlaylistFollower(hls_url(stack, s)) for s in sessions]
        results = await asyncio.gather(
            *(
                client.speak(s, t, hls_url=hls_url(stack, s), follower=f)
                for s, t, f in zip(sessions, texts, followers, strict=True)
            )
        )
        for session in sessions:
            await client.end(session)
    finally:
        await client.close()
    for text, result, follower in zip(texts, results, followers, strict=True):
        assert result.reason == session_pb2.FINISH_REASON_COMPLETED
        assert [w.word for w in result.words] == text.split()
        assert result.spoken_text == text
        media = decode(follower.fmp4_bytes())
        span = loud_span(media.audio, media.sample_rate)
        reference = loud_span(await tts_audio(stack, text), SAMPLE_RATE_HZ)
        assert span is not None and abs((span[1] - span[0]) - (reference[1] - reference[0])) < 0.2


async def test_bad_input_gets_clear_errors_and_harms_nothing(stack):
    client = await client_for(stack)
    try:
        bystander = await client.create()
        bystander_url = hls_url(stack, bystander)
        watch = client.stub.WatchSession(
            session_pb2.WatchSessionRequest(session_id=bystander.session_id), metadata=control_metadata(bystander)
        )
        await watch.read()
        bystander_events = []

        async def collect() -> None:
            while (event := await watch.read()) is not grpc.aio.EOF:
                bystander_events.append(event)

        collector = asyncio.create_task(collect())
        session = await client.create()
        sid = session.session_id
        auth = control_metadata(session)
        before = await segments_on(bystander_url)

        async def expect(coro, code: grpc.StatusCode, *words: str) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await coro
            assert caught.value.code() == code, caught.value
            for word in words:
                assert word in caught.value.details(), caught.value.details()

        await expect(
            client.stub.Say(session_pb2.SayRequest(session_id=sid, text=""), metadata=auth),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty",
        )
        await expect(
            client.stub.Say(session_pb2.SayRequest(session_id=sid, text="  \n "), metadata=auth),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty",
        )
        await expect(
            client.stub.Say(session_pb2.SayRequest(session_id=sid, text="a" * 20_000), metadata=auth),
            grpc.StatusCode.INVALID_ARGUMENT,
            "20000",
            "5000",
        )
        await expect(
            client.stub.Chat(session_pb2.ChatRequest(session_id=sid, text="b" * 20_000), metadata=auth),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit",
        )
        # Invalid UTF-8 in the text field, sent as raw bytes: field 1 (session_id), field 2 (text).
        raw = client.channel.unary_unary(
            "/avatar.v1.SessionService/Say", request_serializer=None, response_deserializer=None
        )
        payload = b"\x0a" + bytes([len(sid)]) + sid.encode() + b"\x12\x04\xff\xfe\xfd\xfc"
        await expect(raw(payload, metadata=auth), grpc.StatusCode.INVALID_ARGUMENT, "UTF-8")
        await expect(
            client.stub.Say(session_pb2.SayRequest(session_id="A" * 22, text="hi"), metadata=auth),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await expect(
            client.stub.Say(session_pb2.SayRequest(session_id="../../etc", text="hi")), grpc.StatusCode.INVALID_ARGUMENT
        )
        await expect(
            client.stub.CreateSession(session_pb2.CreateSessionRequest(avatar="nobody")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "nobody",
        )
        await expect(
            client.stub.CreateSession(session_pb2.CreateSessionRequest(voice="nobody")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "nobody",
        )
        # The session still works after all that.
        ok = await client.stub.Say(session_pb2.SayRequest(session_id=sid, text="Still here."), metadata=auth)
        assert ok.utterance_id
        await client.end(session)
        await expect(
            client.stub.Say(session_pb2.SayRequest(session_id=sid, text="hi"), metadata=auth),
            grpc.StatusCode.NOT_FOUND,
            "ended",
        )
        await expect(
            client.stub.Interrupt(session_pb2.InterruptRequest(session_id=sid), metadata=auth),
            grpc.StatusCode.NOT_FOUND,
        )
        await expect(
            client.stub.EndSession(session_pb2.EndSessionRequest(session_id=sid), metadata=auth),
            grpc.StatusCode.NOT_FOUND,
        )
        watch_ended = client.stub.WatchSession(session_pb2.WatchSessionRequest(session_id=sid), metadata=auth)
        await expect(watch_ended.read(), grpc.StatusCode.NOT_FOUND)
        # Meanwhile the bystander kept streaming, with no error events.
        await asyncio.sleep(1.2)
        assert await segments_on(bystander_url) > before
        watch.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        assert not [e for e in bystander_events if e.WhichOneof("event") == "error"]
        await client.end(bystander)
    finally:
        await client.close()


async def test_tts_crash_is_reported_restarted_and_recovered(stack):
    client = await client_for(stack)
    try:
        session = await client.create()
        url = hls_url(stack, session)
        watch = client.stub.WatchSession(
            session_pb2.WatchSessionRequest(session_id=session.session_id), metadata=control_metadata(session)
        )
        await watch.read()
        await segments_on(url)
        old_pid = stack.pid("tts")
        restarts = stack.processes["tts"].restarts
        await client.stub.Say(
            session_pb2.SayRequest(session_id=session.session_id, text=LONG), metadata=control_metadata(session)
        )
        os.kill(old_pid, signal.SIGKILL)
        errors = []
        async with asyncio.timeout(15):
            while not errors:
                event = await watch.read()
                if event.WhichOneof("event") == "error":
                    errors.append(event.error)
        assert errors[0].component == "tts" and "tts" in errors[0].message
        before = await segments_on(url)
        async with asyncio.timeout(60):
            while stack.processes["tts"].restarts == restarts or not await check_health(stack.ports.addr("tts")):
                await asyncio.sleep(0.1)
        assert stack.pid("tts") != old_pid
        await asyncio.sleep(1.2)
        assert await segments_on(url) > before, "the stream kept idling"
        watch.cancel()
        result = await client.speak(session, HELLO, hls_url=url)
        assert result.reason == session_pb2.FINISH_REASON_COMPLETED
        assert [w.word for w in result.words] == HELLO.split()
        await client.end(session)
    finally:
        await client.close()
