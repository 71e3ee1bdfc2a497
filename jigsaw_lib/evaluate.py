"""Evaluation: batched generation, scored with the one answer parser.

- :func:`generate` runs ``model.generate`` over (prompt, image) pairs in batches, left-padded, greedy
  or sampled, and returns the decoded completions.
- :func:`evaluate_skills` asks every prior skill of the pocket world (``jigsaw_lib.world``) on its
  held-out split and scores exact answers: a completion must be a well-formed ``<answer>...</answer>``
  (``answers.split_answer``) whose body equals the target.
- :func:`evaluate_jigsaw` poses held-out puzzles of any grid. Greedy decoding gives ``exact``,
  ``hit`` and ``well_formed`` (scored by the very reward functions RFT trains on); ``samples``
  completions at temperature 1 give ``pass_at_k`` (some sample exactly right), the mean sampled hit,
  and ``hit_spread``, the within-prompt standard deviation of the hit reward: GRPO's learning signal,
  zero when every rollout of a prompt scores the same. With ``axes=True`` it also splits the greedy hit
  by axis (:func:`axis_hits`): the share of tiles put in their right row, and in their right column.

Results are tidy rows ``skill, metric, value`` (plus ``n``), ready for the results tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import puzzles, world
from .answers import completion_text, normalise_body, parse_answer, split_answer
from .rewards import exact_reward, format_reward, hit_reward

JIGSAW_TEST_SEED = 1_000_003  # puzzles for evaluation come from their own image stream


@torch.inference_mode()
def generate(model, processor, prompts: list, images: list, *, max_new_tokens: int = 24, batch_size: int = 64,
             do_sample: bool = False, temperature: float = 1.0, num_samples: int = 1, progress: bool = True,
             desc: str = "generate", return_ids: bool = False, shared_prefill: bool = True) -> list[list]:
    """Completions for each (conversational prompt, image): a list of ``num_samples`` strings per prompt.

    With ``num_samples > 1`` each prompt is read once and its samples continue from its cache
    (:func:`generate_shared`; ``shared_prefill=False``: ``generate``'s own ``num_return_sequences``, which reads
    every prompt once per sample). The samples are drawn in the same order from the same distributions either way.

    With ``return_ids`` the completions are the generated token ids instead (up to and including the
    end-of-turn token, padding removed): what the model actually sampled, for scoring it exactly.
    """
    if len(prompts) != len(images):
        raise ValueError(f"generate: {len(prompts)} prompts but {len(images)} images")
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    out: list[list[str]] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
            chunk = prompts[start:start + batch_size]
            texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in chunk]
            inputs = processor(text=texts, images=images[start:start + batch_size], padding=True,
                               return_tensors="pt").to(model.device)
            kwargs = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if do_sample \
                else {"do_sample": False}
            if num_samples > 1 and not do_sample:  # greedy: one answer, copied
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     **kwargs).repeat_interleave(num_samples, dim=0)
            elif num_samples > 1 and shared_prefill:
                ids = generate_shared(model, inputs, num_samples, max_new_tokens=max_new_tokens,
                                      pad_token_id=tokenizer.pad_token_id, **kwargs)
            else:
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
                                     pad_token_id=tokenizer.pad_token_id, **kwargs)
            new = ids[:, inputs["input_ids"].shape[1]:]
            if return_ids:
                decoded = [_trim(row.tolist(), tokenizer.eos_token_id, tokenizer.pad_token_id) for row in new]
            else:
                decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            out += [decoded[i:i + num_samples] for i in range(0, len(decoded), num_samples)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


# a Qwen2.5-VL prompt as the processor gives it: inputs with one entry per token, and the image's
PROMPT_TOKEN_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids")
PROMPT_IMAGE_INPUTS = ("pixel_values", "image_grid_thw")


@torch.no_grad()
def generate_shared(model, inputs, num_samples: int, *, generate=None, **generate_kwargs) -> torch.Tensor:
    """``model.generate(**inputs, num_return_sequences=num_samples)``, with each prompt read once.

    Reading the prompt (about 190 tokens, 16 of them image tokens at pocket scale) is nearly all the cost of
    sampling a short answer, and ``num_return_sequences`` reads it once per sample. Here the prompts but their last
    token fill a cache in one forward pass; the cache is repeated ``num_samples`` times and ``generate`` continues
    from it (transformers' cache continuation), with the prompts repeated as ``num_return_sequences`` repeats them,
    so the rows, and the random draws of sampling, come in the same order from the same distributions.
    Qwen2.5-VL computes the offsets of its 3D (image) positions in the prefill (``rope_deltas``) and continues from
    them; they are repeated with the cache. The first answer token's logits come from a one-token step over the
    cache instead of the whole prompt, so they may differ in the last bits: on this project's CPUs (fp32) the samples
    were the very tokens ``num_return_sequences`` draws (2,304 of 2,304 answers, and 8 GRPO steps, session 29), on
    other hardware a rare sample may differ. Inputs other than a prompt with its image (``PROMPT_TOKEN_INPUTS``,
    ``PROMPT_IMAGE_INPUTS``), e.g. text alone, whose positions the prefill could not place, go to ``generate`` as
    they are. ``generate``: the generate function to continue with (default ``model.generate``).
    """
    from transformers import DynamicCache

    generate = generate or model.generate
    if num_samples == 1 or set(inputs) != {*PROMPT_TOKEN_INPUTS, *PROMPT_IMAGE_INPUTS}:
        return generate(**inputs, num_return_sequences=num_samples, **generate_kwargs)
    cut = {k: inputs[k][:, :-1] for k in PROMPT_TOKEN_INPUTS}
    cache = DynamicCache(config=model.config)
    inner = model.model
    inner.rope_deltas = None  # computed afresh by the prefill, not left from an earlier batch
    model(**cut, **{k: inputs[k] for k in PROMPT_IMAGE_INPUTS}, cache=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(num_samples)
    inner.rope_deltas = inner.rope_deltas.repeat_interleave(num_samples, dim=0)
    rest = {k: inputs[k].repeat_interleave(num_samples, dim=0) for k in PROMPT_TOKEN_INPUTS}
    return generate(**rest, cache=cache, **generate_kwargs)


def _trim(ids: list[int], eos: int, pad: int) -> list[int]:
    """Generated ids up to and including the first end-of-turn token; trailing padding dropped."""
    if eos in ids:
        return ids[: ids.index(eos) + 1]
    while ids and ids[-1] == pad:
        ids = ids[:-1]
    return ids


def score_skill_answer(completion: str, target: str) -> bool:
    """A prior-skill answer is right when it is well-tagged and its body equals the target."""
    blocks = split_answer(completion)
    return blocks is not None and normalise_body(blocks[1]) == normalise_body(target)


def evaluate_skills(model, processor, n_per_skill: int = 200, *, skills=None, split: str = "test", seed: int = 0,
                    image_size: int = 64, batch_size: int = 100, progress: bool = True,
                    return_completions: bool = False):
    """Greedy accuracy of every prior skill on its held-out split; rows ``skill, metric, value, n``."""
    skills = world.check_skills(skills)
    rows, records = [], []
    for skill in skills:
        its = world.items(skill, split, n_per_skill, seed, image_size)
        completions = generate(model, processor, [puzzles.user_turn(it.question) for it in its],
                               [it.image for it in its], batch_size=batch_size, progress=progress, desc=skill)
        right = [score_skill_answer(c[0], it.answer) for c, it in zip(completions, its)]
        rows.append({"skill": skill, "metric": "accuracy", "value": float(np.mean(right)), "n": len(its)})
        if return_completions:  # the kinds read each image: not for the runs' tracking, which wants the table only
            records += [{"skill": skill,
                         "kind": world.question_kind(skill, it.question, it.answer, it.image, it.scene),
                         "question": it.question, "answer": it.answer, "completion": c[0], "right": r}
                        for it, c, r in zip(its, completions, right)]
    table = pd.DataFrame(rows)
    return (table, pd.DataFrame(records)) if return_completions else table


def accuracy_by_kind(records: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per skill and kind of question (``world.question_kind``): where each skill loses its points.

    ``records`` are ``evaluate_skills(..., return_completions=True)``'s; they carry each item's kind, read with its
    image and scene (so ill-posed ordering items stand apart, and a named object alone in view from one among others);
    without a ``kind`` column the kind is read from the text. Rows
    ``skill, kind, metric, value, n``: the skills in their order, each one's kinds sorted.
    """
    missing = {"skill", "question", "answer", "right"} - set(records.columns)
    if missing:
        raise ValueError(f"records lack {sorted(missing)}: pass evaluate_skills(..., return_completions=True)'s second "
                         "table")
    if "kind" not in records.columns:  # from the text alone (evaluate_skills' records also read each image)
        records = records.assign(kind=[world.question_kind(s, q, a) for s, q, a in
                                       zip(records["skill"], records["question"], records["answer"])])
    table = records.groupby(["skill", "kind"], sort=False)["right"].agg(value="mean", n="size").reset_index()
    skills = {skill: i for i, skill in enumerate(dict.fromkeys(records["skill"]))}
    table = table.sort_values(["skill", "kind"], key=lambda c: c.map(skills) if c.name == "skill" else c,
                              ignore_index=True)  # skills as evaluated, kinds in order (grids: 1x2 ... 3x3)
    table["value"] = table["value"].astype(float)
    table.insert(2, "metric", "accuracy")
    return table


def jigsaw_eval_set(rows: int, cols: int, n: int, image_size: int = 64, answer_format: str = "direct",
                    seed: int = JIGSAW_TEST_SEED):
    """Held-out puzzles: images and shuffles from seeds no training set uses."""
    images = puzzles.procedural_images(n, size=image_size, seed=seed)
    return puzzles.build_dataset(images, rows, cols, n=n, seed=seed, answer_format=answer_format)


def score_jigsaw(completions: list[str], solutions: list, answer_format: str = "direct") -> dict[str, np.ndarray]:
    """Per-completion hit, exact and well-formed scores, from the reward functions themselves."""
    columns = {"solution": solutions, "answer_format": [answer_format] * len(solutions)}
    return {"hit": np.array(hit_reward(completions, **columns)),
            "exact": np.array(exact_reward(completions, **columns)),
            "well_formed": np.array(format_reward(completions, **columns))}


def axis_hits(completions: list[str], solutions: list, rows: int, cols: int,
              answer_format: str = "direct") -> dict[str, np.ndarray]:
    """Per completion, the share of tiles sent to the right row (``row_hit``) and to the right column
    (``col_hit``); 0.0 for a malformed answer. A tile is "sent" where the answer says it belongs.

    The hit reward counts tiles placed exactly; these say which part of the placement a model gets: on
    landscapes, rows follow from sky-above-ground, columns only from the side light and from edges that
    continue across tiles. Chance for a random well-formed answer is 1/rows and 1/cols."""
    if any(len(s) != rows * cols for s in solutions):
        raise ValueError(f"axis_hits: every solution must have rows*cols = {rows * cols} numbers")
    if len(solutions) != len(completions):
        raise ValueError(f"axis_hits: got {len(completions)} completions but {len(solutions)} solutions")
    row_hit, col_hit = [], []
    for completion, sol in zip(completions, solutions):
        p = parse_answer(completion_text(completion), rows * cols, require_think=answer_format == "think")
        if p is None:
            row_hit.append(0.0)
            col_hit.append(0.0)
            continue
        pairs = [divmod(a - 1, cols) + divmod(int(b) - 1, cols) for a, b in zip(p.numbers, sol)]
        row_hit.append(sum(ra == rb for ra, _, rb, _ in pairs) / len(pairs))
        col_hit.append(sum(ca == cb for _, ca, _, cb in pairs) / len(pairs))
    return {"row_hit": np.array(row_hit), "col_hit": np.array(col_hit)}


def evaluate_jigsaw(model, processor, grids=((1, 2), (2, 2), (3, 3)), n: int = 200, *, samples: int = 8,
                    image_size: int = 64, answer_format: str = "direct", temperature: float = 1.0,
                    max_new_tokens: int | None = None, batch_size: int = 50, seed: int = JIGSAW_TEST_SEED,
                    progress: bool = True, return_completions: bool = False, axes: bool = False):
    """Jigsaw accuracy per grid: greedy exact/hit/well_formed (and with ``axes`` row_hit/col_hit), and pass@k
    and hit spread from samples."""
    rows, records = [], []
    for r, c in grids:
        data = jigsaw_eval_set(r, c, n, image_size, answer_format, seed)
        prompts, images, solutions = data["prompt"], data["image"], data["solution"]
        budget = max_new_tokens or 8 + 3 * r * c
        greedy = [g[0] for g in generate(model, processor, prompts, images, max_new_tokens=budget,
                                         batch_size=batch_size, progress=progress, desc=f"jigsaw {r}x{c}")]
        scores = score_jigsaw(greedy, solutions, answer_format)
        if axes:
            scores |= axis_hits(greedy, solutions, r, c, answer_format)
        skill = f"jigsaw_{r}x{c}"
        for metric, values in scores.items():
            rows.append({"skill": skill, "metric": metric, "value": float(values.mean()), "n": n})
        records += [{"skill": skill, "sample": -1, "completion": g, "solution": s} for g, s in zip(greedy, solutions)]
        if samples:
            with torch.random.fork_rng():  # seeded: the same samples on every run; the caller's RNG untouched
                torch.manual_seed(seed)
                sampled = generate(model, processor, prompts, images, max_new_tokens=budget, batch_size=batch_size,
                                   do_sample=True, temperature=temperature, num_samples=samples,
                                   progress=progress, desc=f"jigsaw {r}x{c} x{samples}")
            flat = [s for group in sampled for s in group]
            per = score_jigsaw(flat, [s for s in solutions for _ in range(samples)], answer_format)
            hit = per["hit"].reshape(n, samples)
            exact = per["exact"].reshape(n, samples)
            rows += [
                {"skill": skill, "metric": f"pass_at_{samples}", "value": float(exact.max(1).mean()), "n": n},
                {"skill": skill, "metric": "sample_hit", "value": float(hit.mean()), "n": n},
                {"skill": skill, "metric": "sample_well_formed", "value": float(per["well_formed"].mean()), "n": n},
                {"skill": skill, "metric": "hit_spread", "value": float(hit.std(1).mean()), "n": n},
                {"skill": skill, "metric": "frac_zero_spread", "value": float((hit.std(1) == 0).mean()), "n": n},
            ]
            records += [{"skill": skill, "sample": k, "completion": s, "solution": sol}
                        for group, sol in zip(sampled, solutions) for k, s in enumerate(group)]
    table = pd.DataFrame(rows)
    return (table, pd.DataFrame(records)) if return_completions else table


def measure(model, processor, cfg, n_jigsaw: int, n_prior: int, *, axes: bool = True,
            progress: bool = False) -> list[tuple[str, float]]:
    """A model measured as a run measures it: ``(metric, value)`` pairs, the names of the results schema.

    Greedy answers to ``n_jigsaw`` held-out puzzles per grid of ``cfg.grids``, drawn in the run's puzzle world
    (``jigsaw_exact``, ``jigsaw_hit``, ``jigsaw_well_formed`` and, with ``axes``, ``jigsaw_row_hit`` and
    ``jigsaw_col_hit``: means over grids, and ``jigsaw_<metric>/<rows>x<cols>`` per grid when there are several),
    then ``n_prior`` items of every prior skill in the current world (``prior/<skill>``, ``prior_mean``). A size of
    0 measures none of that part. :class:`tracking.Tracker` calls it with the run's own sizes and :func:`probe`
    with larger ones, so the two are the same measurement on sets of different size."""
    pairs = []
    if n_jigsaw:
        with cfg.in_puzzle_world():  # held-out puzzles in the run's puzzle world; prior skills below in the caller's
            jig = evaluate_jigsaw(model, processor, [tuple(g) for g in cfg.grids], n_jigsaw, samples=0,
                                  image_size=cfg.image_size, answer_format=cfg.answer_format,
                                  max_new_tokens=cfg.max_completion_length, progress=progress, axes=axes)
        for metric in ("exact", "hit", "well_formed") + (("row_hit", "col_hit") if axes else ()):
            per_grid = jig[jig.metric == metric]
            pairs.append((f"jigsaw_{metric}", float(per_grid["value"].mean())))
            if len(per_grid) > 1:
                pairs += [(f"jigsaw_{metric}/{r.skill.removeprefix('jigsaw_')}", float(r.value))
                          for r in per_grid.itertuples()]
    if n_prior:
        skills = evaluate_skills(model, processor, n_prior, image_size=cfg.image_size, progress=progress)
        pairs += [(f"prior/{r.skill}", float(r.value)) for r in skills.itertuples()]
        pairs.append(("prior_mean", float(skills["value"].mean())))
    return pairs


def probe(model, processor, cfg, n_jigsaw: int = 400, n_per_skill: int = 200, *, progress: bool = True) -> pd.DataFrame:
    """A model measured as a run's tracker measures it (:func:`measure`), on larger held-out sets, in the base's
    world (``cfg.base``): rows ``metric, value`` (``jigsaw_exact``, ``jigsaw_hit``, ``jigsaw_well_formed``, and
    ``jigsaw_<metric>/<rows>x<cols>`` per grid when there are several; ``prior/<skill>``, ``prior_mean``).

    A run's own probes are small (pocket: 100 puzzles, 50 items per skill; a 100-puzzle exact has a standard error
    of about 0.05 near 0.6), and the puzzle set is seeded and grows by extension (its first ``cfg.eval_jigsaw``
    puzzles are the tracker's), so a verdict near a target can be checked here on more. Probe the base model the
    same way for what was lost. A run does this itself at its first and last step when its config sets
    ``probe_jigsaw`` / ``probe_prior`` (rows ``probe/<metric>``)."""
    from .pretrain import base_world

    with base_world(cfg.base):
        pairs = measure(model, processor, cfg, n_jigsaw, n_per_skill, axes=False, progress=progress)
    return pd.DataFrame(pairs, columns=["metric", "value"])


def prompt_variants(rows: int = 2, cols: int = 2) -> dict[str, str]:
    """The direct jigsaw prompt for a grid and the same prompt with one of its parts swapped for the ordering
    skill's (``world``): what :func:`answer_lengths` asks, to find which part of a prompt the base model never
    saw takes away its count of numbers. Every variant states the grid and "as rows*cols numbers"."""
    n = rows * cols
    full = puzzles.jigsaw_prompt(rows, cols, "direct")
    opening, grid, task = full.split("\n\n", 1)[0], world.grid_description(rows, cols), world.ORDERING_TASKS[0]
    own_example = " ".join(map(str, np.roll(np.arange(1, n + 1), 1)))  # the ordering skill's fixed example
    ordering_opening = world.ORDERING_OPENINGS[0].format(rows=rows, cols=cols)
    paragraphs = full.split("\n\n")
    return {
        "jigsaw prompt": full,
        "example -> the ordering skill's": full.replace(f"<answer>{puzzles._example_answer(n)}</answer>",
                                                        f"<answer>{own_example}</answer>"),
        "opening -> the ordering skill's": full.replace(opening + "\n\n", ordering_opening + " "),
        "task line and rule dropped": "\n\n".join(paragraphs[:-2] + paragraphs[-1:]),
        "task line and rule -> an ordering task": "\n\n".join(paragraphs[:-2] + [task] + paragraphs[-1:]),
        "the ordering prompt": f"{ordering_opening} {grid}\n\n{task}\n\n"
                               + world.answer_instruction(f"{n} numbers separated by spaces", own_example),
    }


def answer_lengths(model, processor, rows: int = 2, cols: int = 2, n: int = 100, *, image_size: int = 64,
                   progress: bool = False) -> pd.DataFrame:
    """How many numbers a model's greedy answers hold under each of :func:`prompt_variants`, on ``n`` held-out
    puzzles: rows ``variant, numbers, share`` (``numbers`` -1 for an answer without an ``<answer>`` block).

    A base that gives rows*cols numbers to its own ordering prompt but not to the jigsaw prompt read the count
    from the surface of the prompts it trained on (README, "Why the count of numbers did not carry over")."""
    data = jigsaw_eval_set(rows, cols, n, image_size)
    out = []
    for name, text in prompt_variants(rows, cols).items():
        completions = [g[0] for g in generate(model, processor, [puzzles.user_turn(text)] * n, data["image"],
                                              max_new_tokens=8 + 3 * rows * cols, progress=progress, desc=name)]
        counts = pd.Series([len(b[1].split()) if (b := split_answer(completion_text(c))) else -1
                            for c in completions]).value_counts()
        out += [{"variant": name, "numbers": int(k), "share": float(v) / n} for k, v in sorted(counts.items())]
    return pd.DataFrame(out)


def evaluate_checkpoint(checkpoint, name: str | None = None, *, n_per_skill: int = 200,
                        grids=((1, 2), (2, 2), (3, 3)), n_jigsaw: int = 200, samples: int = 8,
                        image_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Prior skills and jigsaw behaviour of a checkpoint directory: rows ``model, skill, metric, value, n``."""
    from .models import load

    model, processor = load(checkpoint)
    skills = evaluate_skills(model, processor, n_per_skill, image_size=image_size, progress=progress)
    prior = pd.DataFrame([{"skill": "prior_mean", "metric": "accuracy", "value": skills["value"].mean(),
                           "n": int(skills["n"].sum())}])
    jigsaw = evaluate_jigsaw(model, processor, grids, n_jigsaw, samples=samples, image_size=image_size,
                             progress=progress)
    table = pd.concat([skills, prior, jigsaw], ignore_index=True)
    table.insert(0, "model", name or str(checkpoint))
    return table
