"""
The one answer format for jigsaw puzzles: formatting targets and parsing model output.

Rewards (rewards.py) and evaluation both parse through `parse_answer`, so "what counts as an answer"
is defined in exactly one place.

Answer convention (Jigsaw-R1's "full" question, forward direction, arXiv 2505.23590):
positions are numbered 1..rows*cols row-major (left to right, top to bottom), and

    If the tile now at position X belongs at position Y, write Y at position X.

So the answer is rows*cols numbers, one per position of the shuffled image, each naming where that
tile goes in the original. The identity `1 2 ... n` means "already solved".

Accepted text, after stripping surrounding whitespace, is exactly one of

    <answer>BODY</answer>
    <think>ANYTHING</think> <answer>BODY</answer>      (whitespace between the blocks is optional)

where each tag occurs exactly once, the think block contains none of the four tags, and BODY is
exactly n_tiles integers separated by whitespace and/or commas, each in 1..n_tiles, all distinct
(a permutation). Everything else parses to None. The parser is deliberately strict because GRPO
will find any slack in it: empty or repeated <answer> tags, text outside the tags, duplicated or
out-of-range indices, signs, decimals, leading zeros, non-ASCII digits ("٣" matches \\d in Python)
and absurdly long numbers all earn nothing. Numbers are matched with a bounded [0-9]{1,5} regex
before int(), so a 5,000-digit "number" is rejected in microseconds and never reaches Python's
int-string conversion limit.
"""

import re
from dataclasses import dataclass

CONVENTION = "If the tile now at position X belongs at position Y, write Y at position X."

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
MAX_TILES = 99_999  # numbers are matched as at most 5 ASCII digits

_WS = " \t\n\r\f\v"  # ASCII whitespace only; Unicode spaces are junk
_TAG_RE = re.compile(r"</?(?:think|answer)>")
_TEXT_RE = re.compile(
    r"(?:<think>(?P<think>.*)</think>[ \t\n\r\f\v]*)?<answer>(?P<body>.*)</answer>", re.DOTALL
)
_NUM = r"[1-9][0-9]{0,4}"  # no sign, no decimal point, no leading zero, ASCII digits only
_SEP = r"[ \t\n\r\f\v,]"
_BODY_RE = re.compile(rf"{_SEP}*{_NUM}(?:{_SEP}+{_NUM})*{_SEP}*")
_NUM_RE = re.compile(_NUM)


@dataclass(frozen=True)
class ParsedAnswer:
    """A well-formed answer: the think text (None if there was no think block) and the numbers."""

    think: str | None
    numbers: tuple[int, ...]


def format_answer(solution: list[int], think: str | None = None) -> str:
    """
    Format a solution as the model should write it: "<answer>2 1 4 3</answer>", or with a
    reasoning block "<think>...</think><answer>2 1 4 3</answer>". Inverse of parse_answer.
    """
    numbers = [int(x) for x in solution]
    if sorted(numbers) != list(range(1, len(numbers) + 1)):
        raise ValueError(
            f"format_answer: solution must be a permutation of 1..{len(numbers)}, got {list(solution)}"
        )
    body = " ".join(str(x) for x in numbers)
    if think is None:
        return f"<answer>{body}</answer>"
    bad = [tag for tag in TAGS if tag in think]
    if bad:
        raise ValueError(f"format_answer: think text must not contain the tags {bad}; it would not parse")
    return f"<think>{think}</think><answer>{body}</answer>"


def split_answer(text: str) -> tuple[str | None, str] | None:
    """
    The (think, body) blocks of a well-tagged answer, or None: the tag grammar of the module
    docstring without any rule on the body. Jigsaw answers go on through parse_answer; prior-skill
    answers (a word, a number) are compared with normalise_body(body).
    """
    if not isinstance(text, str):
        return None
    text = text.strip(_WS)
    tags = _TAG_RE.findall(text)
    if tags not in (["<answer>", "</answer>"], ["<think>", "</think>", "<answer>", "</answer>"]):
        return None  # missing, repeated, nested or out-of-order tags
    match = _TEXT_RE.fullmatch(text)
    if match is None:
        return None  # text before, between or after the blocks
    return match.group("think"), match.group("body")


def normalise_body(body: str) -> str:
    """An answer body for comparison: commas and whitespace collapsed to single spaces, lower case."""
    return " ".join(body.replace(",", " ").split()).lower()


def parse_answer(text: str, n_tiles: int, require_think: bool = False) -> ParsedAnswer | None:
    """
    Parse a model's answer for a puzzle of n_tiles tiles; None if it is malformed in any way
    (see the module docstring for the exact grammar). With require_think, a missing think block
    is malformed too.
    """
    if not isinstance(n_tiles, int) or isinstance(n_tiles, bool) or not 1 <= n_tiles <= MAX_TILES:
        raise ValueError(f"parse_answer: n_tiles must be an int in 1..{MAX_TILES}, got {n_tiles!r}")
    blocks = split_answer(text)
    if blocks is None:
        return None
    think, body = blocks
    if require_think and think is None:
        return None
    if not _BODY_RE.fullmatch(body):
        return None
    numbers = tuple(int(s) for s in _NUM_RE.findall(body))
    if len(numbers) != n_tiles or sorted(numbers) != list(range(1, n_tiles + 1)):
        return None  # too few, too many, out of range or duplicated
    return ParsedAnswer(think=think, numbers=numbers)


def completion_text(completion) -> str:
    """
    The assistant text of one completion, as TRL hands it to reward functions: either a plain
    string, or a conversational list of messages [{"role": "assistant", "content": ...}] whose
    content is a string or a list of parts [{"type": "text", "text": ...}, ...]. Text of all
    assistant messages is concatenated; non-text parts are ignored.
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, list):
        raise TypeError(
            "completion_text: expected a string or a list of message dicts, "
            f"got {type(completion).__name__}"
        )
    texts = []
    for message in completion:
        if not isinstance(message, dict):
            raise TypeError(
                f"completion_text: expected message dicts, got {type(message).__name__} in the list"
            )
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if content is None:
            continue
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part.get("text") or ""
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        else:
            raise TypeError(
                "completion_text: message content must be a string or a list of parts, "
                f"got {type(content).__name__}"
            )
    return "".join(texts)
