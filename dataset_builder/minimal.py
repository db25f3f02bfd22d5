"""Minimal export: one Parquet split of the generated items, loadable with `datasets.load_dataset(DIR)`.
The full release (configs, splits by family, card, figures) is `dataset_builder.build`."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import datasets

from curation.store import Store

FEATURES = datasets.Features({
    "id": datasets.Value("string"), "family_id": datasets.Value("string"), "language": datasets.Value("string"),
    "question": datasets.Value("string"),
    "options": {k: datasets.Value("string") for k in "ABCDE"},
    "answer": datasets.ClassLabel(names=list("ABCDE")), "cot": datasets.Value("string"),
    "model_answer": datasets.Value("string"), "agrees_with_key": datasets.Value("bool"),
    "source": datasets.Value("string"), "licence": datasets.Value("string"),
})


def export_minimal(store: Store, out_dir: Path) -> Path:
    gens = {g.item_id: g for g in store.generations()}
    rows = [{"id": it.id, "family_id": it.family_id, "language": it.language, "question": it.question,
             "options": {k: it.options.get(k) for k in "ABCDE"}, "answer": "ABCDE".index(it.answer),
             "cot": gens[it.id].cot, "model_answer": gens[it.id].answer,
             "agrees_with_key": gens[it.id].agrees_with_key, "source": it.source, "licence": it.licence}
            for it in store.items() if it.id in gens]
    ds = datasets.Dataset.from_list(rows, features=FEATURES) if rows else datasets.Dataset.from_dict(
        {k: [] for k in FEATURES}, features=FEATURES)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    (tmp / "data").mkdir()
    ds.to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
    (tmp / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                   "    path: data/train-*.parquet\n---\n# medcot minimal export (unreviewed LLM CoT)\n",
                                   encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
