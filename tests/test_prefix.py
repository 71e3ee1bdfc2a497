"""jigsaw_lib.prefix: a batch's common prefix read once gives the plain forward pass's numbers."""

import contextlib
import copy

import pytest
import torch
from trl.trainer.utils import add_fused_lm_head

from jigsaw_lib import evaluate, prefix, puzzles
from jigsaw_lib.models import TINY, load


@pytest.fixture(scope="module")
def model_and_batch(tiny_pocket_dir):
    model, processor = load(tiny_pocket_dir, share_prefix=False)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    data = puzzles.build_dataset(puzzles.procedural_images(6, size=TINY.image_size, seed=3), 2, 2, n=6, seed=3,
                                 answer_format="direct")
    # SFT's rows: prompt and answer, right-padded (answers of two lengths)
    completions = [c if i % 2 else [{**c[0], "content": [{"type": "text", "text": "<answer>1 2 3 4 5 6</answer>"}]}]
                   for i, c in enumerate(data["completion"])]
    texts = [processor.apply_chat_template(p + c, tokenize=False) for p, c in zip(data["prompt"], completions)]
    processor.tokenizer.padding_side = "right"
    batch = processor(text=texts, images=list(data["image"]), padding=True, return_tensors="pt")
    assert not batch["attention_mask"].all()
    return model, processor, data, batch


@contextlib.contextmanager
def _passes(model):
    """The prefix read once while in the block; yields the row count of every plain pass the backbone runs (a
    prefix read once: 1 row, then the rest of the rows)."""
    prefix.share_prefix(model)
    rows, plain = [], model.model._plain_forward
    model.model._plain_forward = lambda **a: rows.append(a["input_ids"].shape[0]) or plain(**a)
    try:
        yield rows
    finally:
        model.model._plain_forward = plain
        prefix.share_prefix(model, enable=False)


def test_common_prefix():
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 9, 8]])
    assert prefix.common_prefix(ids) == 2
    assert prefix.common_prefix(ids, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])) == 0  # padding is no prefix
    assert prefix.common_prefix(ids, mm_token_type_ids=torch.tensor([[0, 1, 0, 0]] * 2)) == 1  # nor an image
    assert prefix.common_prefix(ids[:, :2]) == 2


def test_training_forward_equals_the_plain_one(model_and_batch):
    model, _, _, batch = model_and_batch
    cut = prefix.common_prefix(batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"])
    assert cut > 100  # the instruction
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :cut + 20] = -100
    results = []
    for share in (False, True):
        prefix.share_prefix(model, enable=share)
        model.zero_grad()
        out = model(**batch, labels=labels, fused_lm_head=True)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (shared, shared_grads) = results
    prefix.share_prefix(model, enable=False)
    assert shared.log_probs.shape == plain.log_probs.shape
    torch.testing.assert_close(shared.log_probs, plain.log_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared.entropy, plain.entropy, rtol=0, atol=1e-5)
    assert torch.equal(shared.label_mask, plain.label_mask) and plain.label_mask.sum() > 10
    assert shared.loss.item() == pytest.approx(plain.loss.item(), abs=1e-6)
    assert plain_grads.keys() == shared_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(shared_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)


def test_generation_equals_the_plain_one(model_and_batch):
    model, processor, data, _ = model_and_batch
    heads = []

    def answers(share, **kw):
        with _passes(model) if share else contextlib.nullcontext([]) as rows:
            out = evaluate.generate(model, processor, data["prompt"], list(data["image"]), progress=False,
                                    max_new_tokens=6, **kw)
        heads.extend(rows)
        return out

    assert answers(True) == answers(False)
    assert heads[0] == 1 and heads[1] == 6  # the prefix with one row, then the rest of the 6 rows
    torch.manual_seed(0)
    plain = answers(False, do_sample=True, num_samples=3)
    torch.manual_seed(0)
    assert answers(True, do_sample=True, num_samples=3) == plain
    assert len({a for row in plain for a in row}) > 3


def test_install_off_and_copies(model_and_batch):
    model, *_ = model_and_batch
    plain = model.model.forward
    prefix.share_prefix(prefix.share_prefix(model))
    assert model.model._plain_forward == plain  # installed twice, wrapped once
    twin = copy.deepcopy(model)
    assert twin.model.forward.__self__ is twin.model and twin.model._plain_forward.__self__ is twin.model
    prefix.share_prefix(model, enable=False)
    assert model.model.forward == plain and {"forward", "_plain_forward"}.isdisjoint(vars(model.model))


def test_rows_without_a_long_common_prefix_run_plainly(model_and_batch):
    model, _, _, batch = model_and_batch
    with _passes(model) as calls, torch.no_grad():
        left = {k: v.clone() for k, v in batch.items()}
        left["attention_mask"][0, 0] = 0  # a padded first token: no common prefix
        model(**left)
        model(**{k: v[:1] for k, v in batch.items() if k not in ("pixel_values", "image_grid_thw")},
              pixel_values=batch["pixel_values"][:batch["image_grid_thw"][0].prod()],
              image_grid_thw=batch["image_grid_thw"][:1])  # one row
        model(**batch)
    assert calls == [6, 1, 1, 6]


def test_no_cache_asked_none_returned_and_checkpointing_runs_plainly(model_and_batch):
    model, _, _, batch = model_and_batch
    try:
        with _passes(model) as calls:
            with torch.no_grad():
                assert model.model(**batch, use_cache=False).cache is None
                assert model.model(**batch, use_cache=True).cache.get_seq_length() == batch["input_ids"].shape[1]
            assert calls == [1, 6, 1, 6]  # both read the prefix once
            # under gradient checkpointing a training pass drops the cache inside each layer: the plain pass runs
            model.gradient_checkpointing_enable()
            model.train()
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            model(**batch, labels=labels, fused_lm_head=True).loss.backward()
            assert calls[4:] == [6]
    finally:
        model.gradient_checkpointing_disable()
        model.eval()
        model.zero_grad()
