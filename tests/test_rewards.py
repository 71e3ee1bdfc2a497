"""Tests for jigsaw_lib.answers (the parser) and jigsaw_lib.rewards (the TRL reward functions)."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jigsaw_lib.answers import CONVENTION, ParsedAnswer, completion_text, format_answer, parse_answer
from jigsaw_lib.rewards import JIGSAW_REWARDS, exact_reward, format_reward, hit_reward

SOL = [2, 1, 4, 3, 6, 5, 8, 9, 7]  # a 3x3 solution


def rewards(text, solution=SOL, answer_format=None):
    """(hit, exact, format) for one completion."""
    kwargs = {"solution": [solution]}
    if answer_format is not None:
        kwargs["answer_format"] = [answer_format]
    return tuple(f([text], **kwargs)[0] for f in JIGSAW_REWARDS)


# -----------------------------------------------------------------------------
# answers.py


def test_convention_sentence():
    assert CONVENTION == "If the tile now at position X belongs at position Y, write Y at position X."


def test_format_answer():
    assert format_answer([2, 1, 4, 3]) == "<answer>2 1 4 3</answer>"
    assert format_answer([2, 1], think="swap") == "<think>swap</think><answer>2 1</answer>"
    with pytest.raises(ValueError, match="permutation"):
        format_answer([1, 1])
    with pytest.raises(ValueError, match="tags"):
        format_answer([1, 2], think="x</think>")


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 36).flatmap(lambda n: st.permutations(range(1, n + 1))), st.none() | st.text())
def test_format_parse_roundtrip(perm, think):
    n = len(perm)
    if think is not None and any(t in think for t in ("<think>", "</think>", "<answer>", "</answer>")):
        return
    parsed = parse_answer(format_answer(perm, think), n)
    assert parsed == ParsedAnswer(think=think, numbers=tuple(perm))


@pytest.mark.parametrize(
    "text, numbers, think",
    [
        ("<answer>2 1 4 3</answer>", (2, 1, 4, 3), None),
        ("  <answer>2,1,4,3</answer>\n", (2, 1, 4, 3), None),
        ("<answer> 2, 1,\n4 3 </answer>", (2, 1, 4, 3), None),
        ("<answer>2 1\n4 3</answer>", (2, 1, 4, 3), None),  # Jigsaw-R1's grid layout
        ("<think>a\nb</think>\n<answer>2 1 4 3</answer>", (2, 1, 4, 3), "a\nb"),
        ("<think></think><answer>1 2 3 4</answer>", (1, 2, 3, 4), ""),
    ],
)
def test_parse_valid(text, numbers, think):
    assert parse_answer(text, 4) == ParsedAnswer(think=think, numbers=numbers)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2 1 4 3",  # no tags
        "<answer></answer>",
        "<answer> </answer>",
        "<answer>2 1 4 3</answer><answer>2 1 4 3</answer>",  # repeated
        "<answer><answer>2 1 4 3</answer></answer>",  # nested
        "<answer>2 1 4 3",  # unclosed
        "</answer>2 1 4 3<answer>",  # reversed
        "<answer>2 1 4 3</answer> done",  # text after
        "The answer is <answer>2 1 4 3</answer>",  # text before
        "<think>x</think>y<answer>2 1 4 3</answer>",  # text between
        "<answer>2 1 4 3</answer><think>x</think>",  # wrong order
        "<think>x<answer>1 2 3 4</answer></think><answer>2 1 4 3</answer>",  # tags inside think
        "<think>x</think><think>y</think><answer>2 1 4 3</answer>",
        "<answer>2 2 4 3</answer>",  # duplicate
        "<answer>2 1 4 5</answer>",  # out of range
        "<answer>0 1 2 3</answer>",
        "<answer>2 1 4</answer>",  # too few
        "<answer>2 1 4 3 5</answer>",  # too many
        "<answer>+2 1 4 3</answer>",  # sign
        "<answer>-2 1 4 3</answer>",
        "<answer>2.0 1 4 3</answer>",  # decimal
        "<answer>02 1 4 3</answer>",  # leading zero
        "<answer>2;1;4;3</answer>",  # other separator
        "<answer>[2, 1, 4, 3]</answer>",
        "<answer>\u0662 1 4 3</answer>",  # Arabic-Indic two: \d would match it
        "<answer>\uff12 1 4 3</answer>",  # full-width two
        "<answer>2\u00a01 4 3</answer>",  # non-breaking space
        "<answer>2\x001 4 3</answer>",  # NUL byte
        "<ANSWER>2 1 4 3</ANSWER>",
        "\u3000<answer>2 1 4 3</answer>",  # only ASCII whitespace may surround the answer
    ],
)
def test_parse_rejects(text):
    assert parse_answer(text, 4) is None
    assert rewards(text, [2, 1, 4, 3]) == (0.0, 0.0, 0.0)


def test_non_ascii_digits_rejected():
    sol = [10, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert parse_answer(format_answer(sol), 10).numbers == tuple(sol)
    for ten in ("1\u0660", "\u0661\u0660", "1\uff10"):  # Arabic-Indic and full-width digits
        assert parse_answer(format_answer(sol).replace("10", ten), 10) is None


def test_require_think():
    assert parse_answer("<answer>2 1 4 3</answer>", 4, require_think=True) is None
    assert parse_answer("<think>t</think><answer>2 1 4 3</answer>", 4, require_think=True).think == "t"


def test_huge_number_is_fast():
    text = "<answer>" + "9" * 5000 + " 1 2 3</answer>"
    start = time.perf_counter()
    assert parse_answer(text, 4) is None
    assert parse_answer("<answer>" + "1" * 100_000 + "</answer>", 4) is None
    assert parse_answer("<answer>1" + " " * 100_000 + "x</answer>", 4) is None
    assert time.perf_counter() - start < 0.5


def test_parse_answer_bad_n_tiles():
    with pytest.raises(ValueError, match="n_tiles"):
        parse_answer("<answer>1</answer>", 0)


def test_completion_text():
    text = "<answer>2 1</answer>"
    assert completion_text(text) == text
    assert completion_text([{"role": "assistant", "content": text}]) == text
    parts = [{"type": "text", "text": "<answer>2 "}, {"type": "image"}, {"type": "text", "text": "1</answer>"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == text
    with pytest.raises(TypeError, match="string or a list"):
        completion_text(42)


# -----------------------------------------------------------------------------
# rewards.py


def test_correct_answer_earns_everything():
    assert rewards(format_answer(SOL)) == (1.0, 1.0, 1.0)
    assert rewards(format_answer(SOL, "I think"), answer_format="think") == (1.0, 1.0, 1.0)


def test_partial_answer_earns_hit_fraction():
    wrong = [1, 2, 4, 3, 6, 5, 8, 9, 7]  # first two positions swapped: 7 of 9 right
    hit, exact, fmt = rewards(format_answer(wrong))
    assert hit == pytest.approx(7 / 9)
    assert (exact, fmt) == (0.0, 1.0)


def test_think_format_requires_think_block():
    assert rewards(format_answer(SOL), answer_format="think") == (0.0, 0.0, 0.0)
    assert rewards(format_answer(SOL), answer_format="direct") == (1.0, 1.0, 1.0)


def test_conversational_completions_and_extra_kwargs():
    completions = [
        [{"role": "assistant", "content": format_answer([2, 1, 4, 3])}],
        [{"role": "assistant", "content": [{"type": "text", "text": format_answer([1, 2, 3, 4])}]}],
    ]
    kwargs = dict(
        solution=[[2, 1, 4, 3], [2, 1, 4, 3]],
        prompts=[[{"role": "user", "content": "p"}]] * 2,
        completion_ids=[[1], [2]],
        trainer_state=None,
        rows=[2, 2],
        image=[None, None],
    )
    assert hit_reward(completions, **kwargs) == [1.0, 0.0]
    assert exact_reward(completions, **kwargs) == [1.0, 0.0]
    assert format_reward(completions, **kwargs) == [1.0, 1.0]


def test_reward_names():
    assert [f.__name__ for f in JIGSAW_REWARDS] == ["hit_reward", "exact_reward", "format_reward"]


def test_reward_errors():
    with pytest.raises(ValueError, match="solution"):
        hit_reward(["<answer>1 2</answer>"])
    with pytest.raises(ValueError, match="2 completions but 1 solutions"):
        exact_reward(["a", "b"], solution=[[1, 2]])
    with pytest.raises(ValueError, match="answer_format"):
        format_reward(["a"], solution=[[1, 2]], answer_format=["cot"])
    with pytest.raises(ValueError, match="not a permutation"):
        format_reward(["a"], solution=[[1, 1]])


# -----------------------------------------------------------------------------
# Property tests: junk and hacks earn nothing

ANSWER = format_answer(SOL)


def tagged(xs):
    return "<answer>" + " ".join(map(str, xs)) + "</answer>"


HACKS = st.one_of(
    st.text(),
    st.binary().map(lambda b: b.decode("latin-1")),
    st.text(alphabet="<>/answerthink 0123456789,\n"),  # tag soup
    st.integers(0, 5).map(lambda k: "<answer></answer>" * k),
    st.integers(2, 5).map(lambda k: ANSWER * k),  # repeated answer blocks
    st.text(min_size=1).filter(lambda s: s.strip()).map(lambda s: ANSWER + s),  # text after </answer>
    st.text(min_size=1).filter(lambda s: s.strip()).map(lambda s: s + ANSWER),  # text before
    st.lists(st.integers(1, 9), min_size=9, max_size=9).filter(lambda xs: len(set(xs)) < 9).map(tagged),  # duplicates
    st.lists(st.integers(-20, 40), min_size=9, max_size=9)
    .filter(lambda xs: any(x < 1 or x > 9 for x in xs))
    .map(tagged),  # out of range
    st.lists(st.integers(1, 9), max_size=30).filter(lambda xs: len(xs) != 9).map(tagged),  # too few / too many
    st.just(" ".join(map(str, SOL))),  # answer outside tags
    st.just("<answer>" + "7" * 5000 + "</answer>"),
)


@settings(max_examples=300, deadline=None)
@given(HACKS, st.sampled_from([None, "think", "direct"]))
def test_hacks_earn_nothing(text, answer_format):
    assert rewards(text, answer_format=answer_format) == (0.0, 0.0, 0.0)


@settings(max_examples=150, deadline=None)
@given(st.text(), st.text())
def test_random_text_around_answer_earns_nothing(before, after):
    text = before + ANSWER + after
    if (before + after).strip(" \t\n\r\f\v") == "":
        assert rewards(text) == (1.0, 1.0, 1.0)  # only surrounding whitespace is allowed
    else:
        assert rewards(text) == (0.0, 0.0, 0.0)
