"""The built page as direct-response routes: Envoy has no static file server, so every file gets its own route."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from gateway.model import File, Inline, Route

# Fixed, not from the system's mime.types, so the rendered config is the same on every machine.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".wasm": "application/wasm",
    ".mp4": "video/mp4",
}
IMMUTABLE = "public, max-age=31536000, immutable"  # content-hashed names under /_next/static/
REVALIDATE = "no-cache"
BUILD_HINT = "cd web && npm ci && npm run build"
NOT_BUILT_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>InfiniteTalk Live: page not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>The page is not built yet</h1>
<p>The gateway is running, but it found no built page at <code>{{root}}</code>.</p>
<p>Build it with <code>{BUILD_HINT}</code>, then restart <code>infinitetalk up</code>.</p>
</body></html>
"""
PATH_SAFE = "/-._~!$&'()*+,;=:@[]"  # what a browser leaves unescaped in a path


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def url_paths(relative: str) -> list[str]:
    """The URL paths a file answers: itself, and for `x.html` / `x/index.html` the extension-less page paths."""
    paths = ["/" + relative]
    if relative == "index.html":
        paths.insert(0, "/")
    elif relative.endswith("/index.html"):
        paths.append("/" + relative.removesuffix("index.html"))
        paths.append("/" + relative.removesuffix("/index.html"))
    elif relative.endswith(".html") and relative != "404.html":
        paths.append("/" + relative.removesuffix(".html"))
    return [quote(p, safe=PATH_SAFE) for p in paths]


def file_routes(root: Path) -> list[Route]:
    """One exact-path route per file under `root` (sorted, so the rendering is deterministic)."""
    root = root.resolve()
    routes: list[Route] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(root).as_posix()
        cache = IMMUTABLE if relative.startswith("_next/static/") else REVALIDATE
        action = File(path, content_type(path), cache)
        routes.extend(Route(url, action) for url in url_paths(relative))
    missing = root / "404.html"
    if missing.is_file():
        routes.append(Route("/", File(missing, content_type(missing), REVALIDATE, status=404), prefix=True))
    else:
        routes.append(Route("/", Inline("not found\n", "text/plain; charset=utf-8", status=404), prefix=True))
    return routes


def page_routes(root: Path) -> list[Route]:
    """The page's routes, or, when it is not built, a page saying how to build it."""
    if root.is_dir() and (root / "index.html").is_file():
        return file_routes(root)
    body = NOT_BUILT_PAGE.replace("{root}", html.escape(str(root)))
    return [
        Route("/", Inline(body, "text/html; charset=utf-8")),
        Route("/", Inline("not found (the page is not built)\n", "text/plain; charset=utf-8", status=404), prefix=True),
    ]
