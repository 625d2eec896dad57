"""Scorers for evaluation tasks: text and number matching, GSM8K, HumanEval, pass@k, gap closed.

Everything here is a pure function of its arguments (``run_humaneval`` runs a subprocess but keeps
no state). Scores are floats in ``[0, 1]`` so that a task's mean score is its accuracy.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata

# A number: optional sign, digits with optional thousands commas, optional decimals. The look-behind
# keeps "x2" and "v1.5" from counting and stops "16-3" from reading as 16 and -3 (a minus right after
# a word character is an operator, not a sign). The look-ahead stops "1,2345" reading as 1,234.
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)"
    r"|(?<![\w.])[-+]?\.\d+"
)
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_FILLER = re.compile(
    r"^(?:(?:final |short |correct )?answer(?: is)?|it is|its|it was|that is|thats|"
    r"i think|i believe)\s+"
)
_TIE_WORDS = ("tie", "tied", "dead heat")
DEFAULT_CANDIDATES = ("Harris", "Trump")
"""Names :func:`leader_match` looks for when the caller names no candidates (the 538 poll list)."""


# --------------------------------------------------------------------------- text


def normalize_text(s: str) -> str:
    """Normalize text for lenient comparison.

    Lower-cases, applies Unicode NFKC, turns punctuation into spaces, drops the articles
    ``a``/``an``/``the`` and collapses whitespace (SQuAD-style).

    Args:
        s: Any text.

    Returns:
        The normalized text, e.g. ``"  The  Harris-Walz ticket!"`` -> ``"harris walz ticket"``.
    """
    s = unicodedata.normalize("NFKC", s).lower()
    s = "".join(" " if (ch in string.punctuation or unicodedata.category(ch).startswith("P")) else ch for ch in s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _strip_filler(norm: str) -> str:
    """Drop leading "answer is", "it was", ... from normalized text (repeatedly)."""
    while True:
        stripped = _FILLER.sub("", norm, count=1)
        if stripped == norm:
            return norm
        norm = stripped


def _starts_with_words(text: str, prefix: str) -> bool:
    """True if normalized ``text`` begins with the whole words of normalized ``prefix``."""
    return bool(prefix) and (text == prefix or text.startswith(prefix + " "))


def exact_match(pred: str, ref: str) -> float:
    """Lenient exact match: the reference is the whole prediction or its first answer.

    Case, whitespace, punctuation and articles are ignored. The prediction also matches when it
    *starts* with the reference as whole words, after leading filler such as "The answer is":
    ``"Harris, by 3 points"`` matches ``"Harris"``; ``"Trump, not Harris"`` does not;
    ``"Harrison"`` does not.

    Args:
        pred: The model's answer.
        ref: The reference answer.

    Returns:
        1.0 on a match, else 0.0 (also 0.0 when the reference is empty).
    """
    p, r = normalize_text(pred), normalize_text(ref)
    if not r:
        return 0.0
    if p == r:
        return 1.0
    return 1.0 if _starts_with_words(p, r) or _starts_with_words(_strip_filler(p), r) else 0.0


def _name_keys(name: str) -> tuple[str, ...]:
    """Normalized strings that identify a candidate in text: the full name and, for multi-word
    names, the last word (``"Kamala Harris"`` -> ``("kamala harris", "harris")``)."""
    norm = normalize_text(name)
    if norm in _TIE_WORDS:
        return _TIE_WORDS
    words = norm.split()
    return (norm, words[-1]) if len(words) > 1 else (norm,)


def _first_position(text: str, keys: tuple[str, ...]) -> int | None:
    """Earliest whole-word position of any key in normalized ``text``."""
    found = [m.start() for k in keys if k for m in [re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text)] if m]
    return min(found) if found else None


def leader_match(pred: str, ref: str, candidates: list[str] | tuple[str, ...] | None = None) -> float:
    """Score a "who is ahead" answer by which candidate the prediction names first.

    The candidates are ``candidates`` (default :data:`DEFAULT_CANDIDATES`) plus the reference, and
    a tie (``tie``/``tied``/``dead heat``) counts as one more. A reference that contains a
    candidate's last name (``"Kamala Harris"``) stands for that candidate. ``"Harris leads Trump"``
    matches ``Harris``; ``"Trump leads Harris"`` does not; no candidate named scores 0.

    Args:
        pred: The model's answer.
        ref: The reference leader, e.g. ``"Harris"`` or ``"tie"``.
        candidates: Candidate names to look for.

    Returns:
        1.0 if the first candidate named in ``pred`` is the reference, else 0.0.
    """
    names = list(candidates if candidates is not None else DEFAULT_CANDIDATES) + ["tie"]
    ref_norm = normalize_text(ref)
    if not ref_norm:
        return 0.0
    # The reference is whichever known candidate it names, else a candidate of its own.
    ref_id = next((n for n in names if any(_first_position(ref_norm, (k,)) is not None for k in _name_keys(n))), None)
    if ref_id is None:
        ref_id = ref
        names.append(ref)
    text = normalize_text(pred)
    best_name, best_pos = None, None
    for name in names:
        pos = _first_position(text, _name_keys(name))
        if pos is not None and (best_pos is None or pos < best_pos):
            best_name, best_pos = name, pos
    return 1.0 if best_name is not None and normalize_text(best_name) == normalize_text(ref_id) else 0.0


# --------------------------------------------------------------------------- numbers


def _parse_number(token: str) -> float:
    return float(token.replace(",", ""))


def first_number(text: str) -> float | None:
    """The first number written in ``text``.

    Handles thousands commas (``"1,200"`` -> 1200), signs and decimals (``"-3.5"``), percent and
    currency signs (``"48%"`` -> 48, ``"$18"`` -> 18) and Unicode minus signs. A hyphen right after a
    word character is not a sign (``"16-3"`` -> 16).

    Args:
        text: Any text.

    Returns:
        The number as a float, or None if there is none.
    """
    m = _NUMBER.search(text.translate(_MINUS_SIGNS))
    return _parse_number(m.group()) if m else None


def _all_numbers(text: str) -> list[float]:
    return [_parse_number(m.group()) for m in _NUMBER.finditer(text.translate(_MINUS_SIGNS))]


def _as_number(ref: str | float | int) -> float | None:
    if isinstance(ref, bool):
        return None
    if isinstance(ref, (int, float)):
        return float(ref)
    return first_number(ref)


def _close(a: float, b: float, rel_tol: float, abs_tol: float) -> bool:
    # The 1e-9 slack absorbs binary rounding, so that 47.55 vs 47.5 with abs_tol 0.05 matches.
    return abs(a - b) <= max(rel_tol * max(abs(a), abs(b)), abs_tol) + 1e-9


def numeric_match(pred: str, ref: str | float | int, rel_tol: float = 0.0, abs_tol: float = 0.0) -> float:
    """Compare the first number in a prediction with a reference number.

    With the defaults the numbers must be equal (up to float rounding), e.g. sample sizes;
    poll shares and margins use ``abs_tol=0.05``.

    Args:
        pred: The model's answer, e.g. ``"About 1,200 people."``.
        ref: The reference, a number or text whose first number is used.
        rel_tol: Relative tolerance.
        abs_tol: Absolute tolerance.

    Returns:
        1.0 if both numbers exist and agree within the tolerance, else 0.0.
    """
    p, r = first_number(pred), _as_number(ref)
    if p is None or r is None:
        return 0.0
    return 1.0 if _close(p, r, rel_tol, abs_tol) else 0.0


def is_number(text: str) -> bool:
    """True if ``text`` is a single number (optionally with ``%`` or a leading currency sign).

    Args:
        text: Any text.

    Returns:
        Whether the whole text is one number, e.g. ``"1,200"``, ``"-3.5"``, ``"48%"``, ``"$18"``.
    """
    t = text.strip().translate(_MINUS_SIGNS)
    return bool(re.fullmatch(r"[$€£]?\s*(?:" + _NUMBER.pattern + r")\s*%?", t))


# --------------------------------------------------------------------------- junk after an answer

_GLUED_AFTER_NUMBER = re.compile(r"[\d%]([^\W\d_]+)")  # "49%ucha", "1275uchaics" (letters glued to a number)
_NUMBER_SUFFIXES = frozenset({"st", "nd", "rd", "th", "s", "k", "m", "pp", "pt", "pts"})  # 1st, 1990s, 5k, 3pp
_GLUED_PERCENT = re.compile(r"[^\W\d_]%")  # "Trump%"
_WORD_SUFFIXES = frozenset(
    {"s", "es", "ed", "d", "ing", "r", "rs", "er", "ers", "n", "an", "ans", "ian", "ians", "ns", "ly"}
)
_LETTERS = re.compile(r"[^\W\d_]+")
_ASKING = frozenset({"Question", "Answer", "What", "Which", "When", "Where", "Name", "During", "Over", "From", "This"})


def junk_in(completion: str, prompt: str = "", reference: str = "") -> bool:
    """Whether an answer carries text that is not words glued to it (``45% to 49%ucha``, ``Floridaucha``,
    `` 1275uchaics``, ``Trump%``): the eval's junk rate.

    A heuristic on the shape of the text (no dictionary), so that it holds for any task:

    * letters glued right after a number or ``%``, other than ordinal and unit suffixes (``1st``,
      ``1990s``, ``5k``);
    * ``%`` glued right after letters;
    * a name (a capitalised word of the prompt, or a word of the reference answer) with letters glued
      on that are not a common English ending (``Floridaucha``; ``Floridians`` is fine);
    * the replacement character, control characters (a newline or tab aside) or letters of a script
      other than Latin (a half token, or another language's subword).

    Args:
        completion: The generated answer (already cut at the task's stop strings).
        prompt: The prompt it answers (its words are words).
        reference: The reference answer (its words are words).
    """
    for m in _GLUED_AFTER_NUMBER.finditer(completion):
        if m.group(1).lower() not in _NUMBER_SUFFIXES:
            return True
    if _GLUED_PERCENT.search(completion):
        return True
    words = {w.lower() for w in _LETTERS.findall(prompt + " " + reference)}
    stems = {w.lower() for w in _LETTERS.findall(reference) if len(w) >= 4}
    stems |= {w.lower() for w in _LETTERS.findall(prompt) if len(w) >= 4 and w[0].isupper() and w not in _ASKING}
    for word in _LETTERS.findall(completion):
        lower = word.lower()
        if lower in words:
            continue
        if any(lower.startswith(stem) and lower[len(stem) :] not in _WORD_SUFFIXES for stem in stems):
            return True
    for char in completion:
        if char == "\ufffd" or (unicodedata.category(char) == "Cc" and char not in "\n\t\r"):
            return True
        if char.isalpha() and not unicodedata.name(char, "").startswith("LATIN"):
            return True
    return False


# --------------------------------------------------------------------------- QA and polls

POLL_KINDS = ("leader", "share", "sample_size", "margin", "dates", "population", "pollster", "place")
"""Question kinds written by ``proxytool data polls``."""


def qa_score(pred: str, ref: str) -> float:
    """Score a short answer: numbers compared as numbers, anything else by :func:`exact_match`.

    Args:
        pred: The model's answer.
        ref: The reference answer.

    Returns:
        1.0 or 0.0.
    """
    if is_number(ref):
        return numeric_match(pred, ref)
    return exact_match(pred, ref)


def polls_score(pred: str, ref: str, kind: str | None, candidates: list[str] | tuple[str, ...] | None = None) -> float:
    """Score an answer to a poll question by its value, whatever the wording.

    * ``leader``: :func:`leader_match` (the first candidate named must be the reference; a full
      name such as "Kamala Harris" names Harris).
    * ``share``: first number within 0.05 points (``47.3`` == ``"47.3%"`` == ``"47.3 percent"``).
    * ``margin``: like ``share`` but on absolute values (the margin is ``|Harris - Trump|``);
      a zero margin is also answered by "tie"; a reference that names a candidate (``"Harris +3"``)
      requires that leader too.
    * ``sample_size``: first number, exactly (``"1,200"`` == ``1200``).
    * ``dates``: :func:`dates_match`; ``population``: :func:`population_match`;
      ``pollster``: :func:`pollster_match`; ``place``: :func:`place_match`.
    * anything else: :func:`qa_score`.

    Args:
        pred: The model's answer.
        ref: The reference answer.
        kind: The question kind.
        candidates: Candidate names for ``leader`` questions (default Harris and Trump).

    Returns:
        1.0 or 0.0.
    """
    if kind == "leader":
        return leader_match(pred, ref, candidates)
    if kind == "share":
        return numeric_match(pred, ref, abs_tol=0.05)
    if kind == "sample_size":
        return numeric_match(pred, ref)
    if kind == "margin":
        return _margin_match(pred, ref, candidates)
    if kind == "dates":
        return dates_match(pred, ref)
    if kind == "population":
        return population_match(pred, ref)
    if kind == "pollster":
        return pollster_match(pred, ref)
    if kind == "place":
        return place_match(pred, ref)
    return qa_score(pred, ref)


def _margin_match(pred: str, ref: str, candidates) -> float:
    p, r = first_number(pred), _as_number(ref)
    if r == 0 and re.search(r"\b(?:tie|tied|dead heat|even)\b", normalize_text(pred)):
        return 1.0
    if p is None or r is None or not _close(abs(p), abs(r), 0.0, 0.05):
        return 0.0
    named = re.sub(r"\b(?:points?|pts?|pp|percent(?:age)?|tie|tied)\b", " ", normalize_text(ref))
    if re.search(r"[^\W\d_]", named):  # the reference names a leader as well
        return leader_match(pred, ref, candidates)
    return 1.0


_MONTH_NAMES = {
    name: i + 1
    for i, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        )
    )
    for name in names
}
_MONTH_RE = "|".join(sorted(_MONTH_NAMES, key=len, reverse=True))
_DAY_SPAN = re.compile(
    rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b"
    rf"(?:\s*(?:-|–|—|to|through|until|and)\s*(?:({_MONTH_RE})\.?\s+)?(\d{{1,2}})(?:st|nd|rd|th)?\b(?!\s*:))?",
    re.IGNORECASE,
)
_ISO_DATE = re.compile(r"\b\d{4}-(\d{2})-(\d{2})\b")


def dates_in(text: str) -> list[tuple[int, int]]:
    """The (month, day) pairs written in ``text``, in order.

    Understands ``"October 1 to October 3, 2024"``, ``"Oct 1-3"``, ``"Sep 28-Oct 2"``, ``"Oct. 1st"``
    and ISO ``2024-10-01``. Years are ignored (every poll is from 2024).
    """
    found: list[tuple[int, tuple[int, int]]] = []
    for m in _DAY_SPAN.finditer(text):
        month = _MONTH_NAMES[m.group(1).lower()]
        found.append((m.start(), (month, int(m.group(2)))))
        if m.group(4):
            end_month = _MONTH_NAMES[m.group(3).lower()] if m.group(3) else month
            found.append((m.start(4), (end_month, int(m.group(4)))))
    for m in _ISO_DATE.finditer(text):
        found.append((m.start(), (int(m.group(1)), int(m.group(2)))))
    return [d for _, d in sorted(found)]


def dates_match(pred: str, ref: str) -> float:
    """Score a "when was the poll" answer: the first dates named must be the reference's start and end.

    ``"Oct 1-3, 2024"`` matches ``"October 1 to October 3, 2024"``; a one-day reference needs that
    day first (and no different end day after it). A year is optional, but a wrong one fails
    (``"October 1 to October 3, 2020"``).
    """
    want, got = dates_in(ref), dates_in(pred)
    if not want or not got:
        return 0.0
    ref_years, pred_years = re.findall(r"\b(?:19|20)\d\d\b", ref), re.findall(r"\b(?:19|20)\d\d\b", pred)
    if ref_years and pred_years and pred_years[0] != ref_years[-1]:
        return 0.0  # a year, when the answer gives one, must be the poll's
    if len(want) == 1 or want[0] == want[-1]:
        return 1.0 if got[0] == want[0] and (len(got) == 1 or got[1] == want[0]) else 0.0
    return 1.0 if got[:2] == [want[0], want[-1]] else 0.0


_POPULATION_WORDS = (("likely", "lv"), ("registered", "rv"), ("adult", "a"), ("voter", "v"))


def _population_code(text: str) -> str | None:
    norm = normalize_text(text)
    hits = []
    for word, code in _POPULATION_WORDS:
        m = re.search(rf"\b{word}s?\b", norm)
        if m:
            hits.append((m.start(), code))
    if not hits:
        return None
    hits.sort()
    first = hits[0][1]
    # "likely voters": "likely" comes first anyway; a bare "voters" counts only when no qualifier is given
    return first


def population_match(pred: str, ref: str) -> float:
    """Score a population answer by the population it names first: likely voters, registered voters,
    adults or (all) voters; ``"LV"``/``"RV"`` count too."""
    norm = normalize_text(pred).split()
    abbrev = {"lv": "lv", "rv": "rv"}.get(norm[0]) if norm else None
    got = abbrev or _population_code(pred)
    return 1.0 if got is not None and got == _population_code(ref) else 0.0


_GENERIC_POLLSTER_WORDS = {
    "and",
    "of",
    "for",
    "poll",
    "polls",
    "polling",
    "research",
    "group",
    "strategies",
    "strategy",
    "college",
    "university",
    "institute",
    "center",
    "associates",
    "inc",
    "llc",
    "co",
    "news",
    "survey",
    "surveys",
    "insights",
    "analytics",
    "partners",
    "consulting",
    "opinion",
    "public",
    "policy",
}


def _pollster_words(text: str) -> list[str]:
    return normalize_text(text.replace("&", " and ")).split()


def pollster_match(pred: str, ref: str) -> float:
    """Score a pollster answer: the reference name appears in the answer (``"Marist College poll"``),
    or the answer's name is a distinctive part of it (``"Marist"`` for ``"Marist College"``).

    Case, punctuation, ``&``/``and`` and articles are ignored; the answer's name is its text up to
    the first comma or full stop.
    """
    r = " ".join(_pollster_words(ref))
    p_all = " ".join(_pollster_words(pred))
    if not r:
        return 0.0
    if r == p_all or f" {r} " in f" {p_all} ":
        return 1.0
    head = " ".join(_pollster_words(re.split(r"[,.;\n]", _strip_filler_text(pred), maxsplit=1)[0]))
    if not head or not set(head.split()) - _GENERIC_POLLSTER_WORDS:
        return 0.0
    return 1.0 if f" {head} " in f" {r} " else 0.0


def _strip_filler_text(text: str) -> str:
    return re.sub(r"^\s*(?:it was|the answer is|answer:?|by)\s+", "", text, flags=re.IGNORECASE)


_NATIONAL = ("national", "nationwide", "nation", "united states", "us", "usa", "america", "country", "nationally")


def place_match(pred: str, ref: str) -> float:
    """Score a place answer: a state (or district, "Nebraska CD-2") must be named as in the reference;
    a national poll is answered by "national", "nationwide", "the United States", ...; the first place
    named counts, so "Pennsylvania, not Ohio" matches Pennsylvania."""
    r, p = normalize_text(ref), normalize_text(pred)
    if not r or not p:
        return 0.0
    if r in ("national", "nationwide"):
        first = p.split()[0] if p.split() else ""
        return 1.0 if any(_starts_with_words(p, n) for n in _NATIONAL) or first in _NATIONAL else 0.0
    return 1.0 if _starts_with_words(p, r) or _starts_with_words(_strip_filler(p), r) or f" {r} " in f" {p} " else 0.0


# --------------------------------------------------------------------------- GSM8K

_ANSWER_IS = re.compile(r"the (?:final )?answer is", re.IGNORECASE)


def gsm8k_final_number(text: str) -> float | None:
    """The final answer of a GSM8K solution.

    The first number after ``####`` if present, else the first number after "The answer is",
    else the last number in the text.

    Args:
        text: A reference solution or a model completion.

    Returns:
        The number, or None if the text has none.
    """
    if "####" in text:
        n = first_number(text.split("####", 1)[1])
        if n is not None:
            return n
    m = _ANSWER_IS.search(text)
    if m:
        n = first_number(text[m.end() :])
        if n is not None:
            return n
    numbers = _all_numbers(text)
    return numbers[-1] if numbers else None


def gsm8k_score(completion: str, reference_answer: str) -> float:
    """Score a GSM8K completion against the reference solution (or a bare reference number).

    Args:
        completion: The model's worked solution.
        reference_answer: The dataset's ``answer`` field (``... #### 18``) or just ``"18"``.

    Returns:
        1.0 if the final numbers agree, else 0.0.
    """
    p, r = gsm8k_final_number(completion), gsm8k_final_number(reference_answer)
    if p is None or r is None:
        return 0.0
    return 1.0 if _close(p, r, 0.0, 1e-6) else 0.0


# --------------------------------------------------------------------------- HumanEval


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program :func:`run_humaneval` executes: prompt + completion + test + ``check(entry_point)``.

    Args:
        prompt: The HumanEval prompt (signature and docstring).
        completion: The generated function body (appended verbatim).
        test: The task's test code, which defines ``check(candidate)``.
        entry_point: The name of the function under test.

    Returns:
        Python source text.

    Raises:
        ValueError: If ``entry_point`` is not an identifier.
    """
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"


def run_humaneval_detailed(
    prompt: str, completion: str, test: str, entry_point: str, timeout: float = 5.0, max_memory_mb: int = 1024
) -> tuple[bool, str]:
    """Like :func:`run_humaneval`, also saying why a program failed.

    Returns:
        ``(passed, reason)``; reason is ``"passed"``, ``"timed out"`` or the last line of the
        child's stderr (e.g. ``"AssertionError"``).
    """
    from proxytool.evaluation.sandbox import run_python

    return run_python(humaneval_program(prompt, completion, test, entry_point), timeout, max_memory_mb)


def run_humaneval(prompt: str, completion: str, test: str, entry_point: str, timeout: float = 5.0) -> bool:
    """Run a HumanEval completion against the task's tests in a guarded subprocess.

    The program ``prompt + completion + test + check(entry_point)`` runs in
    :func:`proxytool.evaluation.sandbox.run_python` (namespaces where the OS offers them, resource
    limits, a private temp HOME; see that module for what it does and does not protect against).

    Args:
        prompt: The HumanEval prompt (signature and docstring).
        completion: The generated code, appended verbatim to the prompt.
        test: The task's test code, which defines ``check(candidate)``.
        entry_point: The name of the function under test.
        timeout: Wall-clock seconds before the process group is killed.

    Returns:
        True if all tests passed, False on failure, error or timeout.
    """
    return run_humaneval_detailed(prompt, completion, test, entry_point, timeout)[0]


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str) -> str:
    """The code in a completion: the first fenced block if the completion is Markdown, else as is.

    Chat models often answer with a ```` ```python ```` block holding the whole function; appended
    after the prompt, a redefinition of the function replaces the empty stub.

    Args:
        completion: Generated text.

    Returns:
        Code to append to the prompt.
    """
    if completion.lstrip().startswith("```") or re.search(
        r"^```[ \t]*(?:python3?|py)[ \t]*$", completion, re.MULTILINE | re.IGNORECASE
    ):
        m = _FENCE.search(completion)
        if m:
            return "\n" + m.group(1)
    return completion


# --------------------------------------------------------------------------- aggregates


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al., 2021): ``1 - C(n-c, k) / C(n, k)``.

    Args:
        n: Samples generated for the problem.
        c: How many of them passed.
        k: The k in pass@k.

    Returns:
        The estimated probability that at least one of k samples passes.

    Raises:
        ValueError: Unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # Numerically stable product form from the Codex paper.
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def gap_closed(base: float, proxy: float, target: float) -> float | None:
    """Fraction of the base-to-target gap that the proxy closes: ``(proxy - base) / (target - base)``.

    Args:
        base: Score of the base model alone.
        proxy: Score of the proxy-tuned base.
        target: Score to close the gap to (the directly tuned model, or the expert).

    Returns:
        The fraction (1.0 = as good as the target; may be negative or above 1), or None when
        ``target == base`` (no gap to close).
    """
    if math.isclose(target, base, rel_tol=0.0, abs_tol=1e-12):
        return None
    return (proxy - base) / (target - base)


def choice_accuracy(scores: list[float], correct: list[int]) -> float:
    """Accuracy of one multiple-choice answer chosen by the highest score.

    Ties for the highest score are broken uniformly at random *in expectation*: the result is the
    fraction of tied choices that are correct, so a model that scores every choice the same earns
    ``1/len(scores)``, not credit for the dataset's habit of listing the right answer first.
    NaN scores never win.

    Args:
        scores: One score per choice (e.g. log-likelihood of the choice given the prompt).
        correct: Indices of the correct choices.

    Returns:
        1.0 if the best-scoring choice is correct, 0.0 if not, a fraction on ties.

    Raises:
        ValueError: If ``scores`` is empty.
    """
    if not scores:
        raise ValueError("choice_accuracy needs at least one score")
    clean = [-math.inf if (s is None or math.isnan(s)) else float(s) for s in scores]
    best = max(clean)
    tied = [i for i, s in enumerate(clean) if s == best]
    right = set(correct)
    return sum(1 for i in tied if i in right) / len(tied)
