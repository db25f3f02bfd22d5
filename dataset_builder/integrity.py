"""Checks made before anything is written. A violation names the config, the item and the reason; any
violation fails the build (nothing is written). Near-duplicates are measured and reported, not fatal."""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from dataset_builder.features import LETTERS, REVISION_STATUSES, VALIDATION_LABELS, ReleaseRow
from medcot.records import LANGUAGES

REQUIRED_TEXT = ("id", "family_id", "question", "cot", "source")


@dataclass(frozen=True, slots=True)
class Violation:
    config: str
    item_id: str
    check: str
    reason: str

    def __str__(self) -> str:
        return f"[{self.config}] {self.item_id}: {self.check}: {self.reason}"


class ReleaseIntegrityError(RuntimeError):
    """The release would break a rule; nothing was written."""

    def __init__(self, violations: list[Violation], shown: int = 50):
        self.violations = violations
        counts = Counter(v.check for v in violations)
        lines = [f"release integrity check failed: {len(violations)} violation(s) "
                 f"({', '.join(f'{k}: {n}' for k, n in sorted(counts.items()))}); nothing was written"]
        lines += [f"  {v}" for v in violations[:shown]]
        if len(violations) > shown:
            lines.append(f"  ... and {len(violations) - shown} more")
        super().__init__("\n".join(lines))


def check_row_schema(config: str, row: ReleaseRow) -> list[Violation]:
    out = []
    bad = [name for name in REQUIRED_TEXT if not isinstance(getattr(row, name), str) or not getattr(row, name).strip()]
    if bad:
        out.append(Violation(config, row.id, "schema", f"empty or missing {', '.join(bad)}"))
    if row.language not in LANGUAGES:
        out.append(Violation(config, row.id, "schema", f"language {row.language!r} is not one of {LANGUAGES}"))
    if row.extra.get("extra_options"):
        out.append(Violation(config, row.id, "schema", f"option letters outside A-E: {row.extra['extra_options']}"))
    present = [k for k in LETTERS if isinstance(row.options.get(k), str) and row.options[k].strip()]
    if present != list(LETTERS[:len(present)]) or len(present) < 2:
        out.append(Violation(config, row.id, "schema", f"options must be A, B, ... without gaps, got {present}"))
    if row.validation not in VALIDATION_LABELS or row.revision_status not in REVISION_STATUSES:
        out.append(Violation(config, row.id, "schema", f"bad label {row.validation!r}/{row.revision_status!r}"))
    if row.answer not in present:
        out.append(Violation(config, row.id, "answer_in_options", f"answer {row.answer!r} is not one of {present}"))
    return out


def check_consensus(row: ReleaseRow, allow_automated: bool, min_agree: int = 2) -> list[Violation]:
    """Every validated row meets THE invariant, recomputed from the raw votes (rows.RowMaker.check_votes), not
    taken from the decision row: an `expert` row needs fresh blind approvals of the released revision from at
    least two distinct human users; an `automated` row (only if allowed) `min_agree` approvals of any kind."""
    c = row.consensus
    if c["outcome"] != "approved":
        return [Violation("validated", row.id, "consensus", f"current decision is {c['outcome']!r}, not 'approved'")]
    human, automated = row.extra.get("human_approvers", 0), row.extra.get("automated_approvers", 0)
    refused = row.extra.get("refused_votes") or []
    why = f" (not counted: {' | '.join(refused[:4])})" if refused else ""
    if row.validation == "expert":
        if human < 2:
            return [Violation("validated", row.id, "invariant",
                              f"labelled expert-validated (decision claims {c['human_approvals']} human approval(s)) "
                              f"but the raw votes hold {human} human approval(s) of the released text{why}")]
        return []
    if row.validation == "automated" and allow_automated:
        if human + automated < max(2, min_agree):
            return [Violation("validated", row.id, "invariant",
                              f"the raw votes hold {human + automated} approval(s) of the released text, fewer than "
                              f"{max(2, min_agree)}{why}")]
        return []
    return [Violation("validated", row.id, "consensus", f"validation {row.validation!r} may not enter `validated`"
                      + ("" if allow_automated else " (build.allow_automated_reviewers is false)"))]


def check_families(rows: Mapping[str, Mapping[str, list[ReleaseRow]]]) -> list[Violation]:
    """No family in two splits, within a config or across configs; no item twice in a config."""
    where: dict[str, set[str]] = {}
    first_item: dict[str, str] = {}
    out = []
    for config, splits in rows.items():
        seen: set[str] = set()
        for split, split_rows in splits.items():
            for row in split_rows:
                where.setdefault(row.family_id, set()).add(split)
                first_item.setdefault(row.family_id, row.id)
                if row.id in seen:
                    out.append(Violation(config, row.id, "duplicate_id", "item appears twice in the config"))
                seen.add(row.id)
    for fam, splits in sorted(where.items()):
        if len(splits) > 1:
            out.append(Violation("*", first_item[fam], "family_leakage",
                                 f"family {fam!r} is in splits {sorted(splits)}"))
    return out


def check_release(rows: Mapping[str, Mapping[str, list[ReleaseRow]]], allow_automated: bool,
                  min_agree: int = 2) -> list[Violation]:
    out: list[Violation] = []
    for config, splits in rows.items():
        for split_rows in splits.values():
            for row in split_rows:
                out += check_row_schema(config, row)
                if config == "validated":
                    out += check_consensus(row, allow_automated, min_agree)
    return out + check_families(rows)
