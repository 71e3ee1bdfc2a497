"""Log-probabilities of responses and the KL probe, checked against a manual forward pass."""

import numpy as np
import pytest
import torch

from jigsaw_lib import dynamics, puzzles, world
from jigsaw_lib.models import TINY, load


@pytest.fixture(scope="module")
def triples():
    its = world.items("ocr", "test", 3, size=TINY.image_size)
    return ([puzzles.user_turn(it.question) for it in its], [it.image for it in its],
            ["<answer>7</answer>", "<answer>12 lorem</answer>", "no tags at all, longer than the others"])


def test_sequence_logprob_is_the_sum_of_token_logprobs(tiny_pocket_dir, triples):
    model, processor = load(tiny_pocket_dir)
    prompts, images, responses = triples
    got, n = dynamics.sequence_logprobs(model, processor, prompts, images, responses, batch_size=2)
    eos = processor.tokenizer.eos_token
    for i in range(3):  # one at a time, no padding: the plain definition
        head = processor.apply_chat_template(prompts[i], add_generation_prompt=True, tokenize=False)
        full = processor(text=[head + responses[i] + eos], images=[images[i]], return_tensors="pt")
        k = processor(text=[head], images=[images[i]], return_tensors="pt")["input_ids"].shape[1]
        with torch.no_grad():
            logp = torch.log_softmax(model(**full).logits[0].float(), -1)
        ids = full["input_ids"][0]
        want = sum(logp[t - 1, ids[t]].item() for t in range(k, len(ids)))
        assert n[i] == len(ids) - k
        assert got[i] == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert np.all(got < 0) and n[2] > n[0]
    ppl = dynamics.perplexity(got, n)
    assert np.all(ppl >= 1)


def test_kl_probe_is_zero_for_the_base_and_positive_after_a_change(tiny_pocket_dir, triples):
    model, processor = load(tiny_pocket_dir)
    prompts, images, _ = triples
    probe = dynamics.KLProbe(model, processor, prompts, images, samples=2, max_new_tokens=6)
    assert probe.measure(model) == pytest.approx(0.0, abs=1e-5)
    changed, _ = load(tiny_pocket_dir)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert probe.measure(changed) > 0


def test_mismatched_inputs_are_an_error(tiny_pocket_dir, triples):
    model, processor = load(tiny_pocket_dir)
    prompts, images, responses = triples
    with pytest.raises(ValueError, match="one to one"):
        dynamics.sequence_logprobs(model, processor, prompts, images[:2], responses)
