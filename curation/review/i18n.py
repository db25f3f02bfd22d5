"""Interface texts of the review app in English and Chinese, the interface language of a request, and the fixed
codes of the green banner (`?m=<code>`: a page shows only a known code's text, never text from the URL).

The interface language: the `medcot_lang` cookie (the switch in the page header), else the first of the user's
profile languages that has a catalogue, else the browser's Accept-Language, else English. Item text keeps its
own language (`lang` on the elements that hold it); error messages of the submission code are English.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

LANGUAGES = ("en", "zh")
DEFAULT = "en"
LANG_COOKIE = "medcot_lang"
LANG_COOKIE_MAX_AGE_S = 365 * 24 * 3600

EN: dict[str, str] = {
    # header, login, errors
    "my_queue": "My queue", "admin": "Admin", "agreement": "Agreement", "audit_log": "Audit log",
    "log_out": "Log out", "interface_language": "Interface language", "log_in": "Log in", "user_name": "User name",
    "password": "Password", "error": "Error", "back_to_queue": "Back to my queue",
    "https_needed": "This address is not on this computer and the connection is not HTTPS: the session cookie is "
                    "only sent over HTTPS, so logging in cannot work. Open the app through its https:// address.",
    # queue
    "phase_review": "Initial review", "phase_panel": "Expert panel", "phase_adjudication": "Adjudication",
    "col_item": "Item", "col_question": "Question", "col_status": "Status", "status_submitted": "submitted",
    "status_todo": "to do", "status_closed": "closed", "queue_empty": "Nothing is assigned to you.",
    "admin_queue_note": "Items awaiting adjudication are listed on the admin page.",
    "my_pace": "Done {done} · remaining {remaining} · your median {minutes} per item",
    "my_pace_none": "Done {done} · remaining {remaining}", "minutes": "{value} min",
    # the item
    "item": "Item", "stage": "stage", "question": "Question", "answer_key": "Answer key", "key_marker": "(key)",
    "cot": "The chain of thought", "cot_final_answer": "its final answer", "none_extracted": "none extracted",
    "cot_source": "Show the text as written (Markdown source)",
    "reasoning_summary": "The model's raw thinking behind this CoT (context only: you validate the chain of thought "
                         "above, not this; it is released as 'reasoning', marked never reviewed)",
    # the initial review form
    "relevance": "Relevance", "correctness": "Medical correctness", "sufficiency": "Information sufficiency",
    "relevance_1": "relevant to the question", "relevance_0": "not relevant",
    "correctness_1": "medically correct", "correctness_0": "contains a medical error",
    "sufficiency_1": "enough information to reach the answer", "sufficiency_0": "key information missing",
    "your_answer": "Your answer (the option you hold correct; it starts empty on purpose)", "choose": "choose",
    "wording": "Wording", "approve": "approve", "do_not_approve": "do not approve", "comment": "Comment",
    "rubric": "Rubric", "annotation_standard": "annotation standard", "difficulty": "Difficulty",
    "cognitive_level": "Cognitive level",
    "change_question": "change the question", "change_options": "change the options", "option": "Option",
    "change_key": "change the key", "change_cot": "change the chain of thought",
    "review_title": "Initial review", "typed_kept": "(what you typed is kept below)",
    "your_review": "Your review (submitted)",
    "stale_review": "The item was revised after your review; it is judged afresh by others.",
    "your_review_line": "Relevance {relevance} · correctness {correctness} · sufficiency {sufficiency} · "
                        "answer {answer} · wording {wording}",
    "approved": "approved", "not_approved": "not approved",
    "propose_summary": "Propose changes (private: other reviewers never see them; they are reconciled after every "
                       "review is in)",
    "submit_review": "Submit review", "review_closed": "The initial review of this item is closed.",
    "confirm_final": "Submit now? A submission is final: it cannot be changed afterwards.",
    "shortcuts": "Keyboard: the key shown beside a choice picks it in the highlighted group (then the next group "
                 "is highlighted); [ and ] move between groups; Ctrl+Enter submits.",
    # the panel
    "panel_title": "Expert panel", "your_scores": "Your scores", "revision_n": "Revision {n}",
    "panel_editor": "You revised this item; other panelists score it now.",
    "panel_closed": "The panel of this item is closed (stage {stage}).",
    "regenerating": "A guided regeneration is pending: reload this page to score the new chain of thought.",
    "regen_failed": "The last regeneration attempt failed. It is retried automatically; an administrator has the "
                    "details in the audit log.",
    "panel_waiting": "You scored this text ({action}). Waiting for {n} other panelist(s).",
    "panel_answer": "Your answer (starts empty on purpose)", "action": "Action", "action_accept": "accept",
    "action_revise": "revise by hand (question, options, key and/or CoT)",
    "action_regenerate": "regenerate with the LLM (uses your feedback)", "action_discard": "discard",
    "feedback": "Feedback (goes into the regeneration prompt; other panelists see it only at adjudication)",
    "repair_summary": "Revise by hand (used only with \"revise by hand\"; a changed question, option or key goes "
                      "through five-strike again, then back to the panel)",
    "submit_panel": "Submit scores",
    # adjudication and the full history
    "adjudication_title": "Adjudication",
    "adjudicated": "You adjudicated this item: answer {answer}, wording {wording}.", "your_verdict": "Your verdict",
    "adjudicate_note": "You see every vote and proposal, so your verdict reconciles; it is not one of the blind "
                       "approvals. Approve as is (validated if two blind approvals of this text exist, else the "
                       "panel confirms it), approve with changes (a new revision: five-strike again if question, "
                       "options or key change, then the panel), or reject.",
    "reconcile_summary": "Adopt a proposal or change the text", "submit_verdict": "Submit verdict",
    "not_awaiting": "This item is not awaiting adjudication (stage {stage}).",
    "all_reviews": "All reviews", "col_phase": "phase", "col_reviewer": "reviewer", "col_kind": "kind",
    "col_rel": "rel.", "col_corr": "corr.", "col_suff": "suff.", "col_answer": "answer", "col_wording": "wording",
    "col_comment": "comment", "col_proposed": "proposed changes", "col_at": "at", "reject": "reject",
    "panel_actions": "Panel actions and rubric scores", "col_revision": "revision", "col_panelist": "panelist",
    "col_action": "action", "col_feedback": "feedback",
    "history": "Model-answer history (five strikes)", "col_round": "round", "col_template": "template",
    "col_order": "option order shown", "col_seed": "seed", "col_correct": "correct",
    "col_response": "response and reasoning", "show": "show", "reasoning": "Reasoning:", "no_answer": "no answer",
    "shown_as": "shown {letter}", "yes": "yes", "no": "no", "no_attempts": "No re-answering attempts recorded.",
    "cot_revisions": "Chain-of-thought revisions",
    "cot_revision": "revision {n} ({purpose}; answer {answer})", "none": "none",
    "change_by": "{field} {kind} by {who} at {at}", "the_llm": "the LLM",
    "pseudonym_reviewer": "reviewer {n}", "pseudonym_panelist": "panelist {n}",
    "pseudonym_adjudicator": "adjudicator {n}", "pseudonym_you": "you",
    # banner codes
    "m_saved": "Saved.", "m_already_saved": "Already saved: nothing changed.",
    "m_already": "Already recorded: nothing changed.",
    "m_waiting": "Scores saved. Waiting for the other panelists.",
    "m_regenerate": "Scores saved: the panel asked for a guided regeneration.",
    "m_panel_done": "Scores saved: the panel's round is complete.",
    "m_revised": "Your revision is saved: other panelists score it now.",
    "m_restrike": "Saved: the changed item goes through five-strike again.",
    "m_adjudication": "Saved: the item goes to adjudication.",
    "m_approved": "Saved: the item is approved.", "m_removed": "Saved: the item is removed.",
    "m_escalated": "Saved: the expert panel judges the item next.",
}

ZH: dict[str, str] = {
    "my_queue": "我的任务", "admin": "管理", "agreement": "一致性", "audit_log": "审计日志", "log_out": "退出登录",
    "interface_language": "界面语言", "log_in": "登录", "user_name": "用户名", "password": "密码", "error": "错误",
    "back_to_queue": "返回我的任务",
    "https_needed": "此地址不在本机，且连接不是 HTTPS：会话 Cookie 只通过 HTTPS 发送，因此无法登录。请通过 https:// 地址打开。",
    "phase_review": "初审", "phase_panel": "专家组评审", "phase_adjudication": "裁定", "col_item": "题目",
    "col_question": "题干", "col_status": "状态", "status_submitted": "已提交", "status_todo": "待完成",
    "status_closed": "已关闭", "queue_empty": "目前没有分配给您的题目。",
    "admin_queue_note": "待裁定的题目列在管理页面上。",
    "my_pace": "已完成 {done} · 剩余 {remaining} · 您每题用时中位数 {minutes}",
    "my_pace_none": "已完成 {done} · 剩余 {remaining}", "minutes": "{value} 分钟",
    "item": "题目", "stage": "阶段", "question": "题干", "answer_key": "标准答案", "key_marker": "（标准答案）",
    "cot": "思维链", "cot_final_answer": "其最终答案", "none_extracted": "未提取到",
    "cot_source": "显示原文（Markdown 源文本）",
    "reasoning_summary": "模型生成此思维链时的原始思考（仅供参考：您评审的是上面的思维链，而不是这段内容；"
                         "它以 'reasoning' 发布，并标注为未经评审）",
    "relevance": "相关性", "correctness": "医学正确性", "sufficiency": "信息充分性",
    "relevance_1": "与题目相关", "relevance_0": "与题目无关", "correctness_1": "医学上正确",
    "correctness_0": "含有医学错误", "sufficiency_1": "信息足以得出答案", "sufficiency_0": "缺少关键信息",
    "your_answer": "您的答案（您认为正确的选项；默认留空）", "choose": "请选择", "wording": "表述",
    "approve": "认可", "do_not_approve": "不认可", "comment": "备注", "rubric": "评分量表",
    "annotation_standard": "标注标准", "difficulty": "难度", "cognitive_level": "认知层次",
    "change_question": "修改题干", "change_options": "修改选项", "option": "选项", "change_key": "修改标准答案",
    "change_cot": "修改思维链", "review_title": "初审", "typed_kept": "（您输入的内容保留在下方）",
    "your_review": "您的评审（已提交）", "stale_review": "您评审之后题目已被修改；修改后的内容由其他专家重新评审。",
    "your_review_line": "相关性 {relevance} · 正确性 {correctness} · 充分性 {sufficiency} · 答案 {answer} · "
                        "表述 {wording}",
    "approved": "已认可", "not_approved": "未认可",
    "propose_summary": "提出修改建议（保密：其他评审专家看不到；所有评审提交后统一协调）",
    "submit_review": "提交评审", "review_closed": "本题初审已关闭。",
    "confirm_final": "现在提交吗？提交后不可更改。",
    "shortcuts": "键盘操作：在高亮的组中按选项旁显示的键即可选择（随后高亮下一组）；[ 和 ] 在组之间移动；Ctrl+Enter 提交。",
    "panel_title": "专家组评审", "your_scores": "您的评分", "revision_n": "第 {n} 版",
    "panel_editor": "您修改了本题；现在由其他专家组成员评分。", "panel_closed": "本题的专家组评审已关闭（阶段 {stage}）。",
    "regenerating": "正在等待按专家意见重新生成：请稍后刷新本页，对新的思维链评分。",
    "regen_failed": "上一次重新生成失败，系统会自动重试；详细信息在管理员的审计日志中。",
    "panel_waiting": "您已对此文本评分（{action}）。正在等待其他 {n} 位专家组成员。",
    "panel_answer": "您的答案（默认留空）", "action": "处理方式", "action_accept": "接受",
    "action_revise": "手动修改（题干、选项、标准答案和/或思维链）", "action_regenerate": "由大模型重新生成（使用您的反馈）",
    "action_discard": "舍弃", "feedback": "反馈（写入重新生成的提示词；其他专家组成员仅在裁定阶段可见）",
    "repair_summary": "手动修改（仅在选择“手动修改”时使用；题干、选项或标准答案的修改会重新经过五次作答检验，然后回到专家组）",
    "submit_panel": "提交评分", "adjudication_title": "裁定",
    "adjudicated": "您已裁定本题：答案 {answer}，表述 {wording}。", "your_verdict": "您的裁定",
    "adjudicate_note": "您能看到所有投票和修改建议，因此您的裁定用于协调，不计入盲审认可。可以原样认可（若此文本已有两次盲审认可则通过，"
                       "否则由专家组确认）、修改后认可（产生新版本：题干、选项或标准答案改变时重新经过五次作答检验，然后交专家组），或拒绝。",
    "reconcile_summary": "采纳修改建议或修改文本", "submit_verdict": "提交裁定",
    "not_awaiting": "本题不在待裁定状态（阶段 {stage}）。",
    "all_reviews": "全部评审", "col_phase": "阶段", "col_reviewer": "评审专家", "col_kind": "类型", "col_rel": "相关",
    "col_corr": "正确", "col_suff": "充分", "col_answer": "答案", "col_wording": "表述", "col_comment": "备注",
    "col_proposed": "修改建议", "col_at": "时间", "reject": "拒绝", "panel_actions": "专家组处理与评分",
    "col_revision": "版本", "col_panelist": "专家组成员", "col_action": "处理", "col_feedback": "反馈",
    "history": "模型作答记录（五次作答检验）", "col_round": "轮次", "col_template": "模板", "col_order": "选项显示顺序",
    "col_seed": "随机种子", "col_correct": "正确", "col_response": "回答与推理", "show": "显示", "reasoning": "推理：",
    "no_answer": "无答案", "shown_as": "显示为 {letter}", "yes": "是", "no": "否", "no_attempts": "没有重新作答的记录。",
    "cot_revisions": "思维链版本", "cot_revision": "第 {n} 版（{purpose}；答案 {answer}）", "none": "无",
    "change_by": "{field} {kind}，{who}，{at}", "the_llm": "大模型",
    "pseudonym_reviewer": "评审专家 {n}", "pseudonym_panelist": "专家组成员 {n}",
    "pseudonym_adjudicator": "裁定专家 {n}", "pseudonym_you": "您",
    "m_saved": "已保存。", "m_already_saved": "已保存过：没有变化。", "m_already": "已记录过：没有变化。",
    "m_waiting": "评分已保存，正在等待其他专家组成员。", "m_regenerate": "评分已保存：专家组要求按意见重新生成。",
    "m_panel_done": "评分已保存：本轮专家组评审已完成。", "m_revised": "您的修改已保存：现在由其他专家组成员评分。",
    "m_restrike": "已保存：修改后的题目将重新经过五次作答检验。", "m_adjudication": "已保存：本题进入裁定。",
    "m_approved": "已保存：本题已通过。", "m_removed": "已保存：本题已移除。", "m_escalated": "已保存：接下来由专家组评审本题。",
}

CATALOGUES: dict[str, dict[str, str]] = {"en": EN, "zh": ZH}
BANNER_CODES = frozenset(k.removeprefix("m_") for k in EN if k.startswith("m_"))


def translator(lang: str) -> Callable[..., str]:
    """`t(key, **fields)` in this language; an unknown key is a programming error (KeyError), never shown raw."""
    catalogue = CATALOGUES[lang]

    def t(key: str, **fields: object) -> str:
        text = catalogue[key]
        return text.format(**fields) if fields else text
    return t


def banner(code: str | None, lang: str) -> str | None:
    """The text of a banner code (None for no code or an unknown one: text from the URL is never shown)."""
    if not code:
        return None
    t = translator(lang)
    return t(f"m_{code}") if code in BANNER_CODES else None


def from_accept_language(header: str | None) -> str | None:
    """The best catalogue language of an Accept-Language header (None if it names none)."""
    ranked: list[tuple[float, int, str]] = []
    for pos, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue  # a malformed entry of a browser header is skipped, the rest still counts
        ranked.append((-q, pos, tag.strip().lower().split("-")[0]))
    for neg_q, _, primary in sorted(ranked):
        if neg_q < 0 and primary in LANGUAGES:
            return primary
    return None


def ui_language(cookie: str | None, profile: Iterable[str], accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return str(cookie)
    for lang in profile:
        primary = lang.lower().split("-")[0]
        if primary in LANGUAGES:
            return primary
    return from_accept_language(accept_language) or DEFAULT
