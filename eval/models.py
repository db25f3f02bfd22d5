"""Models under test: from the config and from a training manifest; grouped into vLLM servers (one per
base model, with all of that base's LoRA adapters loaded; one per merged checkpoint); fingerprinted so a
retrained adapter under the same name never hits a stale cache entry."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.config import ModelSpec
from medcot.config import ConfigError, ServerConfig

_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values
_ARMS = ("validated", "unvalidated")
_ADAPTER_KEYS = ("adapter_dir", "adapter_path", "lora_dir", "adapter")
_MERGED_KEYS = ("merged_dir", "merged_path", "merged_model_dir", "merged")
_BASE_KEYS = ("base_model", "base_model_path")
_FULL_KEYS = ("model_dir", "serve_dir")
_BIG = 64 * 1024 * 1024


class ManifestError(ValueError):
    """A training manifest that cannot be used (names the file and the run)."""


@dataclass
class ServerGroup:
    """One vLLM server: a model folder served under ``served_name`` plus LoRA adapters by name."""

    model_path: str
    served_name: str
    models: list[ModelSpec] = field(default_factory=list)

    @property
    def loras(self) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == "lora"]

    def request_name(self, spec: ModelSpec) -> str:
        return spec.name if spec.kind == "lora" else self.served_name

    def server_config(self, template: ServerConfig) -> ServerConfig:
        extra = list(template.extra_args)
        if self.loras:
            rank = max_lora_rank(self.loras)
            extra += ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(len(self.loras)),
                      "--lora-modules", *(f"{m.name}={m.path}" for m in self.loras)]
        return dataclasses.replace(template, model=self.model_path, served_model_name=self.served_name,
                                   extra_args=extra)


def server_groups(models: list[ModelSpec]) -> list[ServerGroup]:
    """Group models by the folder a server must load: a base model with its adapters, or a merged model."""
    groups: dict[str, ServerGroup] = {}
    for spec in models:
        folder = str(Path(spec.base if spec.kind == "lora" else spec.path).expanduser().resolve())
        group = groups.get(folder)
        if group is None:
            group = groups[folder] = ServerGroup(folder, spec.name if spec.kind != "lora" else _base_name(folder))
        elif spec.kind != "lora":
            owner = next((m.name for m in group.models if m.kind != "lora"), None)
            if owner is not None:
                raise ConfigError(f"models {owner!r} and {spec.name!r} both serve {folder}: keep one")
            group.served_name = spec.name
        group.models.append(spec)
    return list(groups.values())


def _base_name(folder: str) -> str:
    return "base-" + Path(folder).name


def max_lora_rank(loras: list[ModelSpec]) -> int:
    ranks = []
    for spec in loras:
        cfg = Path(spec.path).expanduser() / "adapter_config.json"
        if not cfg.is_file():
            raise ConfigError(f"models[{spec.name}]: {cfg} not found (not a PEFT LoRA adapter folder)")
        ranks.append(int(json.loads(cfg.read_text(encoding="utf-8"))["r"]))
    need = max(ranks)
    fit = [r for r in _LORA_RANKS if r >= need]
    if not fit:
        raise ConfigError(f"LoRA rank {need} exceeds vLLM's maximum {_LORA_RANKS[-1]}")
    return fit[0]


def fingerprint(path: str) -> str:
    """A short hash of a model or adapter folder: file names, sizes and contents (head and tail only for
    files over 64 MB, so a 14 GB checkpoint is fingerprinted in milliseconds)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise ConfigError(f"model path {root} does not exist")
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(root) if p != root else p.name}\0{size}\0".encode())
        with p.open("rb") as fh:
            if size <= _BIG:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return h.hexdigest()[:16]


def _pick(run: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for where in (run, run.get("outputs") or {}, run.get("paths") or {}):
        for key in keys:
            if isinstance(where, dict) and where.get(key):
                return where[key]
    return None


def _resolve(value: str, manifest: Path, what: str) -> str:
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [manifest.parent / p, Path.cwd() / p]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    raise ManifestError(f"{manifest}: {what} {value!r} not found (looked at {', '.join(map(str, candidates))})")


def models_from_manifest(path: str, prefer_merged: bool = False) -> list[ModelSpec]:
    """One ModelSpec per training run (name `<arm>-s<seed>`): its LoRA adapter over the base model, or its
    merged model when `prefer_merged` and the run has one."""
    manifest = Path(path)
    data, runs = _read_manifest(manifest)
    top_base = _pick(data, _BASE_KEYS) if isinstance(data, dict) else None
    return [_run_spec(run, i, manifest, top_base, prefer_merged) for i, run in enumerate(runs)]


def _read_manifest(manifest: Path) -> tuple[Any, list[Any]]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{manifest}: cannot read the manifest: {exc}") from exc
    runs = data.get("runs") if isinstance(data, dict) else data
    if not isinstance(runs, list) or not runs:
        raise ManifestError(f"{manifest}: no `runs` list")
    return data, runs


def _identity(run: Any, i: int, manifest: Path) -> tuple[str, int, str]:
    if not isinstance(run, dict) or run.get("arm") not in _ARMS or not isinstance(run.get("seed"), int) \
            or isinstance(run.get("seed"), bool):
        raise ManifestError(f"{manifest}: runs[{i}]: needs `arm` ({' | '.join(_ARMS)}) and an integer `seed`")
    return run["arm"], run["seed"], f"{run['arm']}-s{run['seed']}"


def _run_spec(run: Any, i: int, manifest: Path, top_base: Any, prefer_merged: bool) -> ModelSpec:
    where = f"{manifest}: runs[{i}]"
    _, _, name = _identity(run, i, manifest)
    merged = _pick(run, _MERGED_KEYS)
    if prefer_merged and merged:
        return ModelSpec(name=name, kind="merged", path=_resolve(merged, manifest, "merged model"),
                         arm=run["arm"], seed=run["seed"])
    adapter, base = _pick(run, _ADAPTER_KEYS), _pick(run, _BASE_KEYS) or top_base
    full = _pick(run, _FULL_KEYS)
    if not adapter and full:  # full fine-tuning: a plain model folder
        return ModelSpec(name=name, kind="merged", path=_resolve(full, manifest, "model"), arm=run["arm"],
                         seed=run["seed"])
    if not adapter or not base:
        raise ManifestError(f"{where} ({name}): needs an adapter dir ({' | '.join(_ADAPTER_KEYS)}) and a base "
                            f"model ({' | '.join(_BASE_KEYS)}, in the run or at the top level), or a full "
                            f"model ({' | '.join(_FULL_KEYS)})")
    return ModelSpec(name=name, kind="lora", path=_resolve(adapter, manifest, "adapter"),
                     base=_resolve(base, manifest, "base model"), arm=run["arm"], seed=run["seed"])


def manifest_prompt(path: str) -> str | None:
    """The prompt the manifest's runs were trained with (its `prompt` field), if it names one."""
    data, _ = _read_manifest(Path(path))
    return data.get("prompt") if isinstance(data, dict) else None


@dataclass(frozen=True)
class ManifestRun:
    """One training run as the comparison sees it: arm, training seed, data-subsample seed, model name."""

    arm: str
    seed: int
    data_seed: int | None  # None in manifests written before runs varied the data subsample
    name: str


def manifest_runs(path: str) -> list[ManifestRun]:
    """Every run of a manifest with its data seed (``data_seed``, else ``data.subsample_seed``)."""
    manifest = Path(path)
    _, runs = _read_manifest(manifest)
    names = manifest_arms(path)
    return [ManifestRun(arm, seed, _data_seed(run), name) for (arm, seed, name), run in zip(names, runs)]


def _data_seed(run: dict[str, Any]) -> int | None:
    value = run.get("data_seed", (run.get("data") or {}).get("subsample_seed"))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def manifest_design(path: str) -> dict[str, Any]:
    """What the manifest says about the arms: ``design`` (matched | pipeline | None for old manifests) and
    ``arms`` (per arm: N, families, identical examples, own answer vs key; see training.matrix)."""
    data, _ = _read_manifest(Path(path))
    if not isinstance(data, dict):
        return {"design": None, "arms": {}}
    arms = data.get("arms") if isinstance(data.get("arms"), dict) else {}
    return {"design": data.get("design"), "arms": arms, "n_per_arm": data.get("n_per_arm")}


def manifest_arms(path: str) -> list[tuple[str, int, str]]:
    """(arm, seed, model name) for every run of a manifest, in file order."""
    manifest = Path(path)
    _, runs = _read_manifest(manifest)
    found = [_identity(run, i, manifest) for i, run in enumerate(runs)]
    names = [n for _, _, n in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ManifestError(f"{manifest}: run(s) {dup} appear more than once")
    return found
