"""Evaluation: batched generation and scoring through the one answer parser."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from jigsaw_lib import answers, evaluate, puzzles, world
from jigsaw_lib.models import TINY, load


def test_skill_scoring_uses_the_strict_parser():
    assert evaluate.score_skill_answer("<answer>Red</answer>", "red")
    assert evaluate.score_skill_answer("<answer> 2 1  4 3 </answer>", "2 1 4 3")
    assert not evaluate.score_skill_answer("red", "red")  # no tags
    assert not evaluate.score_skill_answer("<answer>red</answer><answer>red</answer>", "red")
    assert not evaluate.score_skill_answer("<answer>red</answer> blue", "red")
    assert not evaluate.score_skill_answer("<answer>reddish</answer>", "red")


def test_jigsaw_scoring_is_the_reward():
    scores = evaluate.score_jigsaw(["<answer>2 1 4 3</answer>", "<answer>2 1 3 4</answer>", "2 1 4 3"],
                                   [[2, 1, 4, 3]] * 3)
    assert scores["exact"].tolist() == [1.0, 0.0, 0.0]
    assert scores["hit"].tolist() == [1.0, 0.5, 0.0]
    assert scores["well_formed"].tolist() == [1.0, 1.0, 0.0]


def test_generate_shapes_and_sampling(tiny_pocket_dir):
    model, processor = load(tiny_pocket_dir)
    its = world.items("ocr", "test", 5, size=TINY.image_size)
    prompts = [world.user_turn(it.question) for it in its]
    images = [it.image for it in its]
    greedy = evaluate.generate(model, processor, prompts, images, max_new_tokens=4, batch_size=2, progress=False)
    assert len(greedy) == 5 and all(len(g) == 1 and isinstance(g[0], str) for g in greedy)
    again = evaluate.generate(model, processor, prompts, images, max_new_tokens=4, batch_size=5, progress=False)
    assert again == greedy  # batching and padding do not change greedy answers
    sampled = evaluate.generate(model, processor, prompts, images, max_new_tokens=4, do_sample=True,
                                num_samples=3, progress=False)
    assert len(sampled) == 5 and all(len(s) == 3 for s in sampled)
    assert processor.tokenizer.padding_side == "left"
    with pytest.raises(ValueError, match="5 prompts but 4 images"):
        evaluate.generate(model, processor, prompts, images[:4])


def test_shared_prefill_samples_what_num_return_sequences_samples(tiny_pocket_dir):
    # prompts of different lengths (left padding), several batches: each prompt read once, the same draws
    model, processor = load(tiny_pocket_dir)
    its = world.items("perception", "test", 3, size=TINY.image_size) + world.items("ordering", "test", 4, size=TINY.image_size)
    prompts, images = [world.user_turn(it.question) for it in its], [it.image for it in its]
    text = lambda p: processor.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
    assert len({len(processor.tokenizer(text(p))["input_ids"]) for p in prompts}) > 1
    drawn = {}
    for shared in (True, False):
        torch.manual_seed(3)
        drawn[shared] = evaluate.generate(model, processor, prompts, images, max_new_tokens=6, do_sample=True,
                                          num_samples=4, batch_size=3, progress=False, shared_prefill=shared,
                                          return_ids=True)
    assert drawn[True] == drawn[False]
    assert len({tuple(s) for group in drawn[True] for s in group}) > 7  # samples, not copies of one answer
    # greedy copies of a prompt are its greedy answer
    greedy = evaluate.generate(model, processor, prompts, images, max_new_tokens=6, progress=False)
    copies = evaluate.generate(model, processor, prompts, images, max_new_tokens=6, num_samples=2, progress=False)
    assert copies == [g * 2 for g in greedy]
    # GRPO's wrapper (train.share_prompt_reads) passes on a call that brings its own cache; installed twice, it wraps
    # once; taken off, generate is the model's own again
    from jigsaw_lib import train

    train.share_prompt_reads(train.share_prompt_reads(model, 4), 4)
    assert model._plain_generate.__func__ is type(model).generate
    twin = copy.deepcopy(model)  # a copy generates with its own weights
    assert twin.generate.__self__ is twin and twin._plain_generate.__self__ is twin
    torch.manual_seed(3)
    again = evaluate.generate(model, processor, prompts, images, max_new_tokens=6, do_sample=True, num_samples=4,
                              batch_size=3, progress=False, return_ids=True)
    assert again == drawn[True]
    train.share_prompt_reads(model, 4, enable=False)
    assert model.generate.__func__ is type(model).generate and "_plain_generate" not in vars(model)


def test_evaluate_checkpoint_rows(tiny_pocket_dir):
    table = evaluate.evaluate_checkpoint(tiny_pocket_dir, "tiny", n_per_skill=4, grids=((1, 2),), n_jigsaw=4,
                                         samples=2, image_size=TINY.image_size, progress=False)
    assert set(table["skill"]) == set(world.SKILLS) | {"prior_mean", "jigsaw_1x2"}
    jig = table[table.skill == "jigsaw_1x2"].set_index("metric")["value"]
    assert {"exact", "hit", "well_formed", "pass_at_2", "hit_spread", "sample_hit"} <= set(jig.index)
    assert table["value"].between(0, 1).all()
    assert (table["model"] == "tiny").all()
    again = evaluate.evaluate_checkpoint(tiny_pocket_dir, "tiny", n_per_skill=4, grids=((1, 2),), n_jigsaw=4,
                                         samples=2, image_size=TINY.image_size, progress=False)
    pd.testing.assert_frame_equal(table, again)  # sampling is seeded: the same numbers every run


def test_evaluating_a_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere-base"):
        evaluate.evaluate_checkpoint(tmp_path / "nowhere-base", n_per_skill=1)


def test_jigsaw_eval_set_is_held_out():
    train = evaluate.puzzles.build_dataset(evaluate.puzzles.procedural_images(20, size=32), 2, 2, n=20)
    test = evaluate.jigsaw_eval_set(2, 2, 20, image_size=32)
    assert not set(train["seed"]) & set(test["seed"])
    assert not {im.tobytes() for im in train["image"]} & {im.tobytes() for im in test["image"]}


def test_axis_hits_split_the_placement_by_row_and_column():
    # 2x2, solution 2 1 4 3: 1 2 3 4 puts every tile in its row but not its column, 4 3 2 1 the other way round
    got = evaluate.axis_hits(["<answer>1 2 3 4</answer>", "<answer>3 4 1 2</answer>", "<answer>2 1 4 3</answer>",
                              "<answer>4 3 2 1</answer>", "2 1 4 3"], [[2, 1, 4, 3]] * 5, 2, 2)
    assert got["row_hit"].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert got["col_hit"].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]  # 3 4 1 2 moves every tile across both axes
    # 2x3 (row-major, 3 columns): rows swapped keeps every column; swapping 5 and 6 keeps every row
    got = evaluate.axis_hits(["<answer>1 2 3 4 5 6</answer>", "<answer>6 1 2 3 4 5</answer>"],
                             [[4, 5, 6, 1, 2, 3], [5, 1, 2, 3, 4, 6]], 2, 3)
    assert got["row_hit"].tolist() == [0.0, 1.0]
    assert got["col_hit"].tolist() == [1.0, pytest.approx(4 / 6)]
    with pytest.raises(ValueError, match="rows\\*cols = 4"):
        evaluate.axis_hits(["<answer>1 2</answer>"], [[1, 2]], 2, 2)


def test_evaluate_jigsaw_splits_the_hit_by_axis_when_asked(tiny_pocket_dir):
    model, processor = load(tiny_pocket_dir)
    plain = evaluate.evaluate_jigsaw(model, processor, ((1, 2),), 6, samples=0, image_size=TINY.image_size,
                                     progress=False)
    table = evaluate.evaluate_jigsaw(model, processor, ((1, 2),), 6, samples=0, image_size=TINY.image_size,
                                     progress=False, axes=True)
    assert set(plain.metric) == {"exact", "hit", "well_formed"}  # off by default: the results tables unchanged
    got = table.set_index("metric")["value"]
    assert got["row_hit"] == got["well_formed"]  # one row: every well-formed answer puts each tile in it
    assert got["col_hit"] == got["hit"]  # one row: the column is the position


def test_jigsaw_eval_set_grows_by_extension():
    # evaluate.probe's larger set starts with the runs' own puzzles, so the two can be compared item by item
    small, large = evaluate.jigsaw_eval_set(2, 2, 5, image_size=32), evaluate.jigsaw_eval_set(2, 2, 12, image_size=32)
    assert list(large["solution"][:5]) == list(small["solution"])
    assert [im.tobytes() for im in large["image"][:5]] == [im.tobytes() for im in small["image"]]


def test_probe_names_its_rows_as_the_tracker_does(tiny_pocket_dir):
    from jigsaw_lib import config

    model, processor = load(tiny_pocket_dir)
    cfg = config.make("rft", "pocket", base=str(tiny_pocket_dir), image_size=TINY.image_size)
    table = evaluate.probe(model, processor, cfg, n_jigsaw=3, n_per_skill=2, progress=False)
    assert set(table.metric) == ({"jigsaw_exact", "jigsaw_hit", "jigsaw_well_formed", "prior_mean"}
                                 | {f"prior/{s}" for s in world.SKILLS})
    assert table["value"].between(0, 1).all()
    assert table.set_index("metric").loc["prior_mean", "value"] == pytest.approx(
        table[table.metric.str.startswith("prior/")]["value"].mean())


def test_prompt_variants_swap_one_part_and_keep_the_count():
    variants = evaluate.prompt_variants(2, 3)
    full = variants["jigsaw prompt"]
    assert full == puzzles.jigsaw_prompt(2, 3, "direct") and len(set(variants.values())) == len(variants)
    for name, text in variants.items():
        assert "as 6 numbers separated by spaces" in text and world.grid_description(2, 3) in text, name
        assert ("jigsaw" in text) == (name not in ("opening -> the ordering skill's", "the ordering prompt")), name
    assert "<answer>6 1 2 3 4 5</answer>" in variants["example -> the ordering skill's"]
    assert answers.CONVENTION not in variants["task line and rule dropped"]


def test_answer_lengths_counts_the_numbers_of_each_variant(tiny_pocket_dir):
    model, processor = load(tiny_pocket_dir)
    table = evaluate.answer_lengths(model, processor, 2, 2, n=3, image_size=TINY.image_size)
    assert set(table.variant) == set(evaluate.prompt_variants(2, 2))
    assert np.allclose(table.groupby("variant").share.sum(), 1.0)
    assert table.numbers.min() >= -1


def test_accuracy_by_kind_splits_a_skill_where_it_is_lost():
    its = world.items("grounding", "test", 30, size=32) + world.items("hallucination", "test", 30, size=32)
    records = pd.DataFrame([{"skill": it.skill, "question": it.question, "answer": it.answer,
                             "right": "the sun?" in it.question or it.answer.endswith("no")} for it in its])
    table = evaluate.accuracy_by_kind(records)
    assert list(table.columns) == ["skill", "kind", "metric", "value", "n"]
    got = {(r.skill, r.kind): (r.value, r.n) for r in table.itertuples()}
    assert set(got) == {("grounding", "sun"), ("grounding", "object"), ("hallucination", "yes"),
                        ("hallucination", "no")}
    assert got["grounding", "sun"][0] == 1.0 and got["grounding", "object"][0] == 0.0
    assert got["hallucination", "no"][0] == 1.0 and got["hallucination", "yes"][0] == 0.0
    assert sum(n for _, n in got.values()) == 60
    with pytest.raises(ValueError, match="return_completions"):
        evaluate.accuracy_by_kind(records.drop(columns="question"))
