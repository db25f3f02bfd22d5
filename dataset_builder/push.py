"""`medcot push DIR --repo-id ORG/NAME`: publish a built release to the Hugging Face Hub with
huggingface_hub (create_repo, then one upload_folder commit). The token comes from the environment
(HF_TOKEN); `--dry-run` lists the operations and touches neither the network nor the token.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dataset_builder.build import MARKER

TOKEN_ENV = "HF_TOKEN"


class PushError(RuntimeError):
    pass


@dataclass
class PushPlan:
    repo_id: str
    private: bool
    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)  # (path in repo, bytes)

    def operations(self) -> list[str]:
        total = sum(n for _, n in self.files)
        ops = [f"create_repo(repo_id={self.repo_id!r}, repo_type='dataset', private={self.private}, exist_ok=True)",
               f"upload_folder(repo_id={self.repo_id!r}, repo_type='dataset', folder_path={str(self.folder)!r}): "
               f"{len(self.files)} files, {total} bytes"]
        ops += [f"  upload {path} ({n} bytes)" for path, n in self.files]
        return ops


def plan_push(folder: str | Path, repo_id: str, private: bool = False) -> PushPlan:
    root = Path(folder)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushError(f"--repo-id must look like ORG/NAME, not {repo_id!r}")
    if not (root / "README.md").is_file() or not (root / MARKER).is_file() or not (root / "data").is_dir():
        raise PushError(f"{root} is not a medcot release (README.md, {MARKER} and data/ expected): run `medcot build`")
    files = [(str(p.relative_to(root)), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()]
    return PushPlan(repo_id=repo_id, private=private, folder=root.resolve(), files=files)


def push(plan: PushPlan, commit_message: str = "medcot release") -> str:
    """Run the plan; returns the commit URL."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise PushError(f"no Hugging Face token: set {TOKEN_ENV} (use --dry-run to see the operations without one)")
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    api.create_repo(repo_id=plan.repo_id, repo_type="dataset", private=plan.private, exist_ok=True)
    info = api.upload_folder(repo_id=plan.repo_id, repo_type="dataset", folder_path=str(plan.folder),
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
