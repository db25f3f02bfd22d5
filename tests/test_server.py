"""medcot.server: command/env building, start/health/stop with fake servers, and one real vLLM run."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medcot.config import ServerConfig
from medcot.cpu import CpuInfo, core_ranges, read_cpu
from medcot.server import (
    CPU_ENV,
    CPU_EXTRA_ARGS,
    ServerError,
    VLLMServer,
    build_command,
    build_env,
    healthy,
    resolve_cpu_settings,
    vllm_python,
)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _script(path: Path, body: str) -> str:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    return _script(tmp_path / "python", "#!/bin/sh\nexit 0\n")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# A stand-in for `python -m vllm.entrypoints.openai.api_server ...`: starts a child in its process group,
# then serves GET /health on --port (optionally ignoring SIGTERM).
FAKE_SERVER = """#!/bin/bash
port=""
name=""
while [ $# -gt 0 ]; do case "$1" in --port) port="$2"; shift;; --served-model-name) name="$2"; shift;; esac; shift; done
sleep 300 &
echo $! > "$CHILD_PID_FILE"
echo "fake vllm on port $port"
exec {python} -c '
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(data=[dict(id=sys.argv[2])])).encode() if self.path == "/v1/models" else b""
        self.send_response(200 if self.path in ("/health", "/v1/models") else 404); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$port" "$name"
"""


# ---------------------------------------------------------------- command and environment

def test_build_command(fake_python: str) -> None:
    cfg = ServerConfig(python=fake_python, model="/models/smollm2-135m-instruct/", port=8123, dtype="bfloat16",
                       extra_args=list(CPU_EXTRA_ARGS))
    assert build_command(cfg) == [
        fake_python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/smollm2-135m-instruct/",
        "--served-model-name", "smollm2-135m-instruct",
        "--host", "127.0.0.1", "--port", "8123",
        "--max-model-len", "2048", "--dtype", "bfloat16",
        *CPU_EXTRA_ARGS]
    named = build_command(ServerConfig(python=fake_python, model="/m/x", served_model_name="smol", port=1))
    assert named[named.index("--served-model-name") + 1] == "smol"
    assert CPU_EXTRA_ARGS[:2] == ["--enforce-eager", "--no-enable-chunked-prefill"]
    assert json.loads(CPU_EXTRA_ARGS[CPU_EXTRA_ARGS.index("--structured-outputs-config") + 1]) == {
        "backend": "xgrammar", "disable_any_whitespace": True}


def test_build_command_needs_a_model(fake_python: str) -> None:
    with pytest.raises(ServerError, match="server.model"):
        build_command(ServerConfig(python=fake_python))


def test_port_zero_picks_a_free_port(fake_python: str) -> None:
    cmd = build_command(ServerConfig(python=fake_python, model="/m/x", port=0))
    assert int(cmd[cmd.index("--port") + 1]) > 0
    server = VLLMServer(ServerConfig(python=fake_python, model="/m/x", port=0))
    assert server.cfg.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.cfg.port}/v1"
    assert server.model_name == "x"
    assert server.command[server.command.index("--port") + 1] == str(server.cfg.port)


def test_build_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", "/somewhere/else")
    monkeypatch.setenv("MEDCOT_TEST_PASSTHROUGH", "yes")
    env = build_env(ServerConfig(env={**CPU_ENV, "TMPDIR": "/cfg/tmp"}))
    cache = tmp_path / "cache"
    assert env["VLLM_CACHE_ROOT"] == str(cache / "vllm") and (cache / "vllm").is_dir()
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(cache / "torchinductor")
    assert env["HF_HOME"] == str(cache / "hf")          # ours beats os.environ
    assert env["TMPDIR"] == "/cfg/tmp"                  # cfg.env beats ours
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    assert env["MEDCOT_TEST_PASSTHROUGH"] == "yes"


def test_vllm_python_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_python: str) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDCOT_CACHE", str(cache))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("MEDCOT_VLLM_PYTHON", raising=False)
    with pytest.raises(ServerError, match="make vllm"):
        vllm_python(ServerConfig())
    venv_py = cache / "vllm-venv" / "bin" / "python"
    venv_py.parent.mkdir(parents=True)
    _script(venv_py, "#!/bin/sh\n")
    assert vllm_python(ServerConfig()) == str(venv_py)
    env_py = _script(tmp_path / "envpython", "#!/bin/sh\n")
    monkeypatch.setenv("MEDCOT_VLLM_PYTHON", env_py)
    assert vllm_python(ServerConfig()) == env_py
    assert vllm_python(ServerConfig(python=fake_python)) == fake_python
    with pytest.raises(ServerError, match="make vllm"):
        vllm_python(ServerConfig(python=str(tmp_path / "nope")))


# ---------------------------------------------------------------- start / wait_ready / stop

def test_server_that_exits_raises_with_log_tail(tmp_path: Path) -> None:
    lines = "".join(f"echo line{i}\n" for i in range(40))
    python = _script(tmp_path / "python", f"#!/bin/sh\n{lines}echo 'boom: no such model' >&2\nexit 3\n")
    server = VLLMServer(ServerConfig(python=python, model=str(tmp_path), port=0, startup_timeout_s=30),
                        log_path=tmp_path / "server.log")
    t0 = time.monotonic()
    with pytest.raises(ServerError) as info:
        server.start()
    message = str(info.value)
    assert time.monotonic() - t0 < 10
    assert "exited with code 3" in message and "boom: no such model" in message
    assert "line39" in message and "line11" in message and "line10" not in message  # last 30 lines
    assert not server.is_running()
    server.stop()  # idempotent


def _serve(fake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> VLLMServer:
    monkeypatch.setenv("CHILD_PID_FILE", str(tmp_path / "child.pid"))
    (tmp_path / "fake-model").mkdir(exist_ok=True)
    cfg = ServerConfig(python=fake, model=str(tmp_path / "fake-model"), port=0, startup_timeout_s=30, env=dict(env))
    return VLLMServer(cfg, log_path=tmp_path / "server.log")


def test_start_health_and_stop_kill_the_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path / "python", FAKE_SERVER.format(python=sys.executable))
    with _serve(fake, tmp_path, monkeypatch) as server:
        assert server.is_running() and healthy(server.base_url)
        leader = server.proc.pid
        child = int((tmp_path / "child.pid").read_text())
        assert _alive(leader) and _alive(child)
        assert os.getpgid(child) == leader != os.getpgid(0)
    assert not server.is_running()
    assert not _alive(leader) and not _alive(child)
    assert not healthy(server.base_url)
    assert "fake vllm on port" in (tmp_path / "server.log").read_text()
    server.stop()  # idempotent


def test_stop_escalates_to_sigkill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path / "python", FAKE_SERVER.format(python=sys.executable))
    server = _serve(fake, tmp_path, monkeypatch, IGNORE_TERM="1").start()
    leader = server.proc.pid
    t0 = time.monotonic()
    server.stop(timeout=1)
    assert 0.9 < time.monotonic() - t0 < 10
    assert not _alive(leader) and server.proc.returncode == -9


class _Health(BaseHTTPRequestHandler):
    ready_after = 3
    calls = 0

    served = "x"  # what /v1/models lists

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v1/models":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps({"data": [{"id": self.served}]}).encode())
            return
        type(self).calls += 1
        ok = self.path == "/health" and type(self).calls > self.ready_after
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server():
    handler = type("H", (_Health,), {"calls": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, handler
    httpd.shutdown()
    httpd.server_close()


def test_wait_ready_polls_health(health_server, fake_python: str) -> None:
    httpd, handler = health_server
    server = VLLMServer(ServerConfig(python=fake_python, model="/m/x", port=httpd.server_address[1],
                                     startup_timeout_s=20))
    server.proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        t0 = time.monotonic()
        server.wait_ready()
        assert handler.calls == handler.ready_after + 1
        assert 1.0 <= time.monotonic() - t0 < 10   # three 503s, polled every 0.5 s
        assert healthy(server.base_url) and healthy(server.base_url + "/")
    finally:
        server.stop()
    assert server.proc.returncode is not None


def test_wait_ready_times_out(health_server, fake_python: str, tmp_path: Path) -> None:
    httpd, handler = health_server
    handler.ready_after = 10**9
    (tmp_path / "server.log").write_text("still loading weights\n")
    server = VLLMServer(ServerConfig(python=fake_python, model="/m/x", port=httpd.server_address[1],
                                     startup_timeout_s=1.5), log_path=tmp_path / "server.log")
    server.proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    with pytest.raises(ServerError, match=r"not healthy after 1.5 s(.|\n)*still loading weights"):
        server.wait_ready()
    assert not server.is_running()


def test_healthy_is_false_without_a_server(fake_python: str) -> None:
    server = VLLMServer(ServerConfig(python=fake_python, model="/m/x", port=0))
    assert not healthy(server.base_url, timeout=0.5)
    assert not server.is_running()
    server.stop()  # never started: no-op


# ---------------------------------------------------------------- real services

def _get(url: str) -> dict:
    with _NO_PROXY.open(url, timeout=30) as resp:
        return json.loads(resp.read())


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with _NO_PROXY.open(req, timeout=120) as resp:
        return json.loads(resp.read())


@pytest.mark.vllm
def test_real_vllm_server(vllm_server: VLLMServer) -> None:
    base = vllm_server.base_url
    with _NO_PROXY.open(base[: -len("/v1")] + "/health", timeout=10) as resp:
        assert resp.status == 200
    assert vllm_server.model_name in [m["id"] for m in _get(base + "/models")["data"]]
    out = _post(base + "/chat/completions", {
        "model": vllm_server.model_name, "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    content = out["choices"][0]["message"]["content"]
    assert isinstance(content, str) and content.strip()
    assert out["usage"]["completion_tokens"] <= 8


@pytest.mark.postgres
def test_postgres_select_one(pg_url: str) -> None:
    import sqlalchemy as sa

    assert pg_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
            assert "PostgreSQL" in conn.execute(sa.text("select version()")).scalar()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- dtype and threads chosen by CPU

AVX2_ONLY = CpuInfo(model="AMD EPYC", flags=frozenset({"avx", "avx2", "fma"}), cores=(0, 1))
AVX512_BF16 = CpuInfo(model="Xeon", flags=frozenset({"avx2", "avx512f", "avx512_bf16"}), cores=(0, 1, 2, 3))


def test_auto_dtype_follows_native_bf16() -> None:
    cfg = ServerConfig(model="/m/x", dtype="auto", env=dict(CPU_ENV))
    resolved, choice = resolve_cpu_settings(cfg, AVX2_ONLY)
    assert resolved.dtype == "float32" and choice is not None and "no native bf16" in choice.reason
    assert resolved.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    resolved, choice = resolve_cpu_settings(cfg, AVX512_BF16)
    assert resolved.dtype == "bfloat16" and "avx512_bf16" in choice.reason
    assert resolved.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"


def test_explicit_dtype_wins_and_says_what_auto_would_pick() -> None:
    cfg = ServerConfig(model="/m/x", dtype="bfloat16", env=dict(CPU_ENV))
    resolved, choice = resolve_cpu_settings(cfg, AVX2_ONLY)
    assert resolved.dtype == "bfloat16" and "set in the config" in choice.reason and "float32" in choice.reason
    untouched, none = resolve_cpu_settings(ServerConfig(model="/m/x", dtype="float16"), AVX2_ONLY)
    assert untouched.dtype == "float16" and none is None


def test_read_cpu_parses_proc_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma\n")
    cpu = read_cpu(info)
    assert cpu.model == "AMD EPYC 7B13" and "avx2" in cpu.flags and not cpu.native_bf16
    assert core_ranges((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8" and core_ranges((3,)) == "3"


def test_a_foreign_server_on_the_port_is_not_taken_for_ours(health_server, fake_python: str) -> None:
    httpd, handler = health_server
    handler.ready_after, handler.served = 0, "someone-elses-model"
    server = VLLMServer(ServerConfig(python=fake_python, model="/m/x", port=httpd.server_address[1],
                                     startup_timeout_s=10))
    server.proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    with pytest.raises(ServerError, match=r"is not ours: it serves \['someone-elses-model'\], not 'x'"):
        server.wait_ready()
    assert not server.is_running()


def test_busy_port_and_missing_model_folder_are_setup_errors(tmp_path: Path, fake_python: str) -> None:
    import socket

    from click.testing import CliRunner

    from medcot.cli import main
    from medcot.server import BadServerSetup
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = VLLMServer(ServerConfig(python=fake_python, model=str(tmp_path), port=port))
        with pytest.raises(BadServerSetup, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
        assert server.proc is None  # nothing was started
        res = CliRunner().invoke(main, ["serve", "--set", f"server.model={tmp_path}", "--set", f"server.port={port}",
                                        "--set", f"server.python={fake_python}"])
        assert res.exit_code == 2 and "already in use" in res.output
        res = CliRunner().invoke(main, ["review", "serve", "--port", str(port)],
                                 env={"MEDCOT_REVIEW_SECRET": "x" * 40})
        assert res.exit_code == 2 and "already in use" in res.output, res.output
    missing = tmp_path / "no-model-here"
    with pytest.raises(BadServerSetup, match=f"model folder {missing} does not exist"):
        VLLMServer(ServerConfig(python=fake_python, model=str(missing), port=0)).start()
    res = CliRunner().invoke(main, ["serve", "--set", f"server.model={missing}", "--set", f"server.python={fake_python}"])
    assert res.exit_code == 2 and "does not exist" in res.output
