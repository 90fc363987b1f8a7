"""`python -m gateway render --target local|k8s [...]`: prints the Envoy static config to stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.render import render_yaml
from gateway.targets import TARGETS, describe, origins_from_env
from services.common.ports import GATEWAY_PORT, PACKAGER_HTTP_PORT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="print the Envoy static config (YAML) for a target")
    render.add_argument("--target", choices=sorted(TARGETS), default="local")
    render.add_argument("--port", type=int, default=None, help=f"listener port (default {GATEWAY_PORT})")
    render.add_argument("--admin-port", type=int, default=None, help="admin port on 127.0.0.1 (0: Envoy picks)")
    render.add_argument("--session", metavar="HOST:PORT", default=None, help="session service (gRPC)")
    render.add_argument(
        "--packager-http", metavar="HOST:PORT[,...]", default=None, help="packagers' HLS HTTP servers (comma-separated)"
    )
    render.add_argument(
        "--packagers",
        type=int,
        default=1,
        help=f"k8s: packager replicas (packager-<i>.packager:{PACKAGER_HTTP_PORT}, /hls/p<i>/)",
    )
    render.add_argument("--web-root", type=Path, default=None, help="the built page (default: web/out)")
    render.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="extend",
        nargs="+",
        metavar="ORIGIN",
        help="allowed CORS origin (repeatable; default: $GATEWAY_CORS_ORIGINS or the gateway's own origins)",
    )
    render.add_argument(
        "--domain",
        dest="domains",
        action="extend",
        nargs="+",
        metavar="HOST",
        help="Host name to answer besides the target's own (repeatable; default: $GATEWAY_DOMAINS); others get 421",
    )
    render.add_argument("-o", "--out", type=Path, default=None, help="write to this file instead of stdout")
    args = parser.parse_args(argv)

    try:
        gateway = describe(
            args.target,
            port=args.port,
            session=args.session,
            packager_http=args.packager_http,
            web_root=args.web_root.resolve() if args.web_root else None,
            cors_origins=args.cors_origins or origins_from_env(),
            admin_port=args.admin_port,
            packagers=args.packagers,
            domains=args.domains,
        )
    except ValueError as error:
        print(f"gateway render: {error}", file=sys.stderr)
        return 2
    text = render_yaml(gateway)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
