"""Training data: load one arm of a release, format it, drop what cannot be trained, subsample by WHOLE
families to an exact size.

Usable rows: a row without a chain of thought (``no_cot``) has nothing to teach; a row whose prompt alone
fills ``max_length`` tokens (``prompt_fills_max_length``) has no room left for its completion, and TRL would
drop it silently, so the arms would no longer be equal. Both are excluded here and counted by reason.
Completions cut by ``max_length`` are counted too.

Equal N across arms: each arm's family sizes define which totals it can reach with whole families (a
subset-sum bitset). N is the largest total every arm can reach (capped by ``max_examples``): usually the
smaller arm's size, so only the larger arm is subsampled. Which families are kept is decided by a seeded
shuffle, so the subsample is reproducible from the recorded seed.
"""
from __future__ import annotations

import functools
import random
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcot.config import ConfigError
from training.format import SFTExample, data_hash, format_row

REASON_PROMPT_TOO_LONG = "prompt_fills_max_length"
REASON_NO_COT = "no_cot"


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


def format_pool(arm: str, ds: Any, prompt_name: str, tokenizer: Any = None, max_length: int | None = None) -> ArmPool:
    """All rows formatted; with a tokenizer, rows whose prompt fills max_length are set apart (see above)."""
    rows = list(ds)
    pool = ArmPool(arm, [format_row(r, prompt_name) for r in rows],
                   [None if (r.get("cot") or "").strip() else REASON_NO_COT for r in rows], max_length=max_length)
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
