"""Answer extraction: each kind on typical model outputs, normalisation, and bad configurations."""

import pytest

from lmfuse.errors import ConfigError, InputDataError
from lmfuse.vote.extract import AnswerExtractor, canonical_number, extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Q: 37+48= A: 85", "85"),  # zoo format: last number
        (" 85", "85"),
        ("First 3 apples, then 4. So the answer is 1,234 apples, not 5.", "1234"),
        ("The answer is: -7.", "-7"),
        ("37-48 is negative", "48"),  # a minus after a digit is an operator
        ("it costs $2.50 and then 3.0", "3"),
        ("the Answer is 085 and 12 later", "85"),
        ("I think −12", "-12"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_number_follows_the_eot_rule(text, expected):
    assert extract_answer(text, "number") == expected


def test_number_after_last_answer_is_phrase():
    text = "The answer is 3? No wait. The final answer is 4, because 2+2."
    assert extract_answer(text, "number") == "4"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Let me think... the answer is (C).", "C"),
        ("the answer is b", "B"),
        ("Between (A) and (D), I pick (D)", "D"),
        ("Answer: E", "E"),
        ("  c. ", "C"),
        ("A cat sat on a mat", None),  # the article "A" is not a choice
        ("the answer is (F)", None),
    ],
)
def test_choice(text, expected):
    assert extract_answer(text, "choice") == expected


def test_choice_custom_letters():
    assert extract_answer("the answer is (F)", "choice", choices="ABCDEF") == "F"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, no, maybe. The answer is No.", "no"),
        ("I would say YES", "yes"),
        ("Nobody knows", None),  # 'no' must be a word
    ],
)
def test_yesno(text, expected):
    assert extract_answer(text, "yesno") == expected


def test_boxed_nested_and_last():
    assert extract_answer(r"first \boxed{1} then \boxed{\frac{1}{2}}", "boxed") == r"\frac{1}{2}"
    assert extract_answer(r"so $\boxed{ 042 }$", "boxed") == "42"
    assert extract_answer(r"unbalanced \boxed{1", "boxed") is None
    assert extract_answer(r"\boxed{7} and 9", "auto") == "7"
    assert extract_answer("no box, 9", "auto") == "9"


def test_phrase():
    assert extract_answer("Hmm. The answer is Paris.\nMore text", "phrase") == "paris"
    assert extract_answer("the answer is  New   York City. Yes.", "phrase") == "new york city"
    assert extract_answer("the answer is 1,000.", "phrase") == "1000"
    assert extract_answer("no phrase here", "phrase") is None


def test_regex_group_or_match_last_occurrence():
    assert extract_answer("Final: a\nFinal: b", "regex", pattern=r"Final: (\w+)") == "b"
    assert extract_answer("x=3 y=4", "regex", pattern=r"\d") == "4"
    assert extract_answer("nothing", "regex", pattern=r"\d") is None


def test_canonical_number():
    assert canonical_number("2.50") == "2.5"
    assert canonical_number("-0") == "0"
    assert canonical_number("1,234") == "1234"
    assert canonical_number("abc") is None
    assert canonical_number("inf") is None


def test_bad_configs_are_reported_together():
    with pytest.raises(ConfigError) as err:
        AnswerExtractor("regexp", pattern="(", choices="12")
    msg = str(err.value)
    assert "kind" in msg and "not a valid regular expression" in msg and "choices" in msg
    assert len(err.value.problems) == 4
    with pytest.raises(ConfigError, match="needs a pattern"):
        AnswerExtractor("regex")
    with pytest.raises(ConfigError, match="only used with kind 'regex'"):
        AnswerExtractor("number", pattern=r"\d")


def test_non_string_input_is_a_clear_error():
    with pytest.raises(InputDataError, match="expects a string, found int"):
        extract_answer(42)
