"""`medcot push DIR --repo-id ORG/NAME`: publish a built release to the Hugging Face Hub with huggingface_hub
(create_repo, one upload_folder commit that also deletes the data files the new release no longer has, then a
`v{version}` tag for a versioned release, so that `load_dataset(repo, revision="v1.1.0")` works).

The token comes from huggingface_hub's own resolution (HF_TOKEN, or `hf auth login`). Every push records
what it uploaded in the release folder (PUSH_RECORD, never uploaded; `medcot build` carries it over into the
next release of the same folder), so `--dry-run` lists the deletions a re-push makes, with no network and no
token. `--private` on an existing public repository is refused unless `--make-private` changes it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataset_builder.build import MARKER, PUSH_RECORD
from dataset_builder.versions import INDEX

MANAGED = ("data", "figures", "lm_eval")  # folders whose stale files a re-push deletes
CARD_PLACEHOLDER = "PATH/TO/RELEASE"  # what the card's snippets name when the build had no build.repo_id
_CARD_REPO = re.compile(r"^  howpublished = \{(.*)\},?$", re.M)  # the release citation names the repo
REPO_ID_PART = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class PushError(RuntimeError):
    pass


@dataclass
class PushPlan:
    repo_id: str
    private: bool
    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)  # (path in repo, bytes)
    deletions: list[str] = field(default_factory=list)  # files of the last push to this repo the release dropped
    version: str = ""
    make_private: bool = False
    card_rewrite: bool = False  # the card's snippets name CARD_PLACEHOLDER: push writes the repo id in

    @property
    def tag(self) -> str | None:
        return f"v{self.version}" if self.version else None

    def operations(self) -> list[str]:
        total = sum(n for _, n in self.files)
        ops = [f"README.md: the card's snippets name {CARD_PLACEHOLDER!r}; written as {self.repo_id!r} before "
               "the upload"] if self.card_rewrite else []
        ops += [f"create_repo(repo_id={self.repo_id!r}, repo_type='dataset', private={self.private}, exist_ok=True)"]
        if self.make_private:
            ops.append(f"update_repo_settings(repo_id={self.repo_id!r}, private=True) if it is public")
        ops.append(f"upload_folder(repo_id={self.repo_id!r}, repo_type='dataset', folder_path={str(self.folder)!r}, "
                   f"delete_patterns={[f'{d}/**' for d in MANAGED]}): {len(self.files)} files, {total} bytes, "
                   f"{len(self.deletions)} deletions")
        ops += [f"  upload {path} ({n} bytes)" for path, n in self.files]
        ops += [f"  delete {path} (in the last push, not in this release)" for path in self.deletions]
        if self.tag:
            ops.append(f"create_tag(repo_id={self.repo_id!r}, tag={self.tag!r}, repo_type='dataset')")
        return ops


def check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(set(p) - REPO_ID_PART for p in parts) or \
            any(p.startswith(("-", ".")) or p.endswith(".") or ".." in p or "--" in p for p in parts) or \
            len(parts[1]) > 96:
        raise PushError(f"--repo-id must look like ORG/NAME (letters, digits, '-', '_', '.'), not {repo_id!r}")


def read_record(folder: Path) -> dict[str, Any]:
    path = folder / PUSH_RECORD
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PushError(f"{path}: unreadable push record ({exc}); delete it to push as if for the first time") from exc
    return data if isinstance(data, dict) else {}


def plan_push(folder: str | Path, repo_id: str, private: bool = False, make_private: bool = False) -> PushPlan:
    root = Path(folder)
    check_repo_id(repo_id)
    if not (root / "README.md").is_file() or not (root / MARKER).is_file() or not (root / "data").is_dir():
        raise PushError(f"{root} is not a medcot release (README.md, {MARKER} and data/ expected): run `medcot build`")
    files = [(str(p.relative_to(root)), p.stat().st_size) for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != PUSH_RECORD]
    names = {f for f, _ in files}
    last = read_record(root).get(repo_id, {}).get("files", [])
    deletions = sorted(f for f in last if f not in names and f.split("/", 1)[0] in MANAGED)
    version = ""
    if (root / INDEX).is_file():
        version = json.loads((root / INDEX).read_text(encoding="utf-8")).get("version", "")
    return PushPlan(repo_id=repo_id, private=private or make_private, folder=root.resolve(), files=files,
                    deletions=deletions, version=version, make_private=make_private,
                    card_rewrite=_card_needs_repo(root / "README.md", repo_id))


def _card_needs_repo(card: Path, repo_id: str) -> bool:
    """True when the card names the placeholder; an error when it names another repository."""
    found = _CARD_REPO.search(card.read_text(encoding="utf-8"))
    named = found.group(1) if found else None
    if named in (None, repo_id):
        return False
    if named == CARD_PLACEHOLDER:
        return True
    raise PushError(f"{card}: the card's snippets name the repository {named!r}, not {repo_id!r}: rebuild with "
                    f"`build.repo_id={repo_id}` or push to {named}")


def write_repo_into_card(plan: PushPlan) -> None:
    card = plan.folder / "README.md"
    card.write_text(card.read_text(encoding="utf-8").replace(CARD_PLACEHOLDER, plan.repo_id), encoding="utf-8")


def push(plan: PushPlan, commit_message: str = "medcot release") -> str:
    """Run the plan; returns the commit URL."""
    from huggingface_hub import HfApi, get_token
    token = get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (use --dry-run to see the "
                        "operations without one)")
    api = HfApi(token=token)
    if plan.card_rewrite:
        write_repo_into_card(plan)
    api.create_repo(repo_id=plan.repo_id, repo_type="dataset", private=plan.private, exist_ok=True)
    _check_visibility(api, plan)
    info = api.upload_folder(repo_id=plan.repo_id, repo_type="dataset", folder_path=str(plan.folder),
                             commit_message=commit_message + (f" {plan.version}" if plan.version else ""),
                             ignore_patterns=[PUSH_RECORD], delete_patterns=[f"{d}/**" for d in MANAGED])
    if plan.tag:
        api.create_tag(plan.repo_id, tag=plan.tag, repo_type="dataset", revision=getattr(info, "oid", None))
    record_push(plan, str(getattr(info, "oid", "")))
    return str(getattr(info, "commit_url", info))


def record_push(plan: PushPlan, commit: str) -> None:
    """Remember what this push uploaded to its repo (the next plan's deletions come from it)."""
    record = read_record(plan.folder)
    record[plan.repo_id] = {"files": [f for f, _ in plan.files], "version": plan.version, "commit": commit}
    (plan.folder / PUSH_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _check_visibility(api: Any, plan: PushPlan) -> None:
    """--private never goes out public in silence: an existing public repo is refused, or made private."""
    if not plan.private:
        return
    if api.repo_info(plan.repo_id, repo_type="dataset").private:
        return
    if not plan.make_private:
        raise PushError(f"{plan.repo_id} exists and is PUBLIC: --private would upload to a public repository. "
                        "Pass --make-private to make it private first, or push without --private")
    api.update_repo_settings(plan.repo_id, private=True, repo_type="dataset")
