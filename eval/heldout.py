"""The held-out eval split of the shared seed data: items production curation never imports.

    python -m eval.heldout            # (re)writes data/eval/ from data/seeds/seed_{zh,en}.jsonl
    python -m eval.heldout --check    # exit 2 if data/eval/ differs from what the rule gives

Rule (HELDOUT_RULE): a seed is held out iff the first 16 hex digits of sha256("medcot-heldout@1:" + id), read
as a fraction of 16**16, are below FRACTION (0.2). It depends on the id alone, so adding seeds never moves an
existing one. Every held-out id is listed in `heldout_ids.txt`, which `configs/deepseek-r1.yaml` names under
`seeds.exclude`; the eval files hold the held-out items (verbatim lines of the source files) that the
contamination check finds no overlap for among the curated seeds (the others are dropped from both sides).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from eval.contamination import Reference, find_overlaps
from eval.records import EvalItem
from medcot.seeds import load_seeds

HELDOUT_RULE = "heldout@1"
SALT = "medcot-heldout@1"
FRACTION = 0.2
REPO = Path(__file__).resolve().parents[1]
SOURCES = {"zh": REPO / "data" / "seeds" / "seed_zh.jsonl", "en": REPO / "data" / "seeds" / "seed_en.jsonl"}
OUT_DIR = REPO / "data" / "eval"
IDS_FILE = "heldout_ids.txt"


def is_heldout(seed_id: str) -> bool:
    digest = hashlib.sha256(f"{SALT}:{seed_id}".encode()).hexdigest()
    return int(digest[:16], 16) / 16 ** 16 < FRACTION


def carve(sources: dict[str, Path]) -> tuple[dict[str, list[str]], list[str], dict[str, dict[str, int]]]:
    """(language -> eval file lines, every held-out id, counts per language) for the given seed files."""
    held: dict[str, list[tuple[EvalItem, str]]] = {}
    curated: list[Reference] = []
    for lang, path in sources.items():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        seeds = load_seeds(path, None)
        assert len(seeds) == len(lines), f"{path}: one seed per non-empty line expected"
        held[lang] = []
        for seed, line in zip(seeds, lines):
            if is_heldout(seed.id):
                item = EvalItem(set=f"heldout-{lang}", id=seed.id, language=seed.language, question=seed.question,
                                options=dict(seed.options), answer=seed.answer, family_id=seed.id)
                held[lang].append((item, line))
            else:
                curated.append(Reference(seed.id, seed.question, seed.options, seed.language, f"seeds {path.name}",
                                         seed.id))
    files, ids, counts = {}, [], {}
    for lang, pairs in held.items():
        dirty = {o.eval_id for o in find_overlaps([it for it, _ in pairs], curated)}
        files[lang] = [line for it, line in pairs if it.id not in dirty]
        ids += [it.id for it, _ in pairs]
        counts[lang] = {"source": sum(1 for _ in load_seeds(sources[lang], None)), "held_out": len(pairs),
                        "dropped_overlapping": len(dirty), "eval_items": len(files[lang])}
    return files, ids, counts


def expected_files(sources: dict[str, Path] = SOURCES) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """File name -> content of data/eval/ under the rule, and the counts."""
    files, ids, counts = carve(sources)
    out = {f"heldout_{lang}.jsonl": "\n".join(lines) + "\n" for lang, lines in files.items()}
    out[IDS_FILE] = (f"# {HELDOUT_RULE}: ids of the shared seeds held out for evaluation (see data/eval/PROVENANCE.md);\n"
                     "# production curation never imports them (configs/deepseek-r1.yaml seeds.exclude)\n"
                     + "\n".join(sorted(ids)) + "\n")
    return out, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare data/eval/ with the rule, write nothing")
    args = parser.parse_args(argv)
    files, counts = expected_files()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (OUT_DIR / name).is_file() or (OUT_DIR / name).read_text(encoding="utf-8") != text]
        print(f"stale: {stale}" if stale else "data/eval is up to date", counts)
        return 2 if stale else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT_DIR / name).write_text(text, encoding="utf-8")
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
