"""`medcot review ...`: serve the app, add accounts, agreement statistics, audit export, Label Studio interop."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from medcot.cli import config_option, fail, get_config, set_option, store_option


def _store(cfg: Any, create: bool = False) -> Any:
    """Read-only commands (stats, exports) never create a store; add-user and imports may."""
    from medcot.cli import open_store
    return open_store(cfg.store.url, create)


def _password(password_env: str | None) -> str:
    if password_env:
        password = os.environ.get(password_env, "")
        if not password:
            fail(f"${password_env} is empty or not set")
        return password
    return str(click.prompt("password", hide_input=True, confirmation_prompt=True))


def _account_call(config_path: str | None, overrides: tuple[str, ...], store_url: str | None, fn: Any) -> Any:
    """Run fn(conn, cfg) in one transaction of the store; a ReviewError is one clear line and exit 1."""
    from curation.review.records import ReviewError
    cfg = get_config(config_path, overrides, store_url)
    try:
        with _store(cfg).transaction() as conn:
            return fn(conn, cfg)
    except ReviewError as exc:
        fail(str(exc))


def register(main: click.Group) -> None:
    @main.group()
    def review() -> None:
        """Expert review: the web app, accounts, agreement, audit log, Label Studio interop."""

    @review.command()
    @config_option
    @set_option
    @click.option("--host", default=None, help="Bind address (default review.host, 127.0.0.1).")
    @click.option("--port", type=int, default=None, help="Port (default review.port).")
    def serve(config_path: str | None, overrides: tuple[str, ...], host: str | None, port: int | None) -> None:
        """Run the review web app until Ctrl-C. Needs the session key in $MEDCOT_REVIEW_SECRET (review.secret_key_env)."""
        import uvicorn

        from curation.review.app import create_app
        from medcot.config import ConfigError
        cfg = get_config(config_path, overrides)
        try:
            app = create_app(cfg)
        except ConfigError as exc:
            fail(str(exc))
        from medcot.server import port_in_use
        bind = host or cfg.review.host
        if port_in_use(bind, port if port is not None else cfg.review.port):
            fail(f"port {port if port is not None else cfg.review.port} on {bind} is already in use: pass --port "
                 "or set review.port")
        if bind not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"note: binding to {bind}: serve it behind HTTPS and set review.cookie_secure=true", err=True)
        click.echo(f"review app at http://{bind}:{port or cfg.review.port} (store {cfg.store.url})")
        uvicorn.run(app, host=bind, port=port if port is not None else cfg.review.port, log_level="info",
                    proxy_headers=False, server_header=False)

    @review.command("add-user")
    @click.argument("name")
    @click.option("--role", type=click.Choice(["reviewer", "panelist", "admin"]), required=True)
    @click.option("--password-env", default=None, metavar="VAR",
                  help="Read the password from this environment variable instead of a prompt.")
    @store_option
    @config_option
    def add_user(name: str, role: str, password_env: str | None, store_url: str | None,
                 config_path: str | None) -> None:
        """Add a human account (argon2-hashed password, at least 10 characters)."""
        from curation.review.auth import create_user
        from curation.review.records import ReviewError
        cfg = get_config(config_path, store_url=store_url)
        password = _password(password_env)
        try:
            user = create_user(_store(cfg, create=True), name, role, password)
        except ReviewError as exc:
            fail(str(exc))
        click.echo(f"added {user.role} {user.name!r} (id {user.id})")

    @review.group("user")
    def user_group() -> None:
        """Accounts: list, deactivate / activate, reset a password, routing profiles, revoke sessions."""

    @user_group.command("list")
    @store_option
    @config_option
    def user_list(store_url: str | None, config_path: str | None) -> None:
        """Every account: id, name, role, kind, active, languages, specialties (routing profile; '-' = any)."""
        from curation.review.auth import list_users
        cfg = get_config(config_path, store_url=store_url)
        with _store(cfg).engine.connect() as conn:
            for u in list_users(conn):
                click.echo(f"{u.id}\t{u.name}\t{u.role}\t{u.kind}\t{'active' if u.active else 'inactive'}\t"
                           f"{','.join(u.languages) or '-'}\t{','.join(u.specialties) or '-'}")

    @user_group.command("revoke-sessions")
    @click.argument("name")
    @store_option
    @config_option
    def revoke_sessions(name: str, store_url: str | None, config_path: str | None) -> None:
        """Log a user out everywhere at once (every live session of theirs stops working)."""
        from curation.review.auth import get_user_by_name, revoke_user_sessions
        cfg = get_config(config_path, store_url=store_url)
        store = _store(cfg)
        with store.transaction() as conn:
            user = get_user_by_name(conn, name)
            if user is None:
                fail(f"no user named {name!r} (see `medcot review user list`)")
            n = revoke_user_sessions(conn, user.id)
        click.echo(f"revoked {n} live session(s) of {name!r}")

    @user_group.command("deactivate")
    @click.argument("name")
    @store_option
    @config_option
    @set_option
    def deactivate(name: str, store_url: str | None, config_path: str | None, overrides: tuple[str, ...]) -> None:
        """Stop an account (sessions end at once) and hand its open assignments to others, blind as before."""
        from curation.review.accounts import deactivate as run
        result = _account_call(config_path, overrides, store_url, lambda conn, cfg: run(conn, name, cfg.review))
        moved = sum(len(v) for v in result.unassigned.values())
        click.echo(f"deactivated {name!r}: {result.sessions_revoked} session(s) revoked, {moved} open assignment(s) "
                   f"handed over, {sum(len(v) for v in result.reassigned.values())} new assignment(s)")
        for phase, ids in result.short.items():
            click.echo(f"warning: {len(ids)} item(s) in {phase} are short of eligible people (nobody else can "
                       f"take them): {', '.join(ids[:10])}; add accounts, then `medcot run` assigns them", err=True)

    @user_group.command("activate")
    @click.argument("name")
    @store_option
    @config_option
    def activate(name: str, store_url: str | None, config_path: str | None) -> None:
        """Let a deactivated account log in again (it gets new work at the next assignment)."""
        from curation.review.accounts import activate as run
        _account_call(config_path, (), store_url, lambda conn, cfg: run(conn, name))
        click.echo(f"activated {name!r}")

    @user_group.command("reset-password")
    @click.argument("name")
    @click.option("--password-env", default=None, metavar="VAR",
                  help="Read the new password from this environment variable instead of a prompt.")
    @store_option
    @config_option
    def reset_password(name: str, password_env: str | None, store_url: str | None, config_path: str | None) -> None:
        """Set a new password (at least 10 characters); every live session of the account ends."""
        from curation.review.accounts import reset_password as run
        password = _password(password_env)
        n = _account_call(config_path, (), store_url, lambda conn, cfg: run(conn, name, password))
        click.echo(f"password of {name!r} reset; {n} live session(s) revoked")

    @user_group.command("set-profile")
    @click.argument("name")
    @click.option("--languages", default=None, metavar="zh,en", help="Item languages they review ('' = any).")
    @click.option("--specialties", default=None, metavar="KEY,...",
                  help="Taxonomy keys they cover, e.g. internal_medicine,surgery ('' = any).")
    @click.option("--ui-language", default=None, metavar="en|zh",
                  help="Interface language of their pages ('' = from their languages, then the browser).")
    @store_option
    @config_option
    @set_option
    def set_profile(name: str, languages: str | None, specialties: str | None, ui_language: str | None,
                    store_url: str | None, config_path: str | None, overrides: tuple[str, ...]) -> None:
        """What a reviewer reviews: routing sends them items in their languages (and specialties, when
        review.routing.specialties is on). Unchanged fields stay as they are."""
        from curation.review.accounts import set_profile as run
        from curation.specialty import load_taxonomy
        if languages is None and specialties is None and ui_language is None:
            fail("give --languages, --specialties and/or --ui-language")

        def split(value: str | None) -> list[str] | None:
            return None if value is None else [v.strip() for v in value.split(",") if v.strip()]

        def call(conn: Any, cfg: Any) -> dict[str, Any]:
            keys = load_taxonomy(cfg.specialty.taxonomy).keys
            return run(conn, name, split(languages), split(specialties), keys, ui_language)
        profile = _account_call(config_path, overrides, store_url, call)
        click.echo(f"{name}: languages {','.join(profile['languages']) or 'any'}; "
                   f"specialties {','.join(profile['specialties']) or 'any'}; "
                   f"interface {profile['ui_language'] or 'auto'}")

    @review.command()
    @store_option
    @config_option
    @click.option("--raters", type=click.Choice(["human", "all"]), default="human",
                  help="human: experts only (default); all: include automated reviewers.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @set_option
    def stats(store_url: str | None, config_path: str | None, raters: str, as_json: bool,
              overrides: tuple[str, ...]) -> None:
        """Agreement (Cohen per pair, Fleiss, Krippendorff's ordinal alpha), progress, staffing (shortfall), expert
        time (throughput, backlog, ETA), validation counts."""
        from curation.review.accounts import staffing
        from curation.review.stats import collect, render_text
        from curation.review.timing import expert_time
        cfg = get_config(config_path, overrides, store_url)
        with _store(cfg).engine.connect() as conn:
            s = collect(conn, raters)
            s["staffing"] = staffing(conn, cfg.review)
            s["expert_time"] = expert_time(conn, cfg.review)
        click.echo(json.dumps(s, ensure_ascii=False, default=str) if as_json else render_text(s))

    @review.command("export-audit")
    @store_option
    @config_option
    @click.option("--out", "out", default="-", help="JSONL file ('-' = stdout).")
    @click.option("--item", default=None, help="Only this item's events.")
    def export_audit(store_url: str | None, config_path: str | None, out: str, item: str | None) -> None:
        """Every audit event (views, assignments, submissions, edits, regenerations, decisions) as JSON lines."""
        from curation.review.labelstudio import audit_lines
        cfg = get_config(config_path, store_url=store_url)
        store = _store(cfg)  # before the output file is opened: a missing store leaves no empty file behind
        stream = sys.stdout if out == "-" else open(out, "w", encoding="utf-8")
        try:
            n = 0
            for line in audit_lines(store, item):
                stream.write(line + "\n")
                n += 1
        finally:
            if stream is not sys.stdout:
                stream.close()
        if out != "-":
            click.echo(f"wrote {n} events to {out}")

    @review.command("export-labelstudio")
    @store_option
    @config_option
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option("--form", type=click.Choice(["review", "panel"]), default="review",
                  help="review: items in initial review, binary form; panel: escalated items, rubric form.")
    def export_labelstudio(store_url: str | None, config_path: str | None, out_dir: Path, form: str) -> None:
        """Write Label Studio tasks JSON and the labeling config XML for the binary or rubric form."""
        from curation.review.labelstudio import export_tasks
        cfg = get_config(config_path, store_url=store_url)
        tasks, config = export_tasks(_store(cfg), out_dir, form)
        click.echo(f"wrote {tasks} tasks to {out_dir / f'tasks_{form}.json'} and {config}")

    @review.command("import-labelstudio")
    @click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
    @store_option
    @config_option
    @set_option
    @click.option("--annotator", "annotators", multiple=True, metavar="LS_ID_OR_EMAIL=USER",
                  help="Map a Label Studio annotator (id or email) to a user name here (repeatable).")
    def import_labelstudio(file: Path, store_url: str | None, config_path: str | None, overrides: tuple[str, ...],
                           annotators: tuple[str, ...]) -> None:
        """Import a Label Studio JSON or JSON_MIN export as reviews/rubric scores by the named annotators."""
        from curation.review.labelstudio import import_export
        from curation.review.records import ReviewError
        cfg = get_config(config_path, overrides, store_url)
        mapping = {}
        for a in annotators:
            if "=" not in a:
                fail(f"--annotator expects LS_ID_OR_EMAIL=USER, got {a!r}")
            k, v = a.split("=", 1)
            mapping[k.strip()] = v.strip()
        try:
            report = import_export(_store(cfg), file, cfg.review, mapping)
        except ReviewError as exc:
            fail(str(exc))
        click.echo(json.dumps(report, ensure_ascii=False))
        if report["rejected"]:
            sys.exit(1)
