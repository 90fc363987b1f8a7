"""Runs the five services and the Envoy gateway as separate, supervised processes: a crashed one is restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.process import envoy_argv
from gateway.render import render_yaml
from gateway.targets import DEFAULT_WEB_ROOT, describe, origins_from_env
from infinitetalk_live.envscope import scoped_env
from infinitetalk_live.ports import GATEWAY, StackPorts, service_of

RESTART_BACKOFF_MAX_S = 5.0
STOP_GRACE_S = 5.0


def service_env(
    service: str,
    ports: StackPorts,
    extra: dict[str, str] | None = None,
    public_hls_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of process `service` (a service name or a replica's process name): the part of `environ`
    (default: ours) that the service may see (infinitetalk_live.envscope: provider keys reach llm and tts only, API keys
    the session only), its ports and peers, then `extra` as given (a caller's explicit settings reach every service)."""
    env = scoped_env(service_of(service), os.environ if environ is None else environ)
    env.update(
        {
            "HOST": ports.host,
            "PORT": str(ports.grpc[service]),
            "METRICS_PORT": str(ports.metrics[service]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if service_of(service) == "tts":
        env.update(shared_box_voice_env(env, len(os.sched_getaffinity(0))))
    if service_of(service) == "packager":
        env["HTTP_PORT"] = str(ports.packager_http[service])
    if service == "session":
        env.update(
            {
                "LLM_ADDR": ports.addr("llm"),
                "TTS_ADDR": ports.addr("tts"),
                "VIDEO_ADDR": ports.addrs("video"),
                "PACKAGER_ADDR": ports.addrs("packager"),
                "PUBLIC_HLS_URL": env.get("PUBLIC_HLS_URL", public_hls_url or ports.hls_base_url),
            }
        )
    env.update(extra or {})
    return env


def shared_box_voice_env(environ: Mapping[str, str], cpus: int) -> dict[str, str]:
    """TTS_THREADS and TTS_CONCURRENCY for a tts process sharing one box with the whole stack (and often a browser),
    unless `environ` sets them: the local voice may keep at most half of the `cpus` busy (at least one core; up to two
    threads per Piper run, as the tts service's own default).

    Why: the tts service's defaults let it take every core of its box, right for a pod of its own. Here the voice's
    burst when an answer starts (Piper runs far faster than real time) took both cores of a 2-core box for ~0.4 s,
    just as the first speech parts had to reach the page; the media chain (video worker, packager, Envoy, the
    browser) then fell ~0.25 s behind and a low-latency player rebuffered. One thread there costs ~20 ms to the
    first speech on screen (measured, README)."""
    half = max(1, cpus // 2)
    out: dict[str, str] = {}
    threads_set = (environ.get("TTS_THREADS") or "").strip()
    if not threads_set:
        threads = min(2, half)
        out["TTS_THREADS"] = str(threads)
    elif threads_set.isdigit() and int(threads_set) > 0:
        threads = int(threads_set)
    else:
        return out  # the tts service refuses it, with a sentence saying why
    if not (environ.get("TTS_CONCURRENCY") or "").strip():
        out["TTS_CONCURRENCY"] = str(max(1, half // threads))
    return out


def gateway_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Envoy's environment: the base any program needs, nothing else (it reads its config file, not variables)."""
    return scoped_env(GATEWAY, os.environ if environ is None else environ)


@dataclass
class ManagedProcess:
    name: str
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    supervised: bool = True
    log_file: Path | None = None
    _log_handle: object | None = field(default=None, repr=False)


class Supervisor:
    """Starts each service with `python -m services.<name>` and (unless `gateway=False`) Envoy in front of them,
    restarts any that dies, stops all on request. Envoy exits with its parent, so this long-lived process owns it."""

    def __init__(
        self,
        ports: StackPorts,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        report: bool = True,
        gateway: bool = True,
        web_root: Path | None = None,
        cors_origins: tuple[str, ...] | None = None,
        standby: tuple[str, ...] = (),
    ) -> None:
        """`standby`: processes not started with the others (`launch` starts one later: e.g. a video worker that
        joins, as a new pod would)."""
        self.ports = ports
        self.report = report
        self.log_dir = log_dir
        self.web_root = web_root or Path(os.environ.get("GATEWAY_WEB_ROOT") or DEFAULT_WEB_ROOT)
        self.cors_origins = cors_origins or origins_from_env()
        public_hls_url = ports.gateway_url if gateway else None
        self.processes = {
            name: ManagedProcess(name, service_env(name, ports, extra_env, public_hls_url)) for name in ports.names()
        }
        self.standby = set(standby)
        self._run_dir: Path | None = None  # the rendered Envoy config, while running
        if gateway:
            self.processes[GATEWAY] = ManagedProcess(GATEWAY, gateway_env())
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def admin_address_file(self) -> Path:
        assert self._run_dir is not None, "this stack runs no gateway, or has not started it"
        return self._run_dir / "admin-address"

    def admin_url(self) -> str | None:
        """Envoy's admin interface (127.0.0.1, a port Envoy picked), once Envoy has started."""
        try:
            address = self.admin_address_file.read_text().strip()
        except FileNotFoundError:
            return None
        return f"http://{address}" if address else None

    def _port(self, name: str) -> int:
        return self.ports.gateway if name == GATEWAY else self.ports.grpc[name]

    def _gateway_argv(self) -> list[str]:
        """Renders the local config afresh (the page may have been rebuilt) and returns Envoy's command line."""
        assert self._run_dir is not None
        gateway = describe(
            "local",
            port=self.ports.gateway,
            session=self.ports.addr("session"),
            packager_http=",".join(f"{self.ports.host}:{port}" for port in self.ports.packager_http.values()),
            web_root=self.web_root,
            cors_origins=self.cors_origins,
            admin_port=int(os.environ.get("GATEWAY_ADMIN_PORT", "0")),
        )
        config = self._run_dir / "envoy.yaml"
        config.write_text(render_yaml(gateway))
        self.admin_address_file.unlink(missing_ok=True)
        return envoy_argv(config, self.admin_address_file, log_level=os.environ.get("GATEWAY_LOG_LEVEL", "warn"))

    def _argv(self, managed: ManagedProcess) -> list[str]:
        if managed.name == GATEWAY:
            return self._gateway_argv()
        return [sys.executable, "-m", f"services.{service_of(managed.name)}"]

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
            *self._argv(managed),
            env=managed.env,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        managed.started_at = time.monotonic()
        self._event("started", name=managed.name, pid=managed.process.pid, port=self._port(managed.name))

    async def start(self) -> None:
        if GATEWAY in self.processes:
            self._run_dir = Path(tempfile.mkdtemp(prefix="infinitetalk-gateway-"))
        for managed in self.processes.values():
            if managed.name not in self.standby:
                await self._spawn(managed)
                self._watchers.append(asyncio.create_task(self._watch(managed)))

    async def launch(self, name: str) -> None:
        """Starts a standby (or killed) process under supervision."""
        managed = self.processes[name]
        self.standby.discard(name)
        managed.supervised = True
        await self._spawn(managed)
        self._watchers.append(asyncio.create_task(self._watch(managed)))

    async def kill(self, name: str) -> None:
        """SIGKILLs a process and leaves it down (a node lost, not a crash to restart)."""
        managed = self.processes[name]
        managed.supervised = False
        assert managed.process is not None
        with contextlib.suppress(ProcessLookupError):
            managed.process.kill()
        await managed.process.wait()

    async def _watch(self, managed: ManagedProcess) -> None:
        backoff = 0.2
        while not self._stopping:
            assert managed.process is not None
            code = await managed.process.wait()
            if self._stopping or not managed.supervised:
                return
            uptime = time.monotonic() - managed.started_at
            self._event("exited", name=managed.name, code=code, uptime_s=round(uptime, 2), restarting=True)
            backoff = 0.2 if uptime > 30 else min(RESTART_BACKOFF_MAX_S, backoff * 2)
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            managed.restarts += 1
            await self._spawn(managed)

    async def healthy(self, name: str) -> bool:
        if name == GATEWAY:
            admin = self.admin_url()
            return admin is not None and await check_http(admin + "/ready")
        return await check_health(self.ports.addr(name), timeout_s=1.0)

    async def wait_healthy(self, timeout_s: float = 60.0, names: tuple[str, ...] | None = None) -> None:
        """Waits for every managed process (or those named): gRPC health for services, /ready for Envoy."""
        deadline = time.monotonic() + timeout_s
        for name in names or tuple(n for n in self.processes if n not in self.standby):
            while True:
                if await self.healthy(name):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not become healthy within {timeout_s:.0f} s")
                await asyncio.sleep(0.1)

    @contextlib.asynccontextmanager
    async def running(self, timeout_s: float = 120.0) -> AsyncIterator[Supervisor]:
        """Started and healthy for the block; stopped after it, however it ends."""
        await self.start()
        try:
            await self.wait_healthy(timeout_s=timeout_s)
            yield self
        finally:
            await self.stop()

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
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
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


async def check_http(url: str, timeout_s: float = 1.0) -> bool:
    """True when `url` answers 200 (Envoy's admin /ready says LIVE)."""

    def get() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.status == 200
        except OSError:
            return False

    return await asyncio.to_thread(get)
