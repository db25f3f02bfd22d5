"""The automated reviewer against the real vLLM CPU server (SmolLM2): structured outputs give usable review and
panel judgements, stored as kind "llm" through the normal submission code, never counted as experts."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from curation.review import sample
from medcot.config import load_config
from medcot.pipeline import RunContext, _run_stages, check_stages
from medcot.review_tables import ReviewRow, UserRow
from medcot.store import Store

pytestmark = pytest.mark.vllm


async def test_llm_judge_reviews_through_real_vllm(vllm_server, sqlite_url, tmp_path):
    cfg = load_config("configs/demo.yaml", [
        f"store.url={sqlite_url}", "server.managed=false", f"llm.endpoints=[{vllm_server.base_url}]",
        f"llm.model={vllm_server.model_name}", f"run.out_dir={tmp_path}"])
    check_stages(["review"])
    ctx = RunContext(cfg=cfg, store=Store(sqlite_url), out_dir=tmp_path, progress=False)
    sample.add_items(ctx.store, 2)
    await _run_stages(ctx, ["review"], None)
    section = ctx.sections["review"]
    assert section["automated_reviews"] + section["judge_failures"] == 4
    assert section["automated_reviews"] >= 3  # structured outputs: schema-valid JSON when it finishes
    with ctx.store.engine.connect() as conn:
        rows = conn.execute(select(UserRow.kind, ReviewRow.answer, ReviewRow.comment)
                            .join(UserRow, UserRow.id == ReviewRow.user_id)).all()
    assert rows and all(kind == "llm" and answer in "ABCD" and comment.startswith("[automated: llm:judge-")
                        for kind, answer, comment in rows)
    assert "NOT expert-validated" in section["markdown"]
