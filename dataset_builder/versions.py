"""Versioned, incremental releases: what a release holds (index.json), what changed since the previous one
(changes.json, CHANGELOG.md), and families that keep their split from one version to the next.

The index lists, per config, every row id with its split, family and a content hash of the released text
(question, options, key, CoT). A new build compares its index with the previous release's (the folder it
replaces, or `--previous DIR`): rows added, removed and changed, by id, each with a reason. A family that was
in the previous release keeps its split even if the split rule's seed or fractions changed since.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataset_builder.features import CONFIGS, SPLITS, ReleaseRow

INDEX = "index.json"
CHANGES = "changes.json"
CHANGELOG = "CHANGELOG.md"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
SplitRows = dict[str, dict[str, list[ReleaseRow]]]


class VersionError(ValueError):
    pass


def check_version(version: str) -> tuple[int, int, int] | None:
    """Parse X.Y.Z ('' = unversioned); anything else is an error naming the value."""
    if not version:
        return None
    m = SEMVER.match(version)
    if not m:
        raise VersionError(f"build.version must be semantic X.Y.Z (e.g. 1.1.0), not {version!r}")
    return int(m[1]), int(m[2]), int(m[3])


@dataclass(frozen=True)
class Previous:
    """The release a build succeeds: its index (config -> id -> entry), version and changelog."""
    path: Path
    version: str
    index: dict[str, dict[str, dict[str, str]]]
    changelog: str

    def family_splits(self) -> dict[str, str]:
        return {e["family_id"]: e["split"] for rows in self.index.values() for e in rows.values()}


def read_previous(path: Path | None) -> Previous | None:
    """The previous release at `path` (None when there is none or it predates versioning)."""
    if path is None or not (path / INDEX).is_file():
        return None
    try:
        data = json.loads((path / INDEX).read_text(encoding="utf-8"))
        index, version = data["configs"], data.get("version", "")
    except (ValueError, KeyError, TypeError) as exc:
        raise VersionError(f"{path / INDEX}: not a medcot release index ({exc})") from exc
    log = (path / CHANGELOG).read_text(encoding="utf-8") if (path / CHANGELOG).is_file() else ""
    return Previous(path, version, index, log)


def keep_splits(assignment: dict[str, str], previous: Previous | None) -> dict[str, str]:
    """Families already released keep the split they had; new families take the rule's split."""
    if previous is None:
        return assignment
    kept = previous.family_splits()
    return {fam: kept.get(fam, split) for fam, split in assignment.items()}


def row_hash(row: ReleaseRow) -> str:
    """A change detector for the released text (question, options, key, CoT): blake2b-128 of the exact fields."""
    options = "\x1e".join(f"{k}\x1d{v}" for k, v in sorted(row.options.items()) if v is not None)
    text = "\x1f".join((row.question, options, row.answer, row.cot))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def release_index(split_rows: SplitRows, version: str) -> dict[str, Any]:
    configs = {c: {r.id: {"split": s, "family_id": r.family_id, "content": row_hash(r),
                          "revision_status": r.revision_status}
                   for s in SPLITS for r in split_rows[c][s]} for c in CONFIGS}
    return {"version": version, "configs": configs}


def same_release(index: dict[str, Any], previous: Previous | None) -> bool:
    """A rebuild of the previous release: same version, same rows and texts (its change files are kept)."""
    return previous is not None and previous.version == index["version"] and previous.index == index["configs"]


def changes(index: dict[str, Any], previous: Previous | None,
            removal_reason: Callable[[str], str]) -> dict[str, Any]:
    """Per config: added, removed and changed rows by id, each with its reason. A rebuild of the same version
    with the same content keeps the previous comparison; the same version with other content is refused."""
    if same_release(index, previous):
        return json.loads((previous.path / CHANGES).read_text(encoding="utf-8"))  # type: ignore[union-attr]
    if previous is not None and index["version"] and previous.version == index["version"]:
        raise VersionError(f"release {index['version']} already exists in {previous.path} with other content: "
                           "give the new one a higher --version")
    out: dict[str, Any] = {"version": index["version"], "previous_version": previous.version if previous else None,
                           "configs": {}}
    old_families = set(previous.family_splits()) if previous else set()
    for config, rows in index["configs"].items():
        before = previous.index.get(config, {}) if previous else {}
        added = [{"id": i, "reason": "new seed family" if rows[i]["family_id"] not in old_families
                  else f"new in `{config}`"} for i in sorted(set(rows) - set(before))]
        removed = [{"id": i, "reason": removal_reason(i)} for i in sorted(set(before) - set(rows))]
        changed = [{"id": i, "reason": _change_reason(rows[i]["revision_status"])}
                   for i in sorted(set(rows) & set(before)) if rows[i]["content"] != before[i]["content"]]
        out["configs"][config] = {"added": added, "removed": removed, "changed": changed}
    return out


def _change_reason(status: str) -> str:
    return {"modified": "expert edit", "regenerated": "regenerated (panel-guided)"}.get(status, "text changed")


def changelog(diff: dict[str, Any], previous: Previous | None) -> str:
    version = diff["version"] or "unversioned"
    head = f"## {version}" + (f" (since {diff['previous_version']})" if diff["previous_version"] else "")
    lines = [head, ""]
    for config, d in diff["configs"].items():
        lines.append(f"- `{config}`: {len(d['added'])} added, {len(d['removed'])} removed, "
                     f"{len(d['changed'])} changed" + (f" ({_reasons(d)})" if any(d.values()) else ""))
    body = "\n".join(lines) + "\n"
    keep = previous is not None and previous.version and previous.changelog.startswith("# Changelog")
    older = previous.changelog.split("\n", 4)[4] if keep else ""  # type: ignore[union-attr]
    return "# Changelog\n\nEvery id with its reason: `changes.json`.\n\n" + body + ("\n" + older.lstrip("\n")
                                                                                  if older else "")


def _reasons(d: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for kind in ("added", "removed", "changed"):
        for e in d[kind]:
            counts[f"{kind}: {e['reason']}"] = counts.get(f"{kind}: {e['reason']}", 0) + 1
    return "; ".join(f"{k} {n}" for k, n in counts.items())


def write_version_files(root: Path, index: dict[str, Any], diff: dict[str, Any], previous: Previous | None
                        ) -> list[str]:
    if same_release(index, previous):  # a rebuild: the same bytes as before
        for name in (INDEX, CHANGES, CHANGELOG):
            (root / name).write_bytes((previous.path / name).read_bytes())  # type: ignore[union-attr]
        return [INDEX, CHANGES, CHANGELOG]
    (root / INDEX).write_text(json.dumps(index, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n",
                              encoding="utf-8")
    (root / CHANGES).write_text(json.dumps(diff, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (root / CHANGELOG).write_text(changelog(diff, previous), encoding="utf-8")
    return [INDEX, CHANGES, CHANGELOG]


def removed_reasons(latest_decision: Callable[[str], str | None]) -> Callable[[str], str]:
    """item id -> why it left a config, from the item's latest decision kind in the store."""
    def reason(item_id: str) -> str:
        kind = latest_decision(item_id)
        return {"removed": "removed by consensus", "adjudication": "awaiting adjudication"}.get(
            kind or "", "no longer in this config")
    return reason
