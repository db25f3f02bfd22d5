"""The identity of an item's text as experts judge it and as it is released: question, options, key and CoT.

`content_hash` is what every vote records (the revision it was cast on) and what the builder recomputes from
each released row, so "approved" can be checked against "released" without trusting any stored count.
Text is normalised once, here and at ingestion (`normalize_newlines`): line endings to LF, Unicode NFC, outer
whitespace of each field stripped. Nothing else changes (inner newlines of an option are kept).
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from typing import Any

REVISION_VERSION = "revision@1"


def normalize_newlines(text: str) -> str:
    """LF line endings and NFC: how every text field is stored (browsers send CRLF from textareas)."""
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))


def _clean(text: Any) -> str:
    return normalize_newlines(str(text or "")).strip()


def content_hash(question: str, options: Mapping[str, Any], answer: str, cot: str) -> str:
    """sha256 (hex, 64 chars) of the canonical JSON of the four fields; empty option slots are ignored."""
    payload = {"question": _clean(question), "answer": _clean(answer).upper(), "cot": _clean(cot),
               "options": {k: _clean(v) for k, v in sorted(options.items()) if v is not None and _clean(v)}}
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{REVISION_VERSION}\n{blob}".encode()).hexdigest()
