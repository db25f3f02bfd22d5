"""The project's one answer extractor for multiple-choice responses (zh and en).

It never guesses: a response without a committed, unambiguous final answer gives ``letter=None`` with
a reason in ``matched_by`` ("none:..."), counted as "no answer" by callers, never as a letter.

Order of evidence (first that decides wins):
1. Explicit statements, scanned over the text outside ``<think>``: final-answer lines ("答案：B",
   "Answer: B"), "the answer is B", "故选B", ``\\boxed{B}``, "B is the correct answer", or an answer cue
   followed by one option's text. A letter counts only if what follows it ends the letter (punctuation,
   end of line, a bracket, its option text, "项"...), so "Answer: A patient with..." and "Answer: C. difficile"
   are no answer, nor is a question ("pick D?") or an uncommitted clause ("if the answer is A", "如果答案是A").
   All explicit statements must name the same letter (else "none:conflict"); a hedge ("B or C") with
   no explicit statement after it gives "none:hedge". "The answer is not A" never matches a cue.
2. Refusals, then hedges anywhere.
3. Per-option verdicts ("A. 错误 B. 正确", "Option B is correct"): exactly one option judged correct.
4. The last line names exactly one option's text (alone, or after "therefore"/"故"/...).
5. The whole response is a bare letter ("B", "(B)", "B. Nasal cannula").

Structured answers: a response that IS a JSON object (bare or in a ```json fence), e.g. {"answer": "C"}, is
decided by its answer field (answer, final_answer, answer_letter, choice, correct_option, 答案, ...; a letter,
"(C)", "C. text" or one option's text); a JSON object with no usable answer field is no answer. JSON objects
inside a longer text are read last, only when nothing else decides, and must all name the same letter.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EXTRACTOR_VERSION = "extract@2"


@dataclass(frozen=True, slots=True)
class Extraction:
    """The extracted letter (None = no answer, never a guess), how it was found, and the matched text."""

    letter: str | None
    matched_by: str
    span: str | None = None

    @property
    def ok(self) -> bool:
        return self.letter is not None


@dataclass(frozen=True, slots=True)
class _Cand:
    """One explicit answer statement: letters has one letter (an answer) or several (a hedge)."""

    start: int
    end: int
    letters: tuple[str, ...]
    kind: str
    span: str
    clash: bool = False  # the letter is followed by ANOTHER option's text


# --- patterns -------------------------------------------------------------------------------------
_LETTER = r"(?P<o>[(\[{【<])?\s*(?P<L>[A-Ja-j])(?:\s*(?P<c>[)\]}】>]))?"
_OPT_WORD = r"(?:(?:option|choice|letter)\s*)?"
_FILLER = r"(?:(?:therefore|thus|clearly|definitely|most\s+likely|likely|probably|then)\s*,?\s*)?"
_EN_CUES = (
    rf"\b(?:(?:final|correct|right|best|true)\s+)?answer(?:\s+(?:to|for|of)\s+(?:this|the)\s+(?:question|item|"
    rf"problem|mcq|case|vignette))?\s*(?:is|would\s+be|should\s+be|must\s+be|"
    rf"will\s+be|:|=|[-–—])\s*:?\s*{_FILLER}{_OPT_WORD}",
    rf"\b(?:final|correct|right|best|most\s+appropriate|most\s+likely)\s+(?:option|choice|response|"
    rf"selection)\s*(?:is|would\s+be|should\s+be|:|=)\s*:?\s*{_OPT_WORD}",
    rf"\bconclusion\s*:\s*{_OPT_WORD}",
    rf"(?<![^\n])[ \t#>]*(?:(?:final|correct)\s+)?answer[ \t]*:?[ \t]*\n\s*{_OPT_WORD}",  # a heading line
    rf"\bmy\s+(?:final\s+)?(?:pick|choice|selection)\s+(?:is|would\s+be|:)\s*{_OPT_WORD}",
    rf"\bmost\s+(?:appropriate|likely|accurate|consistent|suitable)\b[^.\n]{{0,40}}?\b(?:is|would\s+be)"
    rf"\s+{_OPT_WORD}",
)
_EN_CHOOSE = (
    rf"\b(?:I|we)(?:['’]d|['’]ll|\s+would|\s+will|\s+should|\s+must)?\s+(?:choose|select|pick|go\s+with|"
    rf"opt\s+for)\s+{_OPT_WORD}",
    rf"\b(?:I['’]m|I\s+am|we['’]re|we\s+are)\s+(?:going\s+with|choosing|selecting|picking)\s+{_OPT_WORD}",
)
_ZH_CUES = (
    r"(?:(?<![回解])答\s*:|答案\s*(?:应该?|应当|最?可能|就|即|只能|当)?\s*(?:是|为|选择?|:|=)"
    r"(?:\s*[:=是为])?|答案(?=\s*[(\[【]))\s*(?:选项|选|第)?\s*",
    r"最(?:可能|合适|恰当|佳|适宜|有效)的[^。\n,]{0,15}?(?:是|为)\s*(?:选项|第)?\s*",
    r"结论\s*:\s*(?:选项)?\s*",
    r"[【\[](?:正确|参考|最终)?答案[】\]]\s*:?\s*",
    r"(?:正确|最佳|最合适|最恰当)的?(?:选项|选择)\s*(?:应?(?:是|为)|:)\s*(?:选项)?\s*",
    r"(?<![^\n])[ \t#>]*(?:最终|正确)?答案[ \t]*:?[ \t]*\n\s*",
)
_NOT_BUT = (  # "答案不是A，而是B" / "the answer is not A but B": the letter after the correction
    r"答案(?:并)?不是[^。\n]{0,15}?而是\s*(?:选项|第)?\s*",
    r"\banswer\s+is\s+not\s+(?:option\s+)?[A-E]\s*[,;]?\s*but\s+(?:rather\s+)?(?:option\s+)?",
)
_ZH_CHOOSE = (
    r"(?:(?<![不应该当没勿未])(?:故|因此|所以|因而|于是|综上所述?|综合(?:以上|分析)|本题|此题|最终|我们?|应该?"
    r"|应当|宜|认为|觉得)|(?<![^\n])[ \t]*)\s*,?\s*(?:本题|此题)?\s*(?:应该?|应当|可以|只能|宜)?\s*"
    r"(?:选择?|选定)\s*(?:答案|选项|第)?\s*",
)
_WHOLE = (  # patterns that carry their own letter and what must follow it
    r"(?<![A-Za-z0-9])(?:(?:option|choice)\s*)?[(\[]?(?P<L>[A-J])[)\]]?\s*(?:\([^()\n]{1,60}\)\s*)?is\s+"
    r"(?:the\s+)?(?:(?:correct|right|best|most\s+appropriate)\s+(?:answer|option|choice|response|one)\b"
    r"|(?:best|most\s+appropriate)(?=\s*(?:[.!;]|$))|(?:final\s+|correct\s+|right\s+)?answer\b)",
    r"(?<![A-Za-z0-9])(?:选项)?[(\[]?(?P<L>[A-J])[)\]]?\s*(?:项|选项)?\s*(?:是|为)\s*(?:本题的?)?"
    r"(?:正确|最佳|最恰当|最合适|最终)的?\s*(?:答案|选项|选择)",
    r"(?:\b(?:therefore|thus|hence|so)|故|因此|所以|综上所述?)\s*,?\s*(?:(?:option|choice)\s*)?[(\[]?(?P<L>[A-J])[)\]]?"
    r"(?=\s*(?:[.!。！]|\n|$))",  # "Thus, D." / "因此C。": the letter alone ends the sentence
)
_BOXED = re.compile(
    r"\\boxed\s*\{\s*(?:\\(?:text|textbf|mathrm)\s*\{\s*)?(?:option\s*|选项)?[(\[]?(?P<L>[A-Ja-j])[)\]]?"
    r"\s*(?=[}.:,\s])", re.I)


_Pattern = tuple[str, re.Pattern[str], bool]  # (kind, regex with group L, whole: no tail check needed)


def _compile(kind: str, cues: Sequence[str], whole: bool = False) -> list[_Pattern]:
    return [(kind, re.compile(c if whole else c + _LETTER, re.I), whole) for c in cues]


_PATTERNS = (_compile("answer_is", _EN_CUES + _ZH_CUES + _NOT_BUT)
             + _compile("choose_phrase", _EN_CHOOSE + _ZH_CHOOSE)
             + _compile("answer_is", _WHOLE, whole=True)
             + [("boxed", _BOXED, True)])
_TEXT_CUES = [re.compile(c, re.I) for c in _EN_CUES + _ZH_CUES]

_TAIL_STRICT = re.compile(r"\s*(?:$|\.(?![A-Za-z0-9]|\s*[a-z])|[,;:!。，；：！、)\]}】>\"'」』])")
_TAIL_LOOSE = re.compile(r"\s*(?:项|选项|号|\(|(?:较为|比较|更|最)?(?:合适|恰当|正确|妥当|为宜))|\s+[-–—]|[-–—]\s"
                         r"|\s+(?:because|since|as|given|due|which|for)\b")
_MORE = re.compile(r"\s*(?:,|/|&|、|(?i:or|and)\b|或者?|或是|还是|和|与|以及|及)\s*"
                   r"(?:(?i:option|choice)\s*|选项)?[(\[]?([A-E])[)\]]?(?![A-Za-z0-9])")
_SEP = re.compile(r"^\s*[.:)\-–—,]?\s*")
_ALONE = re.compile(r"\s*[.:)。]?\s*$")
_UNCOMMITTED = re.compile(r"\b(?:if|whether|unless|suppose|supposing|assuming|were|tempting|might|may|could|"
                          r"students|some|many|people|others)\b|如果|若|假如|假设|有人|很多人|误以为|容易误", re.I)
_CLAUSE_END = re.compile(r"[.!?。！？;；,，\n]")

_X = r"(?<![A-Za-z0-9])(?:(?i:option|choice)\s*|选项)?[(\[]?(?-i:[A-E])[)\]]?(?![A-Za-z0-9])"  # one option letter
_OK_WORD = r"\b(?:correct|right|valid|acceptable|reasonable|plausible|possible|true)\b"
_AFFIRM = rf"(?:(?!\bnot\b|n['’]t)[^.\n]){{0,30}}?{_OK_WORD}"
_HEDGES = re.compile("|".join([
    rf"\beither\s+{_X}\s+or\s+{_X}",
    rf"\b(?:could|might|may|would)\s+be\s+(?:either\s+)?{_X}\s+or\s+{_X}",
    rf"\b(?:think|believe|guess|probably|likely|possibly|whether)\s+(?:it['’]?s\s+|it\s+is\s+)?{_X}\s+or\s+{_X}",
    rf"(?:\bboth\s+)?{_X}\s*,?\s+and\s+{_X}\s+(?:are|both|seem|appear|could|might|may|would){_AFFIRM}",
    rf"{_X}\s+(?:is|could|might|may|would)\s+(?:also|equally)\s+(?:be\s+)?{_OK_WORD}",
    rf"{_X}(?:选项|项)?\s*也(?:是|可能|可以)?\s*(?:正确|对|可以|可选)",
    rf"可能是\s*{_X}[^。\n]{{0,6}}?也可能是\s*{_X}",
    rf"(?:可能|也许|或许|大概|认为|觉得|倾向于?|不确定|无法确定|难以确定)是?\s*(?:选)?\s*{_X}\s*"
    rf"(?:或者?|或是|还是)\s*{_X}",
    rf"{_X}\s*(?:或者?|或是)\s*{_X}\s*(?:都|均)?(?:可以|可能|正确|对)",
    rf"{_X}(?:选项|项)?\s*(?:和|与|、|及)\s*{_X}(?:选项|项)?\s*(?:都|均|皆)(?:是|为)?"
    rf"(?:正确|对|合理|可以|可选|符合)",
]), re.I)
_WEAK_HEDGE = re.compile(rf"{_X}\s*(?:或者?|或是|还是|/|\s(?i:or)\s)\s*{_X}")  # only when nothing explicit
_REFUSAL = re.compile(
    r"\bI\s*(?:cannot|can['’]t|can\s+not|am\s+(?:unable|not\s+able)|['’]m\s+(?:unable|not\s+able)|won['’]t|"
    r"will\s+not|must\s+decline)\b|\bas\s+an\s+AI\b|"
    r"\b(?:not\s+able\s+to|cannot|can['’]t)\s+provide\s+medical\s+advice|"
    r"\bconsult\s+(?:a|your)\s+(?:qualified\s+)?(?:doctor|physician|healthcare)|"
    r"作为(?:一个|一名)?(?:AI|人工智能|语言模型)|我(?:无法|不能|没办法|不便)|无法(?:回答|作答|提供|给出)|"
    r"不能提供(?:医疗|医学)|请(?:咨询|就诊)|抱歉", re.I)
_VERDICT = (r"(?:is\s+|是|为)?\s*(?:also\s+|partially\s+|partly\s+|mostly\s+|也|亦|部分|基本|同样)?"
            r"(?P<v>not\s+correct|incorrect|correct|wrong|true|false|right|不正确|正确|错误|不对|对|错|√|×|✓|✗)"
            r"(?=的?\s*(?:$|[.,;:!?。，；：！？)\]]|\s+(?:because|since|as)\b|因为|\s+[(\[]?[A-E][.:、)]))")
_NEGATIVE = {"not correct", "incorrect", "wrong", "false", "不正确", "错误", "不对", "错", "×", "✗"}
_CONCLUDE = re.compile(r"\b(?:therefore|thus|hence|so|in\s+conclusion|in\s+summary|overall)\b|\bthe\s+(?:best|"
                       r"most\s+appropriate|most\s+likely|correct)\b|故|因此|所以|综上|因而|最可能|最合适|首选|答案",
                       re.I)
_NEGATION = re.compile(r"\bnot\b|n['’]t\b|\brather\s+than\b|\binstead\s+of\b|\bexcept\b|不|非|排除", re.I)
_BARE = re.compile(r"^(?:(?i:option|choice)\s+|选项\s*)?[(\[]?(?P<L>[A-J])[)\]]?(?:[.:)。]\s*(?P<t>.*))?$", re.S)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_OPT_HEAD = re.compile(  # a line that starts discussing one option (raw text: full-width marks included)
    r"^[ \t>#\-•*]*(?:(?i:option|choice)\s*(?P<a>[A-E])(?![A-Za-z0-9])|选项\s*(?P<b>[A-E])"
    r"|(?P<c>[A-E])\s*(?:选项|项)|[(\[（【](?P<d>[A-E])[)\]）】]|(?P<e>[A-E])\s*[.、:：)）．](?![A-Za-z0-9]))"
    r"[*\s]*[:：.、)）\-–—]*\s*", re.M)
_OPT_END = re.compile(r"\n\s*\n|\n[\s*#>]*(?:(?i:final\s+answer|answer|conclusion|therefore|in\s+summary)\b"
                      r"|答案|结论|综上|故选|因此|所以)")


# --- helpers --------------------------------------------------------------------------------------
def _normalize(text: str) -> str:
    """Full-width to ASCII (NFKC), markdown emphasis and LaTeX dollars removed."""
    return re.sub(r"[*`$]+|__", "", unicodedata.normalize("NFKC", text))


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", _normalize(s).casefold()).strip(" .。!！")


def _option_map(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(options, Mapping):
        return {str(k).strip().upper(): _norm_text(str(v)) for k, v in options.items()}
    return {str(k).strip().upper(): "" for k in options}


def _named_option(rest: str, texts: Mapping[str, str]) -> str | None:
    """The letter whose option text ``rest`` begins with (longest, whole words), or None."""
    low, best = rest.casefold(), None
    for letter, t in texts.items():
        if t and low.startswith(t) and not re.match(r"[\w\u4e00-\u9fff]", low[len(t):len(t) + 1]):
            if best is None or len(t) > len(texts[best]):
                best = letter
    return best


def _line_rest(text: str, pos: int) -> str:
    end = text.find("\n", pos)
    return text[pos:] if end < 0 else text[pos:end]


def _tail_ok(m: re.Match[str], text: str, texts: Mapping[str, str]) -> bool:
    """Does what follows the letter end it? Lowercase letters need brackets or a strict ending."""
    rest, letter = _line_rest(text, m.end()), m.group("L")
    if "\n" in m.group(0):  # cue and letter on different lines: the letter must stand alone
        return bool(_ALONE.match(rest)) or _named_option(_SEP.sub("", rest, count=1), texts) == letter.upper()
    if (m.group("o") and m.group("c")) or _TAIL_STRICT.match(rest):
        return True
    if letter.islower():
        return False
    return bool(_TAIL_LOOSE.match(rest)) or _named_option(rest.strip(), texts) is not None


def _committed(text: str, start: int) -> bool:
    """False for "if the answer is A", "many students think the answer is A", "如果答案是A"."""
    clause_start = max((m.end() for m in _CLAUSE_END.finditer(text, max(0, start - 80), start)), default=0)
    return not _UNCOMMITTED.search(text, clause_start, start)


def _candidate(pattern: _Pattern, m: re.Match[str], text: str, texts: Mapping[str, str]) -> _Cand | None:
    kind, _, whole = pattern
    letter = m.group("L")
    if not whole and not _tail_ok(m, text, texts):
        return None
    if kind != "boxed" and not _committed(text, m.start()):
        return None
    if letter.islower() and kind != "boxed" and (whole or kind != "answer_is"):
        return None  # lowercase only in an explicit answer line
    letter, rest = letter.upper(), _line_rest(text, m.end())
    more = _MORE.match(rest)
    if more and more.group(1) != letter:
        end = m.end() + more.end()
        return _Cand(m.start(), end, (letter, more.group(1)), "hedge", text[m.start():end])
    named = _named_option(_SEP.sub("", rest, count=1), texts) if not whole else None
    at_line_start = not text[text.rfind("\n", 0, m.start()) + 1:m.start()].strip(" \t#>-•")
    kind = "final_line" if kind == "answer_is" and at_line_start and not whole else kind
    return _Cand(m.start(), m.end(), (letter,), kind, m.group(0).strip(), clash=named not in (None, letter))


def _explicit(text: str, texts: Mapping[str, str]) -> list[_Cand]:
    found: list[_Cand] = []
    for pattern in _PATTERNS:
        for m in pattern[1].finditer(text):
            cand = _candidate(pattern, m, text, texts)
            if cand is not None:
                found.append(cand)
    taken = [(c.start, c.end) for c in found]
    for rx in _TEXT_CUES:  # an answer cue followed by an option's text, without its letter
        for m in rx.finditer(text):
            letter = _named_option(_line_rest(text, m.end()).strip(), texts)
            if letter and not any(s <= m.end() < e or m.start() <= s < m.end() + 2 for s, e in taken):
                span = _line_rest(text, m.start()).strip()
                found.append(_Cand(m.start(), m.end(), (letter,), "option_text", span))
    return sorted(found, key=lambda c: c.start)


def _resolve(cands: list[_Cand], hedges: list[tuple[int, str]], valid: Mapping[str, str]) -> Extraction | None:
    """All explicit statements must agree; a hedge stands unless a statement follows it."""
    singles = [c for c in cands if len(c.letters) == 1]
    hedges = hedges + [(c.end, c.span) for c in cands if len(c.letters) > 1]
    for end, span in hedges:
        if not any(c.start >= end for c in singles):
            return Extraction(None, "none:hedge", span)
    if not singles:
        return None
    last = singles[-1]
    if any(c.clash for c in singles) or len({c.letters[0] for c in singles}) > 1:
        return Extraction(None, "none:conflict", last.span)
    if last.letters[0] not in valid:
        return Extraction(None, "none:out_of_range", last.span)
    return Extraction(last.letters[0], last.kind, last.span)


def _verdicts(text: str, valid: Mapping[str, str]) -> Extraction | None:
    judged: dict[str, set[bool]] = {}
    """Per-option verdicts ("A. 错误", "B: correct", "Option C is incorrect"); exactly one option judged correct."""
    for letter in "ABCDE":  # option text may sit between letter and verdict; re caches these few patterns
        t = re.escape(valid[letter]) if valid.get(letter) else "(?!)"
        rx = re.compile(rf"(?<![A-Za-z0-9])(?:(?:option|choice)\s+|选项\s*)?[(\[]?(?-i:{letter})[)\]]?\s*"
                        rf"(?:项|选项)?\s*(?:[.:、)=\-–—]\s*)?(?:{t}\s*)?(?:[-–—:,(]+\s*)?{_VERDICT}", re.I | re.M)
        for m in rx.finditer(text):
            judged.setdefault(letter, set()).add(m.group("v").lower() not in _NEGATIVE)
    if any(len(v) > 1 for v in judged.values()):
        return Extraction(None, "none:conflict", None)
    right = sorted(k for k, v in judged.items() if v == {True})
    if len(right) > 1:
        return Extraction(None, "none:conflict", ",".join(right))
    if len(right) == 1:
        span = " ".join(f"{k}:{'+' if v == {True} else '-'}" for k, v in sorted(judged.items()))
        ok = right[0] in valid
        return Extraction(right[0] if ok else None, "verdict_list" if ok else "none:out_of_range", span)
    return None


def _options_in(line: str, texts: Mapping[str, str]) -> set[str]:
    """Letters whose option text occurs in line, dropping ones found only inside a longer option's text."""
    low = line.casefold()
    spans = {k: (i, i + len(t)) for k, t in texts.items() if t and (i := low.find(t)) >= 0}
    return {k for k, (s, e) in spans.items()
            if not any(o != k and s2 <= s and e <= e2 and (e2 - s2) > (e - s) for o, (s2, e2) in spans.items())}


def _final_option_text(text: str, texts: Mapping[str, str]) -> Extraction | None:
    lines = [ln.strip(" \t#>-•") for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    whole = [k for k, t in texts.items() if t and _norm_text(last) == t]
    if len(whole) == 1:
        return Extraction(whole[0], "option_text", last)
    found = _options_in(last, texts)
    if len(found) == 1 and _CONCLUDE.search(last) and not _NEGATION.search(last):
        return Extraction(found.pop(), "option_text", last)
    return None


def _bare(text: str, texts: Mapping[str, str]) -> Extraction | None:
    m = _BARE.match(text.strip())
    if not m:
        return None
    letter, tail = m.group("L"), _norm_text(m.group("t") or "")
    if tail and tail != texts.get(letter):
        return None
    if letter not in texts:
        return Extraction(None, "none:out_of_range", m.group(0))
    return Extraction(letter, "bare_letter", m.group(0))


_ANSWER_KEYS = ("answer", "final_answer", "finalanswer", "answer_letter", "correct_answer", "correct_option",
                "selected_option", "choice", "option", "prediction", "答案", "最终答案", "正确答案", "选项")
_FENCE = re.compile(r"^\s*```[A-Za-z]*\s*\n?(.*?)\n?\s*```\s*$", re.S)
_JSON_DECODER = json.JSONDecoder()
_LOWER_LETTER = re.compile(r"^([(\[]?)([a-j])(?=[)\]]?(?:[.:)。]|$))")  # "(b)" in a JSON answer field is a letter


def _answer_field(obj: dict) -> object:
    keys = {str(k).strip().casefold().replace(" ", "_").replace("-", "_"): v for k, v in obj.items()}
    return next((keys[k] for k in _ANSWER_KEYS if k in keys), None)


def _structured_letter(obj: object, texts: Mapping[str, str]) -> Extraction | None:
    """The letter a JSON object's answer field names; None when it has no usable one."""
    if not isinstance(obj, dict):
        return None
    value = _answer_field(obj)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        return None
    value = _LOWER_LETTER.sub(lambda m: m.group(1) + m.group(2).upper(), _normalize(value).strip())
    m = _BARE.match(value)
    if m:
        letter, tail = m.group("L"), _norm_text(m.group("t") or "")
        if letter not in texts:
            return Extraction(None, "none:out_of_range", value)
        if not tail or tail == texts.get(letter) or not texts.get(letter):
            return Extraction(letter, "structured_json", value)
        return None
    named = [k for k, t in texts.items() if t and _norm_text(value) == t]
    return Extraction(named[0], "structured_json", value) if len(named) == 1 else None


def _whole_json(raw: str) -> object | None:
    """The JSON value a response consists of (bare, or alone in a code fence), else None."""
    body = raw.strip()
    fenced = _FENCE.match(body)
    body = fenced.group(1).strip() if fenced else body
    if not body.startswith("{"):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _embedded_json(raw: str, texts: Mapping[str, str]) -> Extraction | None:
    """JSON objects inside a text: every one with an answer field must name the same letter."""
    found: list[Extraction] = []
    pos = raw.find("{")
    for _ in range(50):
        if pos < 0:
            break
        try:
            obj, end = _JSON_DECODER.raw_decode(raw, pos)
        except ValueError:
            pos = raw.find("{", pos + 1)
            continue
        if (hit := _structured_letter(obj, texts)) is not None and hit.letter is not None:
            found.append(hit)
        pos = raw.find("{", end)
    letters = {f.letter for f in found}
    if len(letters) > 1:
        return Extraction(None, "none:conflict", " / ".join(str(f.span) for f in found))
    return found[-1] if found else None


# --- public API -----------------------------------------------------------------------------------
def split_think(text: str) -> tuple[str | None, str, bool]:
    """(think text or None, text outside think, think closed?). A lone ``</think>`` closes a think
    block that began before the text (DeepSeek-R1 templates put ``<think>`` in the prompt)."""
    close = text.rfind(_THINK_CLOSE)
    open_ = text.find(_THINK_OPEN)
    if close >= 0:
        head = text[:close]
        before = head[:open_] if 0 <= open_ else ""
        think = head[open_ + len(_THINK_OPEN):] if 0 <= open_ else head
        outside = before + text[close + len(_THINK_CLOSE):]
        return think.replace(_THINK_OPEN, "").strip(), outside.strip(), True
    if open_ >= 0:
        return text[open_ + len(_THINK_OPEN):].strip(), text[:open_].strip(), False
    return None, text, True


def extract_answer(response: str | None, options: Mapping[str, str] | Sequence[str], *,
                   finish_reason: str | None = None) -> Extraction:
    """The committed final answer letter of ``response``, or None with the reason (see module doc)."""
    if finish_reason == "length":  # first: a reasoning model cut while thinking leaves no content at all
        return Extraction(None, "none:truncated")
    if response is None or not response.strip():
        return Extraction(None, "none:empty")
    _, outside, closed = split_think(response)
    if not closed:
        return Extraction(None, "none:truncated")
    text, texts = _normalize(outside), _option_map(options)
    if not text.strip():
        return Extraction(None, "none:empty")
    whole = _whole_json(outside)
    if whole is not None:
        return _structured_letter(whole, texts) or Extraction(None, "none:no_answer_field", outside.strip()[:80])
    hedges = [(m.end(), m.group(0)) for m in _HEDGES.finditer(text)]
    decided = _resolve(_explicit(text, texts), hedges, texts)
    if decided is not None:
        return decided
    if refusal := _REFUSAL.search(text):
        return Extraction(None, "none:refusal", refusal.group(0))
    weak = _WEAK_HEDGE.search(text)
    if hedges or weak:
        return Extraction(None, "none:hedge", hedges[-1][1] if hedges else weak.group(0) if weak else None)
    for step in (_verdicts, _final_option_text, _bare):
        if (found := step(text, texts)) is not None:
            return found
    return _embedded_json(outside, texts) or Extraction(None, "none:no_match")


def parse_option_explanations(text: str, options: Mapping[str, str]) -> dict[str, str]:
    """Letter -> explanation for each option a CoT discusses on its own line ("A. ...", "B选项：...",
    "(C) ...", "选项D ...", "Option E: ..."); the first discussion of a letter wins."""
    think, outside, _ = split_think(text)
    return _explanations(outside, options) or (_explanations(think, options) if think else {})


def _explanations(text: str, options: Mapping[str, str]) -> dict[str, str]:
    heads = [(m, next(g for g in m.groups() if g)) for m in _OPT_HEAD.finditer(text)]
    out: dict[str, str] = {}
    for i, (m, letter) in enumerate(heads):
        stop = heads[i + 1][0].start() if i + 1 < len(heads) else len(text)
        body = text[m.end():stop]
        if (end := _OPT_END.search(body)) is not None:
            body = body[:end.start()]
        body = " ".join(body.replace("**", "").split())
        if letter in options and letter not in out and body:
            out[letter] = body
    return out
