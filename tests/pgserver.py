"""A throwaway PostgreSQL server for tests (Debian's postgresql package, `make system`).

    with PostgresServer() as pg:
        engine = sqlalchemy.create_engine(pg.url)   # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres

initdb refuses to run as root, so as root the server binaries run as the `postgres` user through
`runuser`. Data and socket live in a fresh temp folder; the server listens on 127.0.0.1 only, on a free
port, with trust auth and fsync off; stop() shuts it down and removes the folder.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresError(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl."""
    def version(path: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/bin", path)
        return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)

    candidates = [p for p in glob.glob("/usr/lib/postgresql/*/bin")
                  if os.access(os.path.join(p, "initdb"), os.X_OK) and os.access(os.path.join(p, "pg_ctl"), os.X_OK)]
    if not candidates:
        raise PostgresError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                            "run `make system` (or `make test`, which installs them)")
    return Path(max(candidates, key=version))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self, bin_dir: str | Path | None = None) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir else find_pg_bin()
        self.tmp: Path | None = None
        self.port: int | None = None
        self.as_root = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "data"

    @property
    def url(self) -> str:
        if self.port is None:
            raise PostgresError("server not started")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, cwd=self.tmp, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise PostgresError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
                                f"{self._log_tail()}")
        return done

    def _log_tail(self) -> str:
        log = self.tmp / "postgres.log" if self.tmp else None
        if log and log.is_file():
            return "\n--- postgres.log ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        return ""

    def start(self) -> str:
        if self.port is not None:
            return self.url
        # /tmp as root: the postgres user must be able to reach the folder ($TMPDIR may be under /root)
        self.tmp = Path(tempfile.mkdtemp(prefix="medcot-pg-", dir="/tmp" if self.as_root else None))
        try:
            if self.as_root:
                try:
                    pw = pwd.getpwnam("postgres")
                except KeyError as exc:
                    raise PostgresError("no `postgres` user: run `make system`") from exc
                os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            os.chmod(self.tmp, 0o700)
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--locale=C", "--no-sync")
            last: Exception | None = None
            for _ in range(3):  # a free port can be taken between picking and binding
                port = _free_port()
                try:
                    self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.tmp / "postgres.log"),
                              "-w", "-t", "60", "-o",
                              f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={self.tmp} "
                              "-c fsync=off -c synchronous_commit=off -c full_page_writes=off", "start")
                except PostgresError as exc:
                    last = exc
                    continue
                self.port = port
                return self.url
            raise PostgresError(f"PostgreSQL did not start: {last}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.tmp is None:
            return
        if (self.data_dir / "postmaster.pid").is_file():
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop", timeout=60)
            except (PostgresError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
        self.port = None

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
