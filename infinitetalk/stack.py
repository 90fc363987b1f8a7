"""Runs the five services as separate, supervised processes: a crashed one is restarted (and logged)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_ORDER = ("llm", "tts", "video", "packager", "session")
DEFAULT_PORTS = {"session": 50051, "llm": 50052, "tts": 50053, "video": 50054, "packager": 50055}
DEFAULT_METRICS_PORTS = {"session": 9101, "llm": 9102, "tts": 9103, "video": 9104, "packager": 9105}
DEFAULT_HTTP_PORT = 8088
RESTART_BACKOFF_MAX_S = 5.0
STOP_GRACE_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class StackPorts:
    grpc: dict[str, int]
    metrics: dict[str, int]
    http: int
    host: str = "127.0.0.1"

    @classmethod
    def defaults(cls) -> StackPorts:
        return cls(dict(DEFAULT_PORTS), dict(DEFAULT_METRICS_PORTS), DEFAULT_HTTP_PORT)

    @classmethod
    def free(cls) -> StackPorts:
        return cls(
            {name: free_port() for name in SERVICE_ORDER},
            {name: free_port() for name in SERVICE_ORDER},
            free_port(),
        )

    def addr(self, service: str) -> str:
        return f"{self.host}:{self.grpc[service]}"

    @property
    def hls_base_url(self) -> str:
        return f"http://{self.host}:{self.http}"


def service_env(service: str, ports: StackPorts, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HOST": ports.host,
            "PORT": str(ports.grpc[service]),
            "METRICS_PORT": str(ports.metrics[service]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if service == "packager":
        env["HTTP_PORT"] = str(ports.http)
    if service == "session":
        env.update(
            {
                "LLM_ADDR": ports.addr("llm"),
                "TTS_ADDR": ports.addr("tts"),
                "VIDEO_ADDR": ports.addr("video"),
                "PACKAGER_ADDR": ports.addr("packager"),
                "PUBLIC_HLS_URL": env.get("PUBLIC_HLS_URL", ports.hls_base_url),
            }
        )
    env.update(extra or {})
    return env


@dataclass
class ManagedProcess:
    name: str
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    log_file: Path | None = None
    _log_handle: object | None = field(default=None, repr=False)


class Supervisor:
    """Starts each service with `python -m services.<name>`, restarts it when it dies, stops all on request."""

    def __init__(
        self,
        ports: StackPorts,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        report: bool = True,
    ) -> None:
        self.ports = ports
        self.report = report
        self.log_dir = log_dir
        self.processes = {name: ManagedProcess(name, service_env(name, ports, extra_env)) for name in SERVICE_ORDER}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    def _event(self, event: str, **fields: object) -> None:
        if not self.report:
            return
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "service": "supervisor", "event": event}
        entry.update(fields)
        print(json.dumps(entry), file=sys.stderr, flush=True)

    async def _spawn(self, managed: ManagedProcess) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            managed.log_file = self.log_dir / f"{managed.name}.log"
            if managed._log_handle is None:
                managed._log_handle = open(managed.log_file, "ab")  # noqa: SIM115, ASYNC230 - kept open for the process
            output = managed._log_handle
        else:
            output = None
        managed.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{managed.name}",
            env=managed.env,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        managed.started_at = time.monotonic()
        self._event("started", name=managed.name, pid=managed.process.pid, port=self.ports.grpc[managed.name])

    async def start(self) -> None:
        for managed in self.processes.values():
            await self._spawn(managed)
        self._watchers = [asyncio.create_task(self._watch(m)) for m in self.processes.values()]

    async def _watch(self, managed: ManagedProcess) -> None:
        backoff = 0.2
        while not self._stopping:
            assert managed.process is not None
            code = await managed.process.wait()
            if self._stopping:
                return
            uptime = time.monotonic() - managed.started_at
            self._event("exited", name=managed.name, code=code, uptime_s=round(uptime, 2), restarting=True)
            backoff = 0.2 if uptime > 30 else min(RESTART_BACKOFF_MAX_S, backoff * 2)
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            managed.restarts += 1
            await self._spawn(managed)

    async def wait_healthy(self, timeout_s: float = 60.0, names: tuple[str, ...] = SERVICE_ORDER) -> None:
        deadline = time.monotonic() + timeout_s
        for name in names:
            while True:
                if await check_health(self.ports.addr(name), timeout_s=1.0):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not become healthy within {timeout_s:.0f} s")
                await asyncio.sleep(0.1)

    def pid(self, name: str) -> int:
        process = self.processes[name].process
        assert process is not None
        return process.pid

    async def stop(self) -> None:
        self._stopping = True
        for managed in reversed(list(self.processes.values())):
            if managed.process is not None and managed.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    managed.process.send_signal(signal.SIGTERM)
        for managed in self.processes.values():
            if managed.process is None:
                continue
            try:
                await asyncio.wait_for(managed.process.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    managed.process.kill()
                await managed.process.wait()
            if managed._log_handle is not None:
                managed._log_handle.close()  # type: ignore[attr-defined]
        for watcher in self._watchers:
            watcher.cancel()
        self._event("stopped")


async def check_health(addr: str, service: str = "", timeout_s: float = 1.0) -> bool:
    """True when the gRPC health service at `addr` reports SERVING."""
    async with grpc.aio.insecure_channel(addr) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING
