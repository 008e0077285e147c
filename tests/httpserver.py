"""A local HTTP file server on 127.0.0.1 for download tests: Range requests, 404s, dropped
connections, HTML pages. `tests/conftest.py` registers this module as a plugin, so its
`http_server` fixture is available to every test."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    ranges: bool = True  # honour Range requests
    drop_after: int | None = None  # send only this many body bytes, then close...
    drops: int = 0  # ...on this many requests
    file: Path | None = None  # serve this file instead of `body` (archives too big to hold in memory)
    length: bool = True  # send a Content-Length header (some mirrors do not)
    headers: dict[str, str] | None = None  # more response headers (ETag, Last-Modified)


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path with query, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                route = server.routes.get(self.path) or server.routes.get(urlsplit(self.path).path)
                if route is None or route.status == 404:
                    self.send_error(404)
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                size, start = route.file.stat().st_size if route.file else len(route.body), 0
                asked = self.headers.get("Range")
                if asked and route.ranges:
                    start = int(asked.removeprefix("bytes=").split("-")[0])
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", route.content_type)
                for name, value in (route.headers or {}).items():
                    self.send_header(name, value)
                if route.length:
                    self.send_header("Content-Length", str(size - start))
                else:
                    self.close_connection = True  # the end of the body is the end of the connection
                self.end_headers()
                if route.file:
                    with open(route.file, "rb") as fh:
                        fh.seek(start)
                        shutil.copyfileobj(fh, self.wfile, 1 << 20)
                    return
                rest = route.body[start:]
                if route.drops > 0 and route.drop_after is not None:
                    route.drops -= 1
                    self.wfile.write(rest[: route.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(rest)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def add(self, path: str, body: bytes = b"", **options: object) -> str:
        self.routes[path] = Route(body, **options)  # type: ignore[arg-type]
        return self.url(path)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def http_server() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server
