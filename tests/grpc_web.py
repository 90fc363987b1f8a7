"""A raw gRPC-Web client for tests: frames, trailers and one HTTP/1.1 request, as a browser sends them."""

from __future__ import annotations

import http.client
import struct

from infinitetalk_live_client.avatar.v1 import session_pb2

GRPC_WEB = "application/grpc-web+proto"


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request (a `host` in `headers` replaces the default Host); (0, {}, b"") when nothing listens."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = dict(headers or {})
        host = headers.pop("host", None)
        connection.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        for key, value in headers.items():
            connection.putheader(key, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except ConnectionRefusedError:
        return 0, {}, b""
    finally:
        connection.close()


def grpc_frame(message) -> bytes:
    data = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(data)) + data


def parse_frames(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """gRPC-Web body → (messages, trailers)."""
    messages, trailers, offset = [], {}, 0
    while offset < len(body):
        flag, length = body[offset], struct.unpack(">I", body[offset + 1 : offset + 5])[0]
        payload = body[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


def headers_for(bearer: str | None = None, origin: str | None = None) -> dict[str, str]:
    headers = {"content-type": GRPC_WEB, "x-grpc-web": "1", "x-user-agent": "grpc-web-test"}
    if origin:
        headers["origin"] = origin
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    return headers


def grpc_web(
    port: int, method: str, message, origin: str | None = None, bearer: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A unary call (or a stream's whole answer) to SessionService `method`; `bearer`: an API key or control token."""
    body = grpc_frame(message)
    return request(port, "POST", f"/avatar.v1.SessionService/{method}", body, headers_for(bearer, origin))


def grpc_web_status(port: int, method: str, message, bearer: str | None = None) -> tuple[str, str, list[bytes]]:
    """(grpc-status, grpc-message, messages) of a unary gRPC-Web call, from headers (trailers-only) or trailers."""
    status, headers, body = grpc_web(port, method, message, bearer=bearer)
    assert status == 200, (status, headers, body[:200])
    messages, trailers = parse_frames(body)
    code = headers.get("grpc-status") or trailers.get("grpc-status", "")
    text = headers.get("grpc-message") or trailers.get("grpc-message", "")
    return code, text, messages


def create_session(port: int, api_key: str | None = None) -> session_pb2.Session:
    status, headers, body = grpc_web(port, "CreateSession", session_pb2.CreateSessionRequest(), bearer=api_key)
    assert status == 200 and headers["content-type"] == GRPC_WEB
    messages, trailers = parse_frames(body)
    assert trailers.get("grpc-status") == "0", (headers, trailers)
    assert len(messages) == 1
    return session_pb2.CreateSessionResponse.FromString(messages[0]).session


def end_session(port: int, session: session_pb2.Session) -> None:
    grpc_web(
        port, "EndSession", session_pb2.EndSessionRequest(session_id=session.session_id), bearer=session.control_token
    )


def first_watch_event(port: int, session: session_pb2.Session) -> session_pb2.WatchSessionResponse:
    """Opens WatchSession over HTTP/1.1 and reads only the first message of the (endless) stream."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = grpc_frame(session_pb2.WatchSessionRequest(session_id=session.session_id))
        headers = headers_for(session.control_token)
        connection.request("POST", "/avatar.v1.SessionService/WatchSession", body, headers)
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("grpc-status") is None
        header = response.read(5)
        assert header[0] == 0, "a data frame first"
        message = response.read(struct.unpack(">I", header[1:])[0])
        return session_pb2.WatchSessionResponse.FromString(message)
    finally:
        connection.close()
