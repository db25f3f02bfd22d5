"""Long work of the review app (consensus over thousands of items) as background jobs, off the event loop.

A job is supervised by a thread of its own; CPU-heavy work runs in a child process (`in_process`), so it never
holds the app's GIL and pages and /healthz keep answering at once while it works. Its progress (done of total)
and outcome are kept in memory and shown on the dashboard and at /admin/jobs/{id}. One job of a kind runs
at a time: starting it again while it runs returns the running job. The work itself is restartable (consensus
decides one item per transaction), so a job cut short by a restart loses nothing: running it again continues.
"""
from __future__ import annotations

import multiprocessing
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[int, int], None]


@dataclass
class Job:
    id: str
    kind: str
    status: str = "running"  # running | done | failed
    done: int = 0
    total: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "done": self.done, "total": self.total,
                "result": self.result, "error": self.error, "started_at": self.started_at,
                "finished_at": self.finished_at}


class Jobs:
    """The app's background jobs (this process)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, work: Callable[[Progress], dict[str, Any]],
              on_start: Callable[[Job], None] | None = None, on_done: Callable[[Job], None] | None = None) -> Job:
        """Start `work(progress)` in a thread (on_start runs first, in the caller's thread, only for a new job)."""
        with self._lock:
            running = self.latest(kind)
            if running is not None and running.status == "running":
                return running
            job = Job(id=secrets.token_hex(8), kind=kind)
            self._jobs[job.id] = job
            if on_start is not None:
                on_start(job)
        threading.Thread(target=self._run, args=(job, work, on_done), name=f"medcot-{kind}-{job.id}",
                         daemon=True).start()
        return job

    def _run(self, job: Job, work: Callable[[Progress], dict[str, Any]],
             on_done: Callable[[Job], None] | None) -> None:
        try:
            job.result = work(job.progress)
            job.status = "done"
        except Exception as exc:  # noqa: BLE001 (a failed job is shown with its error; the app keeps serving)
            job.error, job.status = f"{type(exc).__name__}: {exc}"[:500], "failed"
        job.finished_at = time.time()
        if on_done is not None:
            on_done(job)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def latest(self, kind: str) -> Job | None:
        of_kind = [j for j in self._jobs.values() if j.kind == kind]
        return max(of_kind, key=lambda j: j.started_at) if of_kind else None


def in_process(fn: Callable[..., dict[str, Any]], *args: Any) -> Callable[[Progress], dict[str, Any]]:
    """Work that runs `fn(*args, progress)` in a child process (spawned: a fresh interpreter, its own store
    connections), relaying its progress; fn and args must be picklable (a module-level function, plain data)."""
    def work(progress: Progress) -> dict[str, Any]:
        ctx = multiprocessing.get_context("spawn")
        done, total = ctx.Value("q", 0), ctx.Value("q", 0)
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(fn, args, done, total, send), name="medcot-job", daemon=True)
        proc.start()
        send.close()
        outcome: tuple[str, Any] | None = None
        while outcome is None and (proc.is_alive() or receive.poll()):
            if receive.poll(0.2):
                try:
                    outcome = receive.recv()
                except EOFError:
                    break
            progress(done.value, total.value)
        proc.join(30)
        progress(done.value, total.value)
        if outcome is None:
            raise RuntimeError(f"the job's process ended without a result (exit code {proc.exitcode})")
        if outcome[0] == "error":
            raise RuntimeError(outcome[1])
        return dict(outcome[1])
    return work


def _child(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], done: Any, total: Any, send: Any) -> None:
    def progress(d: int, t: int) -> None:
        done.value, total.value = d, t
    try:
        send.send(("ok", fn(*args, progress)))
    except Exception as exc:  # noqa: BLE001 (relayed to the job, shown on the dashboard)
        send.send(("error", f"{type(exc).__name__}: {exc}"[:500]))
    finally:
        send.close()
