"""
TRL reward functions for jigsaw puzzles: R = R_hit + R_acc + R_fmt (arXiv 2506.23508, after Jigsaw-R1).

TRL's GRPOTrainer calls each function as f(completions=..., prompts=..., completion_ids=...,
trainer_state=..., **columns), where every dataset column arrives as a keyword list with one entry
per completion. We use two columns:

    solution       list[int] per row, the target answer (see answers.CONVENTION); n_tiles = len(solution)
    answer_format  optional, "think" or "direct"; "think" requires a <think> block to earn anything,
                   "direct" (and a missing column) accepts the answer with or without one

Everything else is ignored. All three rewards parse through answers.parse_answer, so a completion
that is malformed in any way (see answers.py) earns 0 on all three. hit_reward gives partial
credit, which keeps GRPO groups from having zero reward variance early in training.
"""

from jigsaw_lib.answers import completion_text, parse_answer

ANSWER_FORMATS = ("think", "direct")


def _parse_batch(name, completions, solution, answer_format):
    """Parse each completion against its row's solution; returns [(parsed or None, solution tuple)]."""
    if solution is None:
        raise ValueError(
            f"{name}: the dataset has no 'solution' column; build it with jigsaw_lib.puzzles.build_dataset "
            "or add a column of answer lists"
        )
    if len(solution) != len(completions):
        raise ValueError(f"{name}: got {len(completions)} completions but {len(solution)} solutions")
    if answer_format is None:
        answer_format = ["direct"] * len(completions)
    elif len(answer_format) != len(completions):
        raise ValueError(f"{name}: got {len(completions)} completions but {len(answer_format)} answer_format values")
    out = []
    for completion, sol, fmt in zip(completions, solution, answer_format):
        if fmt not in ANSWER_FORMATS:
            raise ValueError(f"{name}: answer_format must be one of {ANSWER_FORMATS}, got {fmt!r}")
        sol = tuple(int(x) for x in sol)
        if sorted(sol) != list(range(1, len(sol) + 1)):
            raise ValueError(f"{name}: solution {list(sol)} is not a permutation of 1..{len(sol)}")
        parsed = parse_answer(completion_text(completion), len(sol), require_think=fmt == "think")
        out.append((parsed, sol))
    return out


def hit_reward(completions, solution=None, answer_format=None, **kwargs) -> list[float]:
    """Fraction of positions whose number equals the solution's; 0.0 if the answer does not parse."""
    rows = _parse_batch("hit_reward", completions, solution, answer_format)
    return [
        0.0 if p is None else sum(a == b for a, b in zip(p.numbers, sol)) / len(sol) for p, sol in rows
    ]


def exact_reward(completions, solution=None, answer_format=None, **kwargs) -> list[float]:
    """1.0 if the whole answer equals the solution, else 0.0."""
    rows = _parse_batch("exact_reward", completions, solution, answer_format)
    return [float(p is not None and p.numbers == sol) for p, sol in rows]


def format_reward(completions, solution=None, answer_format=None, **kwargs) -> list[float]:
    """1.0 if the answer is well-formed (tags once and in order, a permutation of 1..n_tiles), else 0.0."""
    rows = _parse_batch("format_reward", completions, solution, answer_format)
    return [float(p is not None) for p, _ in rows]


JIGSAW_REWARDS = (hit_reward, exact_reward, format_reward)
