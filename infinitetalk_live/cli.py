"""`infinitetalk up | say | render | contact-sheet`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path

import grpc

from infinitetalk_live import contact_sheet
from infinitetalk_live.client import SessionClient, playlist_url
from infinitetalk_live.hls import PlaylistFollower
from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor
from infinitetalk_live_client.avatar.v1 import session_pb2
from services.common.ports import GRPC_PORTS

DEFAULT_ADDR = os.environ.get("INFINITETALK_ADDR", f"127.0.0.1:{GRPC_PORTS['session']}")
PORTRAIT_READ_LIMIT = 64 * 1024 * 1024  # larger files are refused locally; the server's limit is 8 MiB
REASONS = {v: k.removeprefix("FINISH_REASON_").lower() for k, v in session_pb2.FinishReason.items()}


async def _up(args: argparse.Namespace) -> int:
    replicas = args.video_workers > 1 or args.packagers > 1
    if args.free_ports or replicas:
        ports = StackPorts.free(video_workers=args.video_workers, packagers=args.packagers)
    else:
        ports = StackPorts.defaults()
    log_dir = Path(args.log_dir) if args.log_dir else None
    supervisor = Supervisor(ports, log_dir=log_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start()
    try:
        await supervisor.wait_healthy(timeout_s=120)
        print("InfiniteTalk Live is up (offline defaults).", flush=True)
        for name in ports.names():
            print(f"  {name:9s} grpc://{ports.addr(name)}  metrics http://{ports.host}:{ports.metrics[name]}/metrics")
        print(f"session: {ports.addr('session')}")
        print(f"hls: {ports.gateway_url}/hls/<session_id>/index.m3u8")
        print(f"gateway admin: {supervisor.admin_url()} (loopback only)")
        if os.environ.get("SESSION_API_KEYS") or os.environ.get("SESSION_API_KEYS_FILE"):
            print("access: CreateSession requires an API key (SESSION_API_KEYS); say --api-key KEY")
        else:
            print("access: no API keys, so anyone on this machine may create sessions (everything listens on loopback)")
        if log_dir:
            print(f"logs: {log_dir}/<service>.log")
        print(f'try: infinitetalk say "Hello there." --addr {ports.addr("session")}')
        print(f"page: {ports.gateway_url}/", flush=True)
        await stop.wait()
    finally:
        await supervisor.stop()
    return 0


async def _say(args: argparse.Namespace) -> int:
    client = SessionClient(args.addr, api_key=args.api_key or None)
    try:
        session = await client.create(avatar=args.avatar, voice=args.voice, portrait=_portrait(args.portrait))
        url = playlist_url(session, args.hls)
        print(f"playlist: {url}", flush=True)
        follower = PlaylistFollower(url)
        result = await client.speak(
            session,
            args.text,
            chat=args.chat,
            hls_url=url,
            follower=follower,
            on_word=lambda word: print(word.word, end=" ", flush=True),
            on_error=lambda error: print(f"\nerror ({error.component}): {error.message}", file=sys.stderr),
        )
        print(flush=True)
        if args.record:
            follower.save_mp4(Path(args.record))
            print(f"recorded: {args.record}")
        await client.end(session)
        print(f"finished: {REASONS.get(result.reason, 'unknown')}")
        if result.first_speech_ms is None:
            print("first-speech-ms: none (no speech reached the playlist)")
            return 1
        print(f"first-speech-ms: {result.first_speech_ms:.0f}")
        return 0
    finally:
        await client.close()


def _portrait(path: str | None) -> bytes | None:
    """The photo's bytes (the server checks them); a file far over the limit is refused without reading it all."""
    if not path:
        return None
    size = Path(path).stat().st_size
    if size > PORTRAIT_READ_LIMIT:
        raise ValueError(f"{path} is {size / 2**20:.1f} MiB; a portrait may be at most 8 MiB")
    return Path(path).read_bytes()


async def render(
    text: str, out: Path, chat: bool = False, avatar: str = "", voice: str = "", portrait: bytes | None = None
) -> session_pb2.Session:
    """Starts a private stack on free loopback ports, renders `text` as fast as it can, writes `out` (MP4)."""
    ports = StackPorts.free()
    with tempfile.TemporaryDirectory(prefix="infinitetalk-render-") as logs:
        supervisor = Supervisor(ports, log_dir=Path(logs), report=False, gateway=False)
        await supervisor.start()
        try:
            await supervisor.wait_healthy(timeout_s=120)
            client = SessionClient(ports.addr("session"))
            try:
                session = await client.create(
                    avatar=avatar, voice=voice, pacing=session_pb2.PACING_OFFLINE, portrait=portrait
                )
                result = await client.speak(session, text, chat=chat)
                if result.errors:
                    raise RuntimeError("; ".join(e.message for e in result.errors))
                await client.end(session)
                follower = PlaylistFollower(ports.hls_base_url + session.playlist_path)
                playlist = await asyncio.to_thread(follower.poll)
                if playlist is None or not playlist.ended:
                    raise RuntimeError("the playlist did not end")
                await asyncio.to_thread(follower.save_mp4, out)
                return session
            finally:
                await client.close()
        finally:
            await supervisor.stop()


async def _render(args: argparse.Namespace) -> int:
    portrait = _portrait(args.portrait)
    await render(args.text, Path(args.out), chat=args.chat, avatar=args.avatar, voice=args.voice, portrait=portrait)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infinitetalk", description="InfiniteTalk Live: talking-avatar streaming")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run all services locally (offline defaults) until Ctrl-C")
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    up.add_argument("--log-dir", default=".run/logs", help="where each service writes its JSON log ('' = terminal)")
    up.add_argument("--video-workers", type=int, default=1, help="video worker processes (sessions are placed)")
    up.add_argument("--packagers", type=int, default=1, help="packager processes (HLS under /hls/p<i>/)")

    say = commands.add_parser("say", help="speak TEXT through a running stack and follow it on the playlist")
    say.add_argument("text")
    say.add_argument("--chat", action="store_true", help="answer TEXT through the LLM instead of speaking it")
    say.add_argument("--addr", default=DEFAULT_ADDR, help="session service host:port")
    say.add_argument(
        "--api-key",
        default=os.environ.get("INFINITETALK_API_KEY", ""),
        help="API key for CreateSession when the server requires one (default: $INFINITETALK_API_KEY)",
    )
    say.add_argument("--hls", default=None, help="HLS base URL, if the server does not know its public one")
    say.add_argument("--record", metavar="OUT.mp4", help="save what the stream showed until the answer was spoken")
    say.add_argument("--avatar", default="")
    say.add_argument("--voice", default="")
    say.add_argument(
        "--portrait", metavar="PHOTO", help="animate this JPEG, PNG or WebP portrait (instead of --avatar)"
    )

    rend = commands.add_parser("render", help="render TEXT to an MP4 file (no running stack needed)")
    rend.add_argument("text")
    rend.add_argument("--out", required=True, metavar="OUT.mp4")
    rend.add_argument("--chat", action="store_true")
    rend.add_argument("--avatar", default="")
    rend.add_argument("--voice", default="")
    rend.add_argument(
        "--portrait", metavar="PHOTO", help="animate this JPEG, PNG or WebP portrait (instead of --avatar)"
    )

    sheet = commands.add_parser(
        "contact-sheet", help="a PNG of frames across a spoken sentence, with the lip-sync plot (no stack needed)"
    )
    contact_sheet.add_arguments(sheet)

    args = parser.parse_args(argv)
    try:
        if args.command == "contact-sheet":
            return contact_sheet.run(args)
        handler = {"up": _up, "say": _say, "render": _render}[args.command]
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return 130
    except grpc.aio.AioRpcError as error:  # the server's sentence, not the whole debug string
        print(f"infinitetalk {args.command}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except Exception as error:  # a person reads this: one line, not a traceback
        print(f"infinitetalk {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
