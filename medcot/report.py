"""The run report in markdown: what was done, what it cost, what is next."""
from __future__ import annotations

from typing import Any


def _table(rows: list[tuple[Any, Any]], head: tuple[str, str]) -> list[str]:
    out = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return out + [""]


def render_markdown(r: dict[str, Any]) -> str:
    llm = r.get("llm", {})
    lines = ["# medcot run report", "",
             f"- config: `{r.get('config')}`", f"- store: `{r.get('store')}`",
             f"- wall time: {r.get('seconds')} s; stages completed: {', '.join(r.get('completed', [])) or 'none'}",
             f"- items in store: {r.get('items')}"]
    if r.get("failed_stage"):
        lines.append(f"- **FAILED in stage `{r['failed_stage']}`**: see the error printed by the command")
    server = r.get("server") or {}
    if server:
        lines.append(f"- vLLM server: `{server.get('model')}`, dtype {server.get('dtype')}"
                     + (f", threads on cores {server['threads_bind']} ({server['reason']})" if server.get("reason") else ""))
    lines += [""]
    if r.get("skipped"):
        lines += ["## Skipped (and why)", ""] + [f"- {line}" for line in r["skipped"]] + [""]
    lines += ["## Items per stage", ""]
    lines += _table(sorted(r.get("stages", {}).items()), ("stage", "items"))
    lines += ["## LLM usage (this run)", ""]
    lines += _table([("HTTP requests made", llm.get("requests", 0)), ("cache hits (no request)", llm.get("cache_hits", 0)),
                     ("retries", llm.get("retries", 0)), ("prompt tokens", llm.get("prompt_tokens", 0)),
                     ("completion tokens", llm.get("completion_tokens", 0))], ("measure", "value"))
    lines += _by_model(r.get("llm_by_model") or {})
    total = r.get("stored_calls", {})
    lines += [f"All calls recorded in the store so far: {total.get('calls', 0)} "
              f"({total.get('prompt_tokens', 0)} prompt + {total.get('completion_tokens', 0)} completion tokens).", ""]
    if llm.get("requests", 0) == 0:
        lines += ["This run made **0 LLM requests**: every answer came from the store's cache.", ""]
    for name, section in r.get("sections", {}).items():
        lines += [f"## Stage `{name}` ({r.get('stage_seconds', {}).get(name, '?')} s)", ""]
        lines += _section(section)
    return "\n".join(lines) + "\n"


def _by_model(by_model: dict[str, dict[str, Any]]) -> list[str]:
    """Usage per model, when more than one model was asked anything this run."""
    used = {name: s for name, s in by_model.items() if s.get("requests", 0) or s.get("cache_hits", 0)}
    if len(used) < 2:
        return []
    lines = ["LLM usage by model (this run):", "", "| model | id | requests | cache hits | retries | "
             "prompt tokens | completion tokens | stages |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, s in used.items():
        lines.append(f"| {name} | `{s.get('model')}` | {s.get('requests', 0)} | {s.get('cache_hits', 0)} | "
                     f"{s.get('retries', 0)} | {s.get('prompt_tokens', 0)} | {s.get('completion_tokens', 0)} | "
                     f"{', '.join(sorted(s.get('by_stage') or {}))} |")
    return lines + [""]


def _section(section: Any) -> list[str]:
    if isinstance(section, dict) and isinstance(section.get("markdown"), str):
        return [section["markdown"], ""]
    if isinstance(section, dict):
        return _table([(k, v) for k, v in section.items()], ("measure", "value"))
    return [str(section), ""]
