"""What a broken peer stream means for a session, and what its watchers are told.

A refusal (a code that means "not this stream") is the peer service's own sentence and is passed on; any other
break is a transport's, whose detail names internal addresses: it goes to the logs and the watchers get a plain
"unavailable". An utterance that still waits on the peer fails with it; otherwise the break is a session error.
Before the session is up, a refusing video worker or a packager that does not open the playlist fails the start
instead (CreateSession reports it). After it, losing the packager loses the playlist: the session ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from infinitetalk_live_client.avatar.v1 import session_pb2
from services.session.links import Readiness, SessionStartError
from services.session.narration import Narrator
from services.session.peers import REFUSALS
from services.session.speech import Speech
from services.session.utterances import Utterance

log = logging.getLogger(__name__)


def waits_on(utterance: Utterance, component: str) -> bool:
    """Whether the utterance still needs output from `component` (a peer that has done its part can fail)."""
    if component == "llm":
        return not utterance.text_done
    if component == "tts":
        return not utterance.text_done or not utterance.synthesized
    return False


def detail(error: Exception) -> str:
    return error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)


class Outages:
    def __init__(
        self, speech: Speech, narrator: Narrator, ready: Readiness, lose_playlist: Callable[[str], None]
    ) -> None:
        """`lose_playlist(why)`: the session's playlist is gone (it tells the watchers and ends the session)."""
        self.speech = speech
        self.narrator = narrator
        self.ready = ready
        self._lose_playlist = lose_playlist

    def handle(self, component: str, error: Exception) -> None:
        """`component`'s stream broke with `error` (its link reconnects by itself, except the packager's)."""
        if component == "video":
            self._video_down(error)
        elif component == "packager":
            self._packager_down(error)
        else:
            self._down(component, error)

    def _video_down(self, error: Exception) -> None:
        if not self.ready.video_ready.done() and isinstance(error, grpc.aio.AioRpcError) and error.code() in REFUSALS:
            self.ready.video_ready.set_exception(SessionStartError(f"the video service refused: {error.details()}"))
            return
        self._down("video", error)

    def _packager_down(self, error: Exception) -> None:
        if not self.ready.packager_accepted.done():  # refused at start: CreateSession reports it
            self.ready.packager_accepted.set_result(detail(error) or "stream closed")
            return
        self._down("packager", error)
        self._lose_playlist("the stream's playlist was lost with the packager")

    def _down(self, component: str, error: Exception) -> None:
        why = detail(error)
        code = error.code() if isinstance(error, grpc.aio.AioRpcError) else grpc.StatusCode.UNAVAILABLE
        if code in REFUSALS:  # our own service's sentence
            message = f"the {component} service refused this session: {why}"
        else:  # a transport's detail names internal addresses: logs only
            log.warning("peer down", extra={"component": component, "code": code.name, "detail": why})
            message = f"the {component} service is unavailable" + ("" if component == "packager" else "; reconnecting")
        utterance = self.speech.utterance
        if utterance is not None and not utterance.finished and waits_on(utterance, component):
            self.speech.fail(utterance, component, code, message)
        else:
            self.narrator.emit(error=session_pb2.SessionError(code=code.value[0], message=message, component=component))
