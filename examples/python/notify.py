"""Makes an avatar speak pushed notifications: one line of input, one announcement.

A backend that owns a session (it created it with its API key, or was handed its id and control token) calls `say`
for each notification and waits until it has been spoken (with --cut, a newer one cuts the one in progress instead).
Viewers watch the playlist URL printed at start.

    pip install ./clients/python
    # create a session with the API key (the server's SESSION_API_KEYS), then read notifications from stdin:
    INFINITETALK_API_KEY=... python examples/python/notify.py --address 127.0.0.1:50051 < notifications.txt
    # or steer a session created elsewhere:
    INFINITETALK_SESSION_ID=... INFINITETALK_CONTROL_TOKEN=... python examples/python/notify.py --file news.txt

The session it created is ended when input ends (Ctrl-D) unless --keep.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator

from infinitetalk_live_client import ApiError, Client, Session, SpeechFinished, WordSpoken, connect


def notifications(lines: Iterable[str]) -> Iterator[str]:
    """Non-empty lines, stripped: each is one announcement."""
    for line in lines:
        if text := line.strip():
            yield text


def open_session(client: Client) -> tuple[Session, bool]:
    """The session to speak on, and whether this script created it (and so should end it)."""
    session_id = os.environ.get("INFINITETALK_SESSION_ID")
    token = os.environ.get("INFINITETALK_CONTROL_TOKEN")
    if session_id and token:
        return client.attach(session_id, token), False
    return client.create_session(avatar=os.environ.get("INFINITETALK_AVATAR", "")), True


def announce(session: Session, texts: Iterable[str], cut: bool = False) -> int:
    """Says each text and, unless `cut`, waits until it has been spoken before the next (a Say cuts the utterance in
    progress). Returns how many the server refused."""
    refused = 0
    with session.watch() as events:
        next(events)  # the current state: from here on no event is missed
        for text in texts:
            try:
                utterance = session.say(text)
            except ApiError as error:  # e.g. too long, or too many per second: say why and go on
                print(f"refused ({error.code.name}): {error.message}", file=sys.stderr)
                refused += 1
                continue
            print(f"saying {utterance}: {text}", flush=True)
            while not cut:
                event = next(events, None)
                if event is None:  # the stream ended: so did the session
                    print("the session has ended", file=sys.stderr)
                    return refused + 1
                if isinstance(event, WordSpoken) and event.utterance_id == utterance:
                    print(f"  {event.text} @ {event.start_us / 1e6:.2f} s", flush=True)
                elif isinstance(event, SpeechFinished) and event.utterance_id == utterance:
                    print(f"  finished: {event.reason.name.lower()}", flush=True)
                    break
    return refused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=os.environ.get("INFINITETALK_ADDRESS", "127.0.0.1:50051"))
    parser.add_argument("--file", help="read notifications from this file instead of stdin")
    parser.add_argument("--cut", action="store_true", help="a new notification cuts the one being spoken")
    parser.add_argument("--keep", action="store_true", help="leave the session running at the end")
    parser.add_argument("--secure", action="store_true", help="TLS (e.g. through a gateway with a certificate)")
    args = parser.parse_args()
    with connect(args.address, api_key=os.environ.get("INFINITETALK_API_KEY"), secure=args.secure) as client:
        try:
            session, created = open_session(client)
        except ApiError as error:
            print(f"cannot create a session ({error.code.name}): {error.message}", file=sys.stderr)
            return 1
        print(f"session {session.session_id}; watch: {session.playlist_url or session.playlist_path}", flush=True)
        try:
            source = open(args.file, encoding="utf-8") if args.file else sys.stdin  # noqa: SIM115
            with source:
                refused = announce(session, notifications(source), args.cut)
        finally:
            if created and not args.keep:
                session.end()
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
