"""Session fixtures: one real vLLM server, one throwaway PostgreSQL, fresh SQLite URLs.

The real services are started only when a test asks for them. When what they need is missing the
requesting test FAILS (it is not skipped) and says how to build it: `make test` does it all.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
for _p in (str(_TESTS), str(_TESTS.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import pgserver  # noqa: E402

from medcot.config import ServerConfig, default_cache_dir  # noqa: E402
from medcot.server import CPU_ENV, CPU_EXTRA_ARGS, ServerError, VLLMServer, vllm_python  # noqa: E402

MODEL_NAME = "smollm2-135m-instruct"


def model_dir() -> Path:
    return Path(default_cache_dir()) / "models" / MODEL_NAME


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory):
    """ONE real vLLM CPU server on the converted SmolLM2 model, shared by the whole session."""
    model = model_dir()
    if not (model / "config.json").is_file() or not (model / ".medcot-complete").is_file():
        pytest.fail(f"the converted model {model} is missing: run `make test` (or `make model`)", pytrace=False)
    cfg = ServerConfig(model=str(model), served_model_name=MODEL_NAME, host="127.0.0.1", port=0,
                       max_model_len=2048, dtype="auto", extra_args=list(CPU_EXTRA_ARGS),
                       env=dict(CPU_ENV), startup_timeout_s=600.0)
    try:
        vllm_python(cfg)
    except ServerError as exc:
        pytest.fail(f"the vLLM CPU venv is missing: run `make test` (or `make vllm`). {exc}", pytrace=False)
    server = VLLMServer(cfg, log_path=tmp_path_factory.mktemp("vllm") / "vllm.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_url():
    """SQLAlchemy URL of a throwaway PostgreSQL (trust auth, 127.0.0.1, free port)."""
    try:
        server = pgserver.PostgresServer()
    except pgserver.PostgresError as exc:
        pytest.fail(f"{exc} (run `make test`)", pytrace=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'medcot-test.db'}"
