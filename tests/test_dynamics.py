"""Log-probabilities of responses and the KL probe, checked against a manual forward pass."""

import re
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


# -----------------------------------------------------------------------------
# Influence, sources, KL vs forgetting


@pytest.fixture(scope="module")
def two_sets():
    data = puzzles.build_dataset(puzzles.procedural_images(3, size=TINY.image_size, seed=0), 2, 2, n=3, seed=0,
                                 answer_format="direct")
    return dynamics.Samples.from_dataset(data), dynamics.prior_samples(1, size=TINY.image_size,
                                                                      skills=["ocr", "counting", "perception"])


def test_one_step_influence_matches_the_gradient_inner_product_to_first_order(tiny_pocket_dir, two_sets):
    model, processor = load(tiny_pocket_dir)
    train, probe = two_sets
    lr = 1e-5
    measured = dynamics.step_influence(model, processor, train, probe, lr=lr)
    predicted = dynamics.gradient_influence(model, processor, train, probe, lr=lr)
    assert np.abs(measured.delta).max() > 0
    np.testing.assert_allclose(measured.delta, predicted.delta, rtol=0.05, atol=1e-3 * np.abs(predicted.delta).max())
    np.testing.assert_allclose(measured.train_norm, predicted.train_norm, rtol=1e-4)
    np.testing.assert_allclose(measured.probe_norm, predicted.probe_norm, rtol=1e-4)
    # a large step leaves the first-order regime: the same test would then fail
    big = dynamics.step_influence(model, processor, train, probe, lr=3.0)
    assert not np.allclose(big.delta, predicted.delta / lr * 3.0, rtol=0.05)


def test_step_influence_restores_the_weights_mode_and_grads(tiny_pocket_dir, two_sets):
    model, processor = load(tiny_pocket_dir)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dynamics.step_influence(model, processor, *two_sets, lr=0.1)
    dynamics.gradient_influence(model, processor, *two_sets)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())


def test_first_order_symmetry(tiny_pocket_dir, two_sets):
    model, processor = load(tiny_pocket_dir)
    table = dynamics.symmetry(model, processor, *two_sets, lr=1e-5)
    assert len(table) == 9
    np.testing.assert_allclose(table.u_on_v, table.v_on_u, rtol=0.05, atol=1e-3 * table.u_on_v.abs().max())


def test_subspace_and_projection_track_the_full_gradient(tiny_pocket_dir, two_sets):
    model, processor = load(tiny_pocket_dir)
    train, probe = two_sets
    both = dynamics.Samples(train.prompts + probe.prompts, train.images + probe.images, train.responses + probe.responses)
    full = dynamics.response_gradients(model, processor, both)
    n_params = sum(p.numel() for p in model.parameters())
    assert full.vectors.shape == (6, n_params)
    sketch = dynamics.response_gradients(model, processor, both, project=8192)
    assert sketch.vectors.shape == (6, 8192)
    exact, approx = full.vectors @ full.vectors.T, sketch.vectors @ sketch.vectors.T
    off = ~np.eye(6, dtype=bool)  # the off-diagonal inner products: the diagonal (|g|^2) would carry the fit
    assert np.corrcoef(exact.numpy()[off], approx.numpy()[off])[0, 1] > 0.9
    again = dynamics.response_gradients(model, processor, both.select([0, 1]), project=8192)
    torch.testing.assert_close(again.vectors, sketch.vectors[:2])  # the same projection for every call
    last = r"language_model\.layers\.1\."
    head = dynamics.response_gradients(model, processor, both, subspace=last)
    assert head.vectors.shape[1] == sum(p.numel() for n, p in model.named_parameters() if re.search(last, n))
    with pytest.raises(ValueError, match="no trainable parameter"):
        dynamics.select_parameters(model, "lora")


def test_reasoning_trace_ends_in_the_right_answer(two_sets):
    from jigsaw_lib.answers import parse_answer

    for sol, (r, c) in [([2, 1, 4, 3], (2, 2)), ([3, 1, 2], (1, 3)), (list(range(9, 0, -1)), (3, 3))]:
        text = dynamics.reasoning_trace(sol, r, c, seed=1)
        parsed = parse_answer(text, r * c, require_think=True)
        assert parsed is not None and list(parsed.numbers) == sol
        assert "step by step" in text
    with pytest.raises(ValueError, match="permutation"):
        dynamics.reasoning_trace([1, 1, 2, 3], 2, 2)


def test_landscape_scores_every_source(tiny_pocket_dir, two_sets):
    model, processor = load(tiny_pocket_dir)
    table = dynamics.landscape(model, processor, {"a": two_sets[0], "b": two_sets[1]})
    assert list(table.source.unique()) == ["a", "b"] and len(table) == 6
    assert (table.perplexity >= 1).all() and (table.logprob < 0).all()


def test_kl_forgetting_fit_recovers_a_known_line():
    import pandas as pd

    rows = []
    for method, seed in [("sft", 0), ("rft", 0), ("rft", 1)]:
        for step, kl in [(0, 0.0), (10, 0.5), (20, 1.0), (30, 2.0)]:
            rows += [(method, seed, step, "kl_to_base", kl), (method, seed, step, "prior_mean", 0.8 - 0.1 * kl)]
    metrics = pd.DataFrame(rows, columns=["method", "seed", "step", "metric", "value"])
    points, fit = dynamics.kl_forgetting(metrics)
    assert len(points) == 9 and fit["slope"] == pytest.approx(0.1) and fit["intercept"] == pytest.approx(0, abs=1e-9)
    assert fit["pearson_r"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs the metrics"):
        dynamics.kl_forgetting(metrics[metrics.metric != "kl_to_base"])


@pytest.mark.slow
def test_probe_and_influence_callbacks_in_a_real_sft_run(tiny_pocket_dir, two_sets, tmp_path):
    from jigsaw_lib import train as train_mod

    model, processor = load(tiny_pocket_dir)
    train, probe = two_sets
    probe_cb = dynamics.ProbeCallback(processor, {"prior": probe}, every=2, path=tmp_path / "probe.csv")
    inf_cb = dynamics.InfluenceCallback(processor, "sft_answers", train, probe, steps=[0, 4], lr=1e-4)
    trainer = train_mod.sft_trainer(model, processor, dynamics.samples_dataset(train), tmp_path / "run", max_steps=4,
                                    per_device_train_batch_size=3, learning_rate=1e-2)
    trainer.add_callback(probe_cb)
    trainer.add_callback(inf_cb)
    trainer.train()
    t = probe_cb.table()
    assert sorted(t.step.unique()) == [0, 2, 4]
    lp = t[t.metric == "logprob"].set_index("step").value
    assert lp[4] != lp[0]  # training moved the probe's log-probabilities
    assert len(pd_read(tmp_path / "probe.csv")) == len(t)
    i = inf_cb.table()
    assert sorted(i.step.unique()) == [0, 4]
    assert {"influence", "gradient_cosine", "own_perplexity", "influence_first_order"} <= set(i.metric)
    # the probes leave training itself untouched: the same run without them ends with the same weights
    plain, _ = load(tiny_pocket_dir)
    again = train_mod.sft_trainer(plain, processor, dynamics.samples_dataset(train), tmp_path / "plain", max_steps=4,
                                  per_device_train_batch_size=3, learning_rate=1e-2)
    again.train()
    want = again.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in trainer.model.state_dict().items())


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)


def test_parts_cover_the_model_once_and_graft_copies_one_part(tiny_pocket_dir):
    base, _ = load(tiny_pocket_dir)
    tuned, _ = load(tiny_pocket_dir)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    names = list(base.state_dict())
    for name in names:  # every weight belongs to exactly one part
        assert sum(bool(re.search(pat, name)) for pat in dynamics.PARTS.values()) == 1, name
    dynamics.graft(tuned, base, "tower")
    after, original = tuned.state_dict(), base.state_dict()
    for name in names:
        in_tower = bool(re.search(dynamics.PARTS["tower"], name))
        assert torch.equal(after[name], original[name]) == in_tower, name
    with pytest.raises(ValueError, match="unknown part 'vision'.*tower"):
        dynamics.graft(tuned, base, "vision")


def test_where_forgetting_sits_measures_every_graft(tiny_pocket_dir):
    table = dynamics.where_forgetting_sits(tiny_pocket_dir, tiny_pocket_dir, n_per_skill=2, n_jigsaw=2,
                                           image_size=TINY.image_size, progress=False)
    assert list(table.model.unique()) == ["finetuned", "base tower", "base merger", "base language_model",
                                         "base embeddings", "base"]
    wide = table.pivot_table(index=["skill", "metric"], columns="model", values="value")
    assert {"prior_mean", "jigsaw_2x2"} <= set(table.skill)
    assert (wide.nunique(axis=1) == 1).all()  # the base grafted onto itself is the base
