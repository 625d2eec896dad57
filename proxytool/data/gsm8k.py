"""GSM8K solutions as text: the few-shot answer style that training data and the evaluation share."""

import re

_CALC = re.compile(r"<<[^<>]*>>")


def gsm8k_final_answer(solution: str) -> str:
    """The reference number of a GSM8K solution, without thousands commas (``"#### 2,125"`` -> ``"2125"``)."""
    return solution.split("####", 1)[1].strip().replace(",", "")


def gsm8k_answer_text(solution: str) -> str:
    """A GSM8K solution in the few-shot style: reasoning without ``<<calc>>``, then "The answer is N."."""
    reasoning = _CALC.sub("", solution.split("####", 1)[0]).strip()
    reasoning = re.sub(r"\n\s*\n+", "\n", reasoning)  # a blank line would look like a new example
    return f"{reasoning}\nThe answer is {gsm8k_final_answer(solution)}."
