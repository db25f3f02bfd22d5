"""The answer extractor: the labelled fixture set, then one test per behaviour."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcot.extract import EXTRACTOR_VERSION, Extraction, extract_answer, parse_option_explanations, split_think

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "extraction.jsonl"
ROWS = [json.loads(line) for line in FIXTURES.read_text(encoding="utf-8").splitlines() if line.strip()]

O4 = {"A": "Non-rebreather mask at 15 L/min", "B": "Venturi mask at 28%",
      "C": "High-flow nasal cannula at 60 L/min", "D": "Immediate endotracheal intubation"}
O5 = {"A": "Herpes simplex", "B": "Contact dermatitis", "C": "Herpes zoster", "D": "Impetigo",
      "E": "Bullous pemphigoid"}
Z4 = {"A": "单纯疱疹", "B": "带状疱疹", "C": "接触性皮炎", "D": "脓疱疮"}


def ex(text: str | None, options=O4, **kw) -> Extraction:
    return extract_answer(text, options, **kw)


# --- the fixture set ------------------------------------------------------------------------------
def test_fixture_set_is_large_and_varied() -> None:
    assert len(ROWS) >= 230
    assert sum(r["expected"] is None for r in ROWS) >= 60
    assert len({r["id"] for r in ROWS}) == len(ROWS)
    langs = [r["language"] for r in ROWS]
    assert min(langs.count("zh"), langs.count("en")) >= 0.4 * len(ROWS)
    assert {len(r["options"]) for r in ROWS} == {4, 5}


def test_fixtures_accuracy_and_no_false_letters() -> None:
    wrong, false_letters = [], []
    for r in ROWS:
        got = extract_answer(r["response"], r["options"], finish_reason=r["finish_reason"])
        if got.letter != r["expected"]:
            wrong.append(f"{r['id']}: expected {r['expected']}, got {got.letter} ({got.matched_by})")
            if r["expected"] is None:
                false_letters.append(r["id"])
    accuracy = 1 - len(wrong) / len(ROWS)
    assert not false_letters, f"letters where no answer was expected: {false_letters}"
    assert accuracy >= 0.99, "\n".join(wrong)


def test_none_always_has_a_none_reason() -> None:
    for r in ROWS:
        got = extract_answer(r["response"], r["options"], finish_reason=r["finish_reason"])
        assert got.ok == (got.letter is not None)
        assert (got.letter is None) == got.matched_by.startswith("none:"), r["id"]


def test_version_and_result_type() -> None:
    assert EXTRACTOR_VERSION == "extract@2"
    got = ex("Answer: B")
    assert got == Extraction("B", "final_line", "Answer: B") and got.ok
    with pytest.raises(AttributeError):
        got.letter = "C"  # type: ignore[misc]


# --- final-answer statements ----------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "答案：B", "答案: B", "最终答案是B", "故选B", "因此选B。", "正确答案为B项", "本题选B", "应选B", "答案为(B)",
    "答案为（B）", "答案是：B", "所以本题应选择B项。", "答：B", "B为正确答案。", "答案不是A，而是B。",
    "【答案】B", "本题正确选项为B", "最佳选择：B", "选B", "我认为选B比较合适。", "因此B。", "答案（B）", "**答案：**\nB",
])
def test_zh_answer_statements(text: str) -> None:
    assert ex(text, Z4).letter == "B"


@pytest.mark.parametrize("text", [
    "The answer is (B).", "The answer is B.", "Answer: B", "Final answer: B", "The correct option is B.",
    "So the correct answer is B because controlled oxygen is safer.", "I would choose B.", "ANSWER: B",
    "B is the correct answer.", "Option B (Venturi mask at 28%) is the most appropriate.", "Answer - B",
    "The answer is not A; the answer is B.", "The answer is not A but B.", "**Answer:**\n\nB",
    "**Answer**\n\nB) Venturi mask at 28%", "Thus, B.", "B is the answer.", "I'm going with B.", "Choice B.",
    "My final choice is B.", "So, we'd pick D? No. Answer: B",
])
def test_en_answer_statements(text: str) -> None:
    assert ex(text).letter == "B"


def test_final_line_is_labelled() -> None:
    assert ex("Long reasoning.\n\nAnswer: C").matched_by == "final_line"
    assert ex("推理过程。\n\n答案：C", Z4).matched_by == "final_line"
    assert ex("So the answer is C.").matched_by == "answer_is"
    assert ex("故选C。", Z4).matched_by == "choose_phrase"


@pytest.mark.parametrize("text", ["\\boxed{C}", "$\\boxed{\\text{C}}$", "\\boxed{(C)}", "\\[\\boxed{\\textbf{C}}\\]"])
def test_boxed(text: str) -> None:
    assert ex(text) == Extraction("C", "boxed", ex(text).span)


@pytest.mark.parametrize("text", ["答案：Ｂ", "故选（Ｂ）。", "Answer：Ｂ", "本题答案：【Ｂ】", "Ｂ"])
def test_full_width(text: str) -> None:
    assert ex(text, Z4).letter == "B"


@pytest.mark.parametrize("text", ["**Answer: B**", "Answer: **B**", "Answer: [B]", "> **Answer:** `B`",
                                  "__Answer__: B", "**Final answer:** **B. Venturi mask at 28%**", "答案：**B**"])
def test_brackets_and_markdown(text: str) -> None:
    assert ex(text).letter == "B"


def test_lowercase_only_in_explicit_answer_lines() -> None:
    assert ex("answer: b").letter == "B"
    assert ex("the answer is (b).").letter == "B"
    assert ex("\\boxed{b}").letter == "B"
    assert ex("The answer is a life-threatening emergency.").letter is None
    assert ex("I choose b").letter is None
    assert ex("b").letter is None


def test_option_text_answers() -> None:
    assert ex("The answer is Venturi mask at 28%.") == Extraction("B", "option_text", "answer is Venturi mask at 28%.")
    assert ex("答案：带状疱疹", Z4).letter == "B"
    assert ex("Reasoning.\nTherefore, the best device is a Venturi mask at 28%.").letter == "B"
    assert ex("Herpes zoster", O5).letter == "C"
    assert ex("Herpes simplex or herpes zoster are both possible here.", O5).letter is None
    assert ex("Therefore, a Venturi mask at 28% is not appropriate.").letter is None


def test_letter_and_option_text_must_agree() -> None:
    assert ex("Answer: B. Venturi mask at 28%").letter == "B"
    assert ex("Answer: B. Immediate endotracheal intubation").matched_by == "none:conflict"


def test_bare_letter() -> None:
    for text in ("B", "B.", "(B)", "[B]", "B. Venturi mask at 28%"):
        assert ex(text) == Extraction("B", "bare_letter", ex(text).span), text
    assert ex("B. Something else entirely").letter is None


# --- think blocks ---------------------------------------------------------------------------------
def test_split_think() -> None:
    assert split_think("plain") == (None, "plain", True)
    assert split_think("<think> a </think>\n b ") == ("a", "b", True)
    assert split_think("reasoning only</think>answer") == ("reasoning only", "answer", True)
    assert split_think("pre <think>still going") == ("still going", "pre", False)


def test_think_block_is_ignored_for_the_answer() -> None:
    text = "<think>A is tempting. The answer is A. No wait, C? Final answer: D.</think>\n\nAnswer: B"
    assert ex(text) == Extraction("B", "final_line", "Answer: B")
    assert ex("<think>Answer: B</think>\n\n").matched_by == "none:empty"


def test_unclosed_think_is_truncated() -> None:
    assert ex("<think>The answer is B, let me check") == Extraction(None, "none:truncated")


# --- verdict lists and eliminations ---------------------------------------------------------------
@pytest.mark.parametrize("text, options", [
    ("A. 错误 B. 正确 C. 错误 D. 错误", Z4),
    ("A: incorrect, B: correct, C: incorrect, D: incorrect", O4),
    ("A选项错误。B选项正确。C选项错误。D选项错误。", Z4),
    ("Option A is incorrect. Option B is correct. Option C is incorrect.", O4),
    ("A. Non-rebreather mask at 15 L/min — incorrect\nB. Venturi mask at 28% — correct", O4),
])
def test_verdict_list(text: str, options: dict[str, str]) -> None:
    assert ex(text, options).letter == "B"
    assert ex(text, options).matched_by == "verdict_list"


def test_verdict_list_with_two_correct_is_none() -> None:
    assert ex("A: correct. B: correct. C: incorrect. D: incorrect.").matched_by == "none:conflict"
    assert ex("Option A is correct in stating the mechanism, but it is not first-line.").letter is None


def test_explicit_answer_beats_per_option_verdicts() -> None:  # "which is NOT ..." questions
    assert ex("A项正确。B项正确。C项错误。D项正确。\n故本题选C。", Z4).letter == "C"


def test_conclusion_not_last_letter() -> None:
    assert ex("Conclusion: B. Eliminated: A, C, D").letter == "B"
    assert ex("结论：B。排除：A、C、D。", Z4).letter == "B"


# --- no answer --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [None, "", "   \n\t"])
def test_empty(text: str | None) -> None:
    assert ex(text) == Extraction(None, "none:empty")


@pytest.mark.parametrize("text", ["I cannot answer this question.", "I'm not able to provide medical advice.",
                                  "作为AI我无法提供医疗建议。", "As an AI, I won't choose.", "抱歉，无法作答。"])
def test_refusal(text: str) -> None:
    assert ex(text, Z4).matched_by == "none:refusal"


@pytest.mark.parametrize("text", [
    "It is either B or C.", "B或C", "B and D are both correct.", "答案可能是A也可能是C", "The answer is B or C.",
    "答案：B、D", "Answer: A. However, B could also be correct.", "我不确定是B还是C。", "A和C都正确。", "\\boxed{B, C}",
])
def test_hedge(text: str) -> None:
    assert ex(text, Z4).matched_by == "none:hedge"


def test_hedge_resolved_by_a_later_statement() -> None:
    assert ex("At first it could be B or C. Controlled oxygen matters most, so the answer is B.").letter == "B"


def test_conflict() -> None:
    assert ex("The answer is A.\n\nAnswer: B").matched_by == "none:conflict"
    assert ex("\\boxed{C}\n答案：A", Z4).matched_by == "none:conflict"


def test_agreeing_statements_take_the_last() -> None:
    assert ex("The answer is B.\nLong reasoning.\nAnswer: B") == Extraction("B", "final_line", "Answer: B")


def test_out_of_range() -> None:
    assert ex("Answer: E").matched_by == "none:out_of_range"
    assert ex("E").matched_by == "none:out_of_range"
    assert ex("Answer: E", O5).letter == "E"
    assert ex("Answer: E", ["A", "B", "C", "D"]).matched_by == "none:out_of_range"


def test_truncated_by_length_even_with_an_answer() -> None:
    assert ex("Answer: B", finish_reason="length") == Extraction(None, "none:truncated")
    assert ex("Answer: B", finish_reason="stop").letter == "B"


def test_no_final_statement() -> None:
    text = ("A non-rebreather gives high FiO2. A Venturi mask controls FiO2. High-flow nasal cannula is an "
            "escalation, and option D is premature in an alert patient.")
    assert ex(text) == Extraction(None, "none:no_match")


@pytest.mark.parametrize("text", [
    "Answer: A patient with chronic hypercapnia needs controlled oxygen.",
    "A 68-year-old man with COPD. A careful approach is needed.",
    "Answer:\nA 58-year-old with STEMI should go to the cath lab.",
    "Many students think the answer is A.",
    "如果答案是A，那么皮损应位于口周。",
    "所以选A是错误的。",
    "Answer: C. difficile",
    "Many students think A is the correct answer.",
    "Would you pick A?",
    "因此A项错误，B项也不对。",
])
def test_article_and_other_false_positives(text: str) -> None:
    assert ex(text, Z4 if text[0] in "如所因" else O4).letter is None


def test_article_a_is_still_a_valid_answer() -> None:
    assert ex("A 45-year-old man.\n\nAnswer: A").letter == "A"
    assert ex("The answer is A because it controls oxygen.").letter == "A"
    assert ex("A. Non-rebreather mask at 15 L/min").letter == "A"


def test_sequence_options() -> None:
    assert ex("Answer: D", ["A", "B", "C", "D"]).letter == "D"


# --- per-option explanations --------------------------------------------------------------------------
def test_parse_option_explanations_en() -> None:
    text = ("<think>scratch</think>Let's look at each option.\n"
            "A. Non-rebreather mask at 15 L/min — incorrect: uncontrolled FiO2.\n"
            "(B) Venturi mask at 28%: correct, fixed FiO2.\n"
            "- **Option C**: escalation only.\n"
            "D) Premature; he is alert.\n\nAnswer: B")
    got = parse_option_explanations(text, O4)
    assert got == {"A": "Non-rebreather mask at 15 L/min — incorrect: uncontrolled FiO2.",
                   "B": "Venturi mask at 28%: correct, fixed FiO2.", "C": "escalation only.",
                   "D": "Premature; he is alert."}


def test_parse_option_explanations_zh() -> None:
    text = ("逐项分析：\nA选项：单纯疱疹多见于口周。\n选项B 带状疱疹沿神经分布。\nC项：接触性皮炎有接触史。\n"
            "D. 脓疱疮多见于儿童。\n答案：B")
    got = parse_option_explanations(text, Z4)
    assert got == {"A": "单纯疱疹多见于口周。", "B": "带状疱疹沿神经分布。", "C": "接触性皮炎有接触史。",
                   "D": "脓疱疮多见于儿童。"}


def test_parse_option_explanations_edge_cases() -> None:
    assert parse_option_explanations("No per-option discussion here.", Z4) == {}
    assert parse_option_explanations("<think>A. 错误，口周。\nB. 正确。</think>答案：B", Z4) == {"A": "错误，口周。",
                                                                                            "B": "正确。"}
    assert parse_option_explanations("A. first\nA. again\nE. not an option", Z4) == {"A": "first"}
    assert parse_option_explanations("（A）单纯疱疹：错误。\n**B. 带状疱疹**：正确。", Z4) == {"A": "单纯疱疹：错误。",
                                                                                     "B": "带状疱疹：正确。"}
