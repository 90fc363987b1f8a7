"""A local server that speaks OpenAI's text-to-speech wire protocol, for tests and benchmarks.

`POST /v1/audio/speech` with `Authorization: Bearer <key>` and JSON {"model", "voice", "input", "response_format"};
with response_format "pcm" it streams raw 24 kHz s16le mono audio (chunked). Errors as OpenAI sends them:
{"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.fakes._base import Failure, FakeProvider, Recorded, speak

__all__ = ["Failure", "OpenAITtsServer", "Recorded"]

RATE_HZ = 24000
_ERRORS = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded."),
}


class OpenAITtsServer(FakeProvider):
    """Fake OpenAI audio.speech (see the module docstring)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/audio/speech", self._speech)]

    @staticmethod
    def _error(status: int, failure: Failure | None = None) -> web.Response:
        kind, code, message = _ERRORS.get(status, ("invalid_request_error", None, "Bad request."))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        if failure is not None and failure.body is not None:
            body = failure.body
        return web.json_response(body, status=status, headers=failure.headers if failure else {})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = self._next_failure()
        await self._delay()
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401)
        if failure is not None and failure.status is not None:
            return self._error(failure.status, failure)
        if not isinstance(body, dict) or not str(body.get("input") or "").strip() or not body.get("voice"):
            return self._error(400)
        if body.get("response_format") != "pcm":
            return self._error(400)
        speech = await speak(body["input"], RATE_HZ)
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        step = max(2, int(self.chunk_s * RATE_HZ))
        for lo in range(0, len(speech.pcm), step):
            t0 = lo / RATE_HZ
            if failure is not None and failure.drop_after_s is not None and t0 >= failure.drop_after_s:
                self.drop(request)
                return response
            if failure is not None and failure.stall_after_s is not None and t0 >= failure.stall_after_s:
                await asyncio.sleep(3600)
            await response.write(speech.pcm[lo : lo + step].astype("<i2").tobytes())
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        await response.write_eof()
        return response
