"""Training data: load the arms of a release, format them, drop what cannot be trained, select equal N.

Usable rows: a row without a chain of thought (``no_cot``) has nothing to teach; a row whose prompt alone
fills ``max_length`` tokens (``prompt_fills_max_length``) has no room left for its completion, and TRL would
drop it silently, so the arms would no longer be equal. Both are excluded here and counted by reason.
Completions cut by ``max_length`` are counted too.

The two designs of the matrix (``data.design``), both at equal N with a seeded, recorded subsample:

* ``matched`` (default): the SAME item ids in both arms. The validated arm trains on the release's
  ``validated`` rows, the unvalidated arm on the ``unvalidated`` rows of those ids (the raw first-pass
  question, options, key and CoT with its own final answer). Only the text differs, so the comparison
  isolates what review changed. Capped by ``max_examples``, whole families of the shared ids are kept.
* ``pipeline``: validated rows vs raw pipeline output, including items the experts later removed. The
  validated arm is all its usable rows (or whole families up to the cap); the unvalidated arm draws, per
  validated family, as many raw rows of that family as the validated arm has (the same families wherever
  possible), and fills any shortfall from other raw rows of the chosen families, then of other families.

Per arm the selection records N, families covered, how many ids and identical examples (same prompt and
completion text) the arms share, and how often the completion's own final answer agrees with the key.
A single run outside the matrix (``equal_selections`` on one pool) keeps all usable rows, or whole
families up to the cap: the subset-sum bitset finds the largest total whole families reach exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import random
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcot.config import ConfigError
from training.format import SFTExample, data_hash, example_hash, format_row

REASON_PROMPT_TOO_LONG = "prompt_fills_max_length"
REASON_NO_COT = "no_cot"
REASON_NO_REASONING = "no_reasoning"  # target reasoning_and_cot: the row has no generator thinking
REASON_NO_RAW_ROW = "no_usable_raw_row"  # matched: a validated item without a usable unvalidated row
REASON_NOT_VALIDATED = "not_in_validated_arm"  # matched: a raw row of an item the validated arm does not have
DESIGNS = ("matched", "pipeline")
ARM_CONFIGS = ("validated", "unvalidated")  # the release configs the two arms come from


@dataclass(frozen=True, slots=True)
class Selection:
    """Which rows of an arm's split are trained on, and why (all kept, or a family subsample)."""

    arm: str
    rows: int                      # rows in the split
    available: int                 # usable rows (see the module doc)
    excluded: dict[str, int]       # reason -> rows not usable
    indices: tuple[int, ...]       # selected rows (positions in the split)
    families: int
    subsample_seed: int
    subsampled: bool
    completions_truncated: int = 0  # selected rows whose completion max_length cuts
    design: str = "single"  # matched | pipeline | single (one arm on its own)
    shared_ids: int | None = None  # selected ids the other arm trains on too
    identical_examples: int | None = None  # examples whose prompt + completion text the other arm has too
    own_answer: dict[str, Any] | None = None  # completion's own final answer vs the key: agree/disagree/none/rate
    families_matched: int | None = None  # pipeline: validated families whose row count the raw arm matches
    filled_from_other_families: int | None = None  # pipeline: raw rows drawn beyond the per-family counts

    @property
    def n(self) -> int:
        return len(self.indices)


@dataclass
class ArmPool:
    """Every formatted row of one arm's split, with why a row cannot be trained (None = usable)."""

    arm: str
    examples: list[SFTExample]
    reasons: list[str | None]
    total_tokens: list[int] | None = None
    max_length: int | None = None

    def usable_families(self) -> list[str | None]:
        return [ex.family_id if r is None else None for ex, r in zip(self.examples, self.reasons)]

    def excluded(self) -> dict[str, int]:
        return dict(sorted(Counter(r for r in self.reasons if r is not None).items()))


@dataclass
class ArmData:
    """The formatted examples of one arm, ready for the trainer, with the selection that produced them."""

    selection: Selection
    examples: list[SFTExample] = field(default_factory=list)

    @functools.cached_property
    def hash(self) -> str:
        return data_hash(self.examples)

    def rows(self) -> list[dict[str, Any]]:
        return [{"prompt": ex.prompt, "completion": ex.completion} for ex in self.examples]


class NoTrainingData(ConfigError):
    """The release has nothing to train an arm on (no such split, or no usable rows): a run skips training
    with this reason instead of failing."""


def declared_splits(folder: Path, arm: str) -> list[str] | None:
    """The splits the release card declares for a config (None when the card has no `configs:` list)."""
    import yaml
    text = (folder / "README.md").read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    configs = (yaml.safe_load(text.split("---", 2)[1]) or {}).get("configs")
    if not isinstance(configs, list):
        return None
    return next(([f["split"] for f in c.get("data_files", [])] for c in configs if c.get("config_name") == arm), [])


def load_split(release_dir: str | Path, arm: str, split: str) -> Any:
    """``datasets.load_dataset(release_dir, arm, split=split)`` with clear errors."""
    import datasets
    folder = Path(release_dir)
    if not str(release_dir) or not (folder / "README.md").is_file():
        raise ConfigError(f"data.release_dir {str(release_dir)!r} is not a release folder (no README.md)")
    splits = declared_splits(folder, arm)
    if splits is not None and split not in splits:
        raise NoTrainingData(f"{folder}: config {arm!r} has no {split!r} rows (its splits: {splits or 'none'})")
    try:  # a throw-away cache: the shared one keys a local folder by name, so a rebuilt release would be stale
        with tempfile.TemporaryDirectory(prefix="medcot-train-ds-") as cache:
            return datasets.load_dataset(str(folder), arm, split=split, cache_dir=cache, keep_in_memory=True)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ConfigError(f"{folder}: cannot load config {arm!r} split {split!r}: {exc}") from exc


def _unusable(row: dict[str, Any], target: str) -> str | None:
    if not (row.get("cot") or "").strip():
        return REASON_NO_COT
    if target == "reasoning_and_cot" and not (row.get("reasoning") or "").strip():
        return REASON_NO_REASONING
    return None


def format_pool(arm: str, ds: Any, prompt_name: str, tokenizer: Any = None, max_length: int | None = None,
                target: str = "cot") -> ArmPool:
    """All rows formatted; with a tokenizer, rows whose prompt fills max_length are set apart (see above)."""
    rows = list(ds)
    keep_own_answer = arm == "unvalidated"  # the raw arm keeps its CoT verbatim (training.format)
    pool = ArmPool(arm, [format_row(r, prompt_name, keep_own_answer, target) for r in rows],
                   [_unusable(r, target) for r in rows], max_length=max_length)
    if tokenizer is not None and max_length is not None:
        prompt = [_n_tokens(tokenizer, ex.prompt, True) for ex in pool.examples]
        pool.total_tokens = [_n_tokens(tokenizer, ex.prompt + ex.completion, False) for ex in pool.examples]
        pool.reasons = [r or (REASON_PROMPT_TOO_LONG if p >= max_length else None)
                        for r, p in zip(pool.reasons, prompt)]
    return pool


def _n_tokens(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> int:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    return len(out["input_ids"] if hasattr(out, "keys") else out)


def family_sizes(family_ids: Sequence[str | None]) -> dict[str, int]:
    counts = Counter(f for f in family_ids if f is not None)
    return {f: counts[f] for f in sorted(counts)}


def reachable(sizes: Sequence[int], cap: int) -> int:
    """Bitset: bit t is set when some set of whole families totals exactly t (t <= cap)."""
    mask = (1 << (cap + 1)) - 1
    bits = 1
    for s in sizes:
        bits |= (bits << s) & mask
    return bits


def pick_families(sizes: Mapping[str, int], n: int, seed: int) -> list[str]:
    """Whole families totalling exactly ``n``, chosen by a shuffle seeded with ``seed``."""
    fams = sorted(sizes)
    random.Random(seed).shuffle(fams)
    mask = (1 << (n + 1)) - 1
    table = [1]
    for f in fams:
        table.append(table[-1] | ((table[-1] << sizes[f]) & mask))
    if not (table[-1] >> n) & 1:
        raise ValueError(f"no set of whole families totals exactly {n}")
    chosen, rest = [], n
    for i in range(len(fams), 0, -1):
        s = sizes[fams[i - 1]]
        if rest >= s and (table[i - 1] >> (rest - s)) & 1:
            chosen.append(fams[i - 1])
            rest -= s
    return chosen


def common_size(arm_sizes: Mapping[str, Mapping[str, int]], cap: int | None) -> int:
    """The largest N <= cap that every arm reaches exactly with whole families."""
    limit = min(sum(s.values()) for s in arm_sizes.values())
    limit = limit if cap is None else min(limit, cap)
    common = (1 << (limit + 1)) - 1
    for sizes in arm_sizes.values():
        common &= reachable(list(sizes.values()), limit)
    return common.bit_length() - 1


def select(pool: ArmPool, n: int, seed: int) -> Selection:
    """Exactly ``n`` usable rows of the pool, whole families (all of them when n is everything usable)."""
    fams = pool.usable_families()
    sizes = family_sizes(fams)
    available = sum(sizes.values())
    keep = set(sizes) if n == available else set(pick_families(sizes, n, seed))
    indices = tuple(i for i, f in enumerate(fams) if f in keep)
    cut = sum(1 for i in indices if pool.total_tokens and pool.max_length and pool.total_tokens[i] > pool.max_length)
    return Selection(arm=pool.arm, rows=len(fams), available=available, excluded=pool.excluded(), indices=indices,
                     families=len(keep), subsample_seed=seed, subsampled=n != available, completions_truncated=cut)


def equal_selections(pools: Mapping[str, ArmPool], cap: int | None, seed: int) -> dict[str, ArmData]:
    """Every arm cut to the same N (see the module doc)."""
    n = common_size({arm: family_sizes(p.usable_families()) for arm, p in pools.items()}, cap)
    if n < 1:
        usable = {a: sum(family_sizes(p.usable_families()).values()) for a, p in pools.items()}
        raise NoTrainingData(f"no training examples: usable rows per arm {usable} (cap {cap})")
    return {arm: take(pool, select(pool, n, seed)) for arm, pool in pools.items()}


def take(pool: ArmPool, selection: Selection) -> ArmData:
    return ArmData(selection=selection, examples=[pool.examples[i] for i in selection.indices])


# ---------------------------------------------------------------- the two designs of the matrix

def _usable_index(pool: ArmPool) -> dict[str, int]:
    """id -> position of every usable row; an id twice in one arm is an error."""
    twice = [i for i, k in Counter(ex.id for ex in pool.examples).items() if k > 1]
    if twice:
        raise ConfigError(f"arm {pool.arm!r}: item id(s) {sorted(twice)[:3]} appear more than once in the split")
    return {ex.id: i for i, (ex, reason) in enumerate(zip(pool.examples, pool.reasons)) if reason is None}


def _truncated(pool: ArmPool, indices: Sequence[int]) -> int:
    if not pool.total_tokens or not pool.max_length:
        return 0
    return sum(1 for i in indices if pool.total_tokens[i] > pool.max_length)


def _whole_families(sizes: Mapping[str, int], cap: int | None, seed: int) -> tuple[set[str], bool]:
    """All families, or (when the cap is below the total) whole families totalling the largest reachable
    N <= cap, chosen by a shuffle seeded with ``seed``; and whether it subsampled."""
    total = sum(sizes.values())
    if cap is None or cap >= total:
        return set(sizes), False
    n = reachable(list(sizes.values()), cap).bit_length() - 1
    if n < 1:
        raise NoTrainingData(f"no set of whole families fits data.max_examples={cap} (family sizes "
                             f"{sorted(sizes.values())[:10]}...)")
    return set(pick_families(sizes, n, seed)), True


def _selection(pool: ArmPool, indices: Sequence[int], available: int, excluded: Counter[str], seed: int,
               subsampled: bool, design: str, **extra: Any) -> Selection:
    idx = tuple(sorted(indices))
    return Selection(arm=pool.arm, rows=len(pool.examples), available=available,
                     excluded=dict(sorted((k, v) for k, v in excluded.items() if v)), indices=idx,
                     families=len({pool.examples[i].family_id for i in idx}), subsample_seed=seed,
                     subsampled=subsampled, completions_truncated=_truncated(pool, idx), design=design, **extra)


def _pair(pools: Mapping[str, ArmPool], design: str) -> tuple[ArmPool, ArmPool]:
    missing = [a for a in ("validated", "unvalidated") if a not in pools]
    if missing:
        raise ConfigError(f"data.design {design!r} needs both arms' rows; missing {missing}")
    return pools["validated"], pools["unvalidated"]


def matched_selections(pools: Mapping[str, ArmPool], cap: int | None, seed: int) -> dict[str, ArmData]:
    """The same item ids in both arms (see the module doc)."""
    v, u = _pair(pools, "matched")
    v_ids, u_ids = _usable_index(v), _usable_index(u)
    common = [i for i in v_ids if i in u_ids]
    if not common:
        raise NoTrainingData(f"no item is usable in both arms (usable validated {len(v_ids)}, unvalidated "
                             f"{len(u_ids)}, shared 0)")
    sizes = family_sizes([v.examples[v_ids[i]].family_id for i in common])
    keep, subsampled = _whole_families(sizes, cap, seed)
    chosen = [i for i in common if v.examples[v_ids[i]].family_id in keep]
    v_excl = v.excluded() | {REASON_NO_RAW_ROW: len(v_ids) - len(common)}
    u_excl = u.excluded() | {REASON_NOT_VALIDATED: len(u_ids) - len(common)}
    return {"validated": take(v, _selection(v, [v_ids[i] for i in chosen], len(common), Counter(v_excl), seed,
                                            subsampled, "matched")),
            "unvalidated": take(u, _selection(u, [u_ids[i] for i in chosen], len(common), Counter(u_excl), seed,
                                              subsampled, "matched"))}


def pipeline_selections(pools: Mapping[str, ArmPool], cap: int | None, seed: int) -> dict[str, ArmData]:
    """Validated rows vs raw pipeline output at equal N, matched counts per family (see the module doc)."""
    v, u = _pair(pools, "pipeline")
    v_idx, u_idx = list(_usable_index(v).values()), list(_usable_index(u).values())
    target = min(len(v_idx), len(u_idx), cap if cap is not None else len(v_idx))
    if target < 1:
        raise NoTrainingData(f"no training examples: usable validated {len(v_idx)}, unvalidated {len(u_idx)}")
    keep, subsampled = _whole_families(family_sizes([v.examples[i].family_id for i in v_idx]), target, seed)
    v_chosen = [i for i in v_idx if v.examples[i].family_id in keep]
    counts = Counter(v.examples[i].family_id for i in v_chosen)
    rng = random.Random(seed)
    by_family: dict[str, list[int]] = {}
    for i in u_idx:
        by_family.setdefault(u.examples[i].family_id, []).append(i)
    u_chosen: list[int] = []
    matched = 0
    for fam in sorted(counts):
        rows = by_family.get(fam, [])
        u_chosen += rng.sample(rows, min(counts[fam], len(rows)))
        matched += len(rows) >= counts[fam]
    taken = set(u_chosen)
    short = len(v_chosen) - len(u_chosen)
    same = [i for i in u_idx if i not in taken and u.examples[i].family_id in counts]
    other = [i for i in u_idx if i not in taken and u.examples[i].family_id not in counts]
    fill = rng.sample(same, min(short, len(same)))
    fill += rng.sample(other, short - len(fill))
    arms = {"validated": take(v, _selection(v, v_chosen, len(v_idx), Counter(v.excluded()), seed, subsampled,
                                            "pipeline")),
            "unvalidated": take(u, _selection(u, u_chosen + fill, len(u_idx), Counter(u.excluded()), seed,
                                              len(u_chosen) + len(fill) < len(u_idx), "pipeline",
                                              families_matched=matched, filled_from_other_families=len(fill)))}
    return arms


def own_answer(examples: Sequence[SFTExample]) -> dict[str, Any]:
    """How often the completion's own final answer agrees with the key (None = no answer found)."""
    agree = sum(1 for ex in examples if ex.stated is not None and ex.stated == ex.key)
    none = sum(1 for ex in examples if ex.stated is None)
    n = len(examples)
    return {"agree": agree, "disagree": n - agree - none, "none": none, "rate": agree / n if n else None}


def with_overlap(arms: dict[str, ArmData]) -> dict[str, ArmData]:
    """Each arm's selection with what it shares with the other arm (ids, identical examples) and its own
    answers' agreement with the key."""
    out = {}
    for name, arm in arms.items():
        others = [a for n, a in arms.items() if n != name]
        ids = {ex.id for o in others for ex in o.examples}
        mine = Counter(example_hash(ex) for ex in arm.examples)
        theirs: Counter[str] = Counter(example_hash(ex) for o in others for ex in o.examples)
        sel = dataclasses.replace(arm.selection, shared_ids=sum(1 for ex in arm.examples if ex.id in ids),
                                  identical_examples=sum((mine & theirs).values()),
                                  own_answer=own_answer(arm.examples))
        out[name] = ArmData(selection=sel, examples=arm.examples)
    return out


def select_arms(pools: Mapping[str, ArmPool], design: str, cap: int | None, seed: int) -> dict[str, ArmData]:
    """Both arms of the matrix for one data seed, by ``design`` (matched | pipeline), with their overlap."""
    if design == "matched":
        return with_overlap(matched_selections(pools, cap, seed))
    if design == "pipeline":
        return with_overlap(pipeline_selections(pools, cap, seed))
    raise ConfigError(f"data.design must be one of {', '.join(DESIGNS)}, not {design!r}")
