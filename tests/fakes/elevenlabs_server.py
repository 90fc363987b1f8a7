"""A local server that speaks ElevenLabs' streaming-with-timestamps wire protocol, for tests and benchmarks.

`POST /v1/text-to-speech/{voice_id}/stream/with-timestamps?output_format=pcm_24000` with a JSON body
{"text", "model_id", ...} and the key in `xi-api-key`; answers newline-delimited JSON, one object per audio piece:
{"audio_base64": ..., "alignment": {"characters": [...], "character_start_times_seconds": [...],
"character_end_times_seconds": [...]}, "normalized_alignment": {...}}, times from the start of the request's audio
(as the HTTP API sends them). Errors as ElevenLabs sends them: {"detail": {"status": ..., "message": ...}}."""

from __future__ import annotations

import asyncio
import base64
import json

from aiohttp import web

from tests.fakes._base import Failure, FakeProvider, Recorded, Speech, speak

__all__ = ["ElevenLabsServer", "Failure", "Recorded", "character_times"]

_ERRORS = {
    401: ("invalid_api_key", "Invalid API key"),
    403: ("missing_permissions", "The API key has no access to this voice"),
    404: ("voice_not_found", "A voice with the voice_id was not found"),
    429: ("too_many_concurrent_requests", "Too many concurrent requests"),
    500: ("internal_error", "Something went wrong"),
    503: ("service_unavailable", "The service is busy"),
}


def character_times(text: str, speech: Speech) -> tuple[list[float], list[float]]:
    """A start and end time for every character of `text`: a word's letters share its spoken span evenly; the spaces
    and punctuation between words fill the gap from one word's end to the next one's start."""
    starts = [0.0] * len(text)
    ends = [0.0] * len(text)
    from services.tts.words import tokenize

    tokens = [t for t in tokenize(text) if t.is_word]
    spans = {t.start: (s, e) for t, (_, s, e) in zip(tokens, speech.words, strict=False)}
    cursor = 0
    previous_end = 0.0
    for token in tokens:
        s, e = spans.get(token.start, (previous_end, previous_end))
        gap = range(cursor, token.start)
        for k, i in enumerate(gap):
            starts[i] = previous_end + (s - previous_end) * k / max(1, len(gap))
            ends[i] = previous_end + (s - previous_end) * (k + 1) / max(1, len(gap))
        n = token.end - token.start
        for k in range(n):
            starts[token.start + k] = s + (e - s) * k / n
            ends[token.start + k] = s + (e - s) * (k + 1) / n
        cursor, previous_end = token.end, e
    for i in range(cursor, len(text)):
        starts[i] = previous_end
        ends[i] = speech.duration_s
    return starts, ends


class ElevenLabsServer(FakeProvider):
    """Fake ElevenLabs (see the module docstring). `relative_times=True` sends per-piece times instead."""

    def __init__(self, *, relative_times: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.relative_times = relative_times

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/text-to-speech/{voice_id}/stream/with-timestamps", self._stream)]

    @staticmethod
    def _error(status: int, failure: Failure | None = None) -> web.Response:
        code, message = _ERRORS.get(status, ("error", "Request failed"))
        body = {"detail": {"status": code, "message": message}}
        if failure is not None and failure.body is not None:
            body = failure.body
        headers = failure.headers if failure else {}
        return web.json_response(body, status=status, headers=headers)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = self._next_failure()
        await self._delay()
        if self.api_key is not None and request.headers.get("xi-api-key") != self.api_key:
            return self._error(401)
        if failure is not None and failure.status is not None:
            return self._error(failure.status, failure)
        if not isinstance(body, dict) or not str(body.get("text") or "").strip():
            return web.json_response(
                {"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}]},
                status=422,
            )
        fmt = request.query.get("output_format", "mp3_44100_128")
        if fmt not in ("pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100"):
            return self._error(400)
        rate = int(fmt.split("_")[1])
        text = body["text"]
        speech = await speak(text, rate)
        starts, ends = character_times(text, speech)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if failure is not None and failure.malformed:
            await response.write(b'{"audio_base64": "not json\n')
        step = max(2, int(self.chunk_s * rate))
        sent_chars = 0
        for lo in range(0, len(speech.pcm), step):
            hi = min(len(speech.pcm), lo + step)
            t0, t1 = lo / rate, hi / rate
            if failure is not None and failure.drop_after_s is not None and t0 >= failure.drop_after_s:
                self.drop(request)
                return response
            if failure is not None and failure.stall_after_s is not None and t0 >= failure.stall_after_s:
                await asyncio.sleep(3600)
            last = hi == len(speech.pcm)
            upto = len(text) if last else next((i for i in range(sent_chars, len(text)) if starts[i] >= t1), len(text))
            shift = t0 if self.relative_times else 0.0
            alignment = {
                "characters": list(text[sent_chars:upto]),
                "character_start_times_seconds": [round(s - shift, 4) for s in starts[sent_chars:upto]],
                "character_end_times_seconds": [round(e - shift, 4) for e in ends[sent_chars:upto]],
            }
            sent_chars = upto
            line = {
                "audio_base64": base64.b64encode(speech.pcm[lo:hi].astype("<i2").tobytes()).decode(),
                "alignment": alignment if alignment["characters"] else None,
                "normalized_alignment": alignment if alignment["characters"] else None,
            }
            await response.write(json.dumps(line).encode() + b"\n")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        await response.write_eof()
        return response
