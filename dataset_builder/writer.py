"""Parquet shards with fixed writer settings (identical rows -> byte-identical files) and the
`dataset_info` / `configs` metadata the card's YAML declares.

`load_dataset` cannot load a split without rows, so an empty split is left out of its config (and a config
without any row is left out of the release); the card says which ones are absent and why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo

from dataset_builder.features import FEATURES, LETTERS, SPLITS, ReleaseRow

PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 3, "use_dictionary": True,
                                   "write_statistics": True, "version": "2.6", "data_page_size": 1 << 20}
ROW_GROUP_ROWS = 5000


@dataclass
class SplitFiles:
    name: str
    num_examples: int
    num_bytes: int
    files: list[str] = field(default_factory=list)  # relative to the release root


def write_split(rows: list[ReleaseRow], root: Path, config: str, split: str, shard_rows: int) -> SplitFiles:
    """Rows (already sorted) -> data/<config>/<split>-NNNNN-of-NNNNN.parquet shards."""
    table = to_table(rows)
    n_shards = max(1, math.ceil(len(rows) / shard_rows))
    folder = root / "data" / config
    folder.mkdir(parents=True, exist_ok=True)
    out = SplitFiles(split, len(rows), table.nbytes)
    for i in range(n_shards):
        rel = f"data/{config}/{split}-{i:05d}-of-{n_shards:05d}.parquet"
        pq.write_table(table.slice(i * shard_rows, shard_rows), root / rel, row_group_size=ROW_GROUP_ROWS,
                       **PARQUET_OPTIONS)
        out.files.append(rel)
    return out


def to_table(rows: list[ReleaseRow]) -> pa.Table:
    """Column by column (faster than row dicts); the answer letter becomes its ClassLabel index."""
    schema = FEATURES.arrow_schema
    columns = {}
    for name in FEATURES:
        if name == "answer":
            values = [LETTERS.index(r.answer) for r in rows]
        elif name == "answer_letter":
            values = [r.answer for r in rows]
        else:
            values = [getattr(r, name) for r in rows]
        columns[name] = pa.array(values, type=schema.field(name).type)
    return pa.Table.from_pydict(columns, schema=schema)


def write_config(splits: dict[str, list[ReleaseRow]], root: Path, config: str, shard_rows: int) -> list[SplitFiles]:
    return [write_split(splits[s], root, config, s, shard_rows) for s in SPLITS if splits.get(s)]


def configs_yaml(written: dict[str, list[SplitFiles]], default: str | None) -> list[dict[str, Any]]:
    out = []
    for config, files in written.items():
        entry: dict[str, Any] = {"config_name": config,
                                 "data_files": [{"split": f.name, "path": f"data/{config}/{f.name}-*.parquet"}
                                                for f in files]}
        if config == default:
            entry["default"] = True
        out.append(entry)
    return out


def dataset_infos(written: dict[str, list[SplitFiles]], description: str) -> DatasetInfosDict:
    infos = {}
    for config, files in written.items():
        splits = SplitDict()
        for f in files:
            splits.add(SplitInfo(name=f.name, num_bytes=f.num_bytes, num_examples=f.num_examples))
        infos[config] = DatasetInfo(description=description, features=FEATURES, splits=splits, config_name=config)
    return DatasetInfosDict(infos)
