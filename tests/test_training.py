"""Integration: real TRL SFT and GRPO steps on jigsaw puzzles with the pocket Qwen2.5-VL on CPU."""

import math

import pytest
import torch

from jigsaw_lib import puzzles, train
from jigsaw_lib.models import TINY, load

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def puzzle_data():
    images = puzzles.procedural_images(8, size=TINY.image_size, seed=0)
    return puzzles.build_dataset(images, 2, 2, n=8, seed=0, answer_format="direct")


def _changed(before, model):
    after = model.state_dict()
    return sum(not torch.equal(before[k], after[k]) for k in before)


def test_one_sft_step_trains_on_the_completion(tiny_pocket_dir, puzzle_data, tmp_path):
    model, processor = load(tiny_pocket_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = train.sft_trainer(model, processor, puzzle_data, tmp_path, max_steps=1,
                                per_device_train_batch_size=4, learning_rate=1e-3)
    trainer.train()
    log = trainer.state.log_history[0]
    assert trainer.state.global_step == 1
    assert math.isfinite(log["loss"]) and log["loss"] > 0
    assert _changed(before, model) > 0
    # the loss covers only the completion: its token count is far below prompt + image + completion
    batch = next(iter(trainer.get_train_dataloader()))
    assert "mm_token_type_ids" in batch and "pixel_values" in batch
    labelled = int((batch["labels"] != -100).sum())
    assert 0 < labelled < batch["input_ids"].numel() / 4


def test_one_grpo_step_with_jigsaw_rewards(tiny_pocket_dir, puzzle_data, tmp_path):
    model, processor = load(tiny_pocket_dir)
    trainer = train.grpo_trainer(model, processor, puzzle_data, tmp_path, max_steps=1,
                                 per_device_train_batch_size=4, num_generations=4,
                                 max_completion_length=12, learning_rate=1e-3)
    trainer.train()
    log = trainer.state.log_history[0]
    for name in ("hit_reward", "exact_reward", "format_reward"):
        assert f"rewards/{name}/mean" in log
    assert "kl" in log  # beta > 0: a reference model is kept and the KL logged
    assert 0.0 <= log["frac_reward_zero_std"] <= 1.0
    assert trainer.state.global_step == 1
    # A random model earns nothing, so every group has zero reward spread and GRPO's gradient is zero
    # apart from the KL term, which is 0 at the first step: the weights may not change. What must
    # hold is that the step ran end to end through generation, rewards and the loss.
    assert math.isfinite(log["loss"])


def test_grpo_step_moves_the_weights_when_rewards_differ(tiny_pocket_dir, puzzle_data, tmp_path):
    model, processor = load(tiny_pocket_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def length_reward(completions, **kwargs):  # any reward with spread inside a group
        return [float(len(str(c))) for c in completions]

    trainer = train.grpo_trainer(model, processor, puzzle_data, tmp_path, reward_funcs=[length_reward],
                                 max_steps=1, per_device_train_batch_size=4, num_generations=4,
                                 max_completion_length=12, learning_rate=1e-3)
    trainer.train()
    assert trainer.state.log_history[0]["frac_reward_zero_std"] < 1.0
    assert _changed(before, model) > 0


def test_grpo_reads_each_prompt_once(tiny_pocket_dir, puzzle_data, tmp_path, monkeypatch):
    # share_prompt_reads: TRL's groups reach generate as one copy of each prompt, and draw the same samples;
    # SharedPromptGRPOTrainer scores each prompt once: the same steps up to float rounding
    from jigsaw_lib import evaluate

    heads, scored = [], []
    shared_generate, shared_logps = evaluate.generate_shared, train.shared_prompt_logps
    monkeypatch.setattr(evaluate, "generate_shared",
                        lambda model, inputs, n, **kw: heads.append((inputs["input_ids"].shape[0], n)) or
                        shared_generate(model, inputs, n, **kw))
    monkeypatch.setattr(train, "shared_prompt_logps",
                        lambda *a, **kw: scored.append((a[1].shape[0], len(kw["heads"]))) or shared_logps(*a, **kw))

    # 2x2 and 1x2 puzzles: prompts of two lengths, so a batch is left-padded
    mixed = puzzles.build_dataset(puzzles.procedural_images(8, size=TINY.image_size, seed=1), grids=[(2, 2), (1, 2)],
                                  n=8, seed=1, answer_format="direct")
    assert len({len(str(p)) for p in mixed["prompt"]}) > 1

    def steps(share, out):
        sampled = []

        def length_reward(completions, **kwargs):  # records what was sampled; a reward with spread in a group
            sampled.append(completions)
            return [float(len(str(c))) for c in completions]

        model, processor = load(tiny_pocket_dir)
        trainer = train.grpo_trainer(model, processor, mixed, out, reward_funcs=[length_reward], max_steps=2,
                                     per_device_train_batch_size=8, num_generations=4, max_completion_length=12,
                                     learning_rate=1e-3, seed=5, share_prompts=share)
        assert isinstance(trainer, train.SharedPromptGRPOTrainer) == share
        trainer.train()
        logs = [{k: v for k, v in log.items() if "runtime" not in k and "per_second" not in k and k != "step_time"}
                for log in trainer.state.log_history]
        return sampled, logs, model.state_dict()

    shared, logs, weights = steps(True, tmp_path / "a")
    assert heads == [(2, 4), (2, 4)]  # each step: TRL's 2 prompts x 4 rollouts read as 2 prompts
    # each step scores its 8 rows over 2 prompts twice: the reference model, then the policy
    assert scored == [(8, 2)] * 4
    plain, plain_logs, plain_weights = steps(False, tmp_path / "b")
    assert len(heads) == 2 and len(scored) == 4
    assert shared[0] == plain[0] and len({str(c) for step in shared for c in step}) > 4  # the same samples, not copies
    assert logs[0]["frac_reward_zero_std"] < 1.0 and logs[0]["kl"] == plain_logs[0]["kl"] == 0.0
    assert logs[0].keys() == plain_logs[0].keys()
    for log, plain_log in zip(logs, plain_logs, strict=True):
        for key, value in log.items():
            assert value == pytest.approx(plain_log[key], rel=1e-4, abs=1e-6), key
    for k in weights:  # Adam moves a weight by about lr = 1e-3 a step: they agree to 1% of a step
        torch.testing.assert_close(weights[k], plain_weights[k], rtol=0, atol=1e-5)


def test_group_heads():
    # a batch of runs of identical rows gives its heads; any other batch is generated as it is
    rows = [[1, 2]] * 3 + [[3, 4]] * 3
    batch = {"input_ids": torch.tensor(rows), "attention_mask": torch.ones(6, 2, dtype=torch.long),
             "mm_token_type_ids": torch.zeros(6, 2, dtype=torch.long), "pixel_values": torch.arange(12.0)[:, None],
             "image_grid_thw": torch.tensor([[1, 1, 2]] * 6)}
    batch["pixel_values"][6:] = 0  # rows 3-5 share one image, as rows 0-2 do
    batch["pixel_values"][:6] = 1
    heads = train._group_heads(batch, 3)
    assert heads["input_ids"].tolist() == [[1, 2], [3, 4]] and heads["pixel_values"].tolist() == [[1]] * 2 + [[0]] * 2
    assert train._group_heads({**batch, "input_ids": torch.tensor([[1, 2], [1, 2], [3, 4]] * 2)}, 3) is None
    other_image = batch["pixel_values"].clone()
    other_image[2:4] = 5  # row 1's image differs from row 0's
    assert train._group_heads({**batch, "pixel_values": other_image}, 3) is None
    text_only = {k: batch[k] for k in ("input_ids", "attention_mask")}
    assert train._group_heads(text_only, 3) is None


def test_unknown_config_key_is_an_error(tiny_pocket_dir, puzzle_data, tmp_path):
    model, processor = load(tiny_pocket_dir)
    with pytest.raises(TypeError, match="learnig_rate"):
        train.sft_trainer(model, processor, puzzle_data, tmp_path, learnig_rate=1e-3)


def test_shared_prompt_scoring_equals_trls(tiny_pocket_dir):
    # shared_prompt_logps against TRL's fused forward over whole rows: prompts of two lengths (left-padded), rows
    # shuffled as TRL shuffles them, completions of several lengths (padded after their end); log-probs, entropies
    # and gradients agree to float rounding
    from trl.trainer.utils import add_fused_lm_head

    model, processor = load(tiny_pocket_dir)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    data = puzzles.build_dataset(puzzles.procedural_images(3, size=TINY.image_size, seed=2), grids=[(2, 2), (1, 2)],
                                 n=3, seed=2, answer_format="direct")
    texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in data["prompt"]]
    processor.tokenizer.padding_side = "left"
    prompts = processor(text=texts, images=list(data["image"]), padding=True, return_tensors="pt")
    assert not prompts["attention_mask"].all()  # some prompt is left-padded
    order = torch.tensor([4, 0, 7, 2, 8, 1, 5, 3, 6])  # 3 prompts x 3 rollouts, shuffled
    prompt_of = order // 3
    g = torch.Generator().manual_seed(0)
    completion = torch.randint(10, 100, (9, 6), generator=g)
    completion_mask = (torch.arange(6) < torch.tensor([6, 3, 1, 5, 6, 2, 4, 6, 3])[:, None]).long()
    ids = torch.cat([prompts["input_ids"][prompt_of], completion], 1)
    mask = torch.cat([prompts["attention_mask"][prompt_of], completion_mask], 1)
    mm = torch.cat([prompts["mm_token_type_ids"][prompt_of], torch.zeros_like(completion)], 1)
    thw = prompts["image_grid_thw"][prompt_of]
    images = torch.split(prompts["pixel_values"], prompts["image_grid_thw"].prod(-1).tolist())
    pixels = torch.cat([images[i] for i in prompt_of.tolist()])

    def trl():
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :-6] = -100
        out = model(input_ids=ids, attention_mask=mask, mm_token_type_ids=mm, pixel_values=pixels,
                    image_grid_thw=thw, labels=labels, fused_lm_head=True)
        return out.log_probs[:, -6:], out.entropy[:, -6:]

    def shared():
        found = train._prompt_heads(ids[:, :-6], mask[:, :-6], mm[:, :-6], pixels, thw)
        firsts = list(dict.fromkeys(prompt_of.tolist()))  # the prompts in the order they first appear
        assert found[0] == [prompt_of.tolist().index(p) for p in firsts]
        assert found[1].tolist() == [firsts.index(p) for p in prompt_of.tolist()]
        out = train.shared_prompt_logps(model, ids, mask, 6, pixel_values=pixels, image_grid_thw=thw,
                                        mm_token_type_ids=mm, heads=found[0], inverse=found[1])
        return out.log_probs, out.entropy

    results = []
    for score in (trl, shared):
        model.zero_grad()
        logps, entropy = score()
        (logps * completion_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logps.detach() * completion_mask, entropy.detach() * completion_mask, grads))
    (logps, entropy, grads), (shared_logps, shared_entropy, shared_grads) = results
    assert logps.abs().max() > 1 and (logps == 0).sum() == (completion_mask == 0).sum()
    torch.testing.assert_close(shared_logps, logps, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared_entropy, entropy, rtol=0, atol=1e-5)
    assert grads.keys() == shared_grads.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(shared_grads[name], grads[name], rtol=1e-4, atol=1e-6)
    # rows whose prompts do not repeat are left to TRL
    assert len(set(prompt_of[:3].tolist())) == 3
    assert train._prompt_heads(ids[:3, :-6], mask[:3, :-6], mm[:3, :-6],
                               torch.cat([images[i] for i in prompt_of[:3].tolist()]), thw[:3]) is None


def test_grpo_under_gradient_checkpointing_scores_the_policy_plainly(tiny_pocket_dir, puzzle_data, tmp_path,
                                                                     monkeypatch):
    # gradient checkpointing drops the cache in the policy's training pass: TRL scores it; the reference model,
    # run without grad, still reads each prompt once
    scored = []
    shared_logps = train.shared_prompt_logps
    monkeypatch.setattr(train, "shared_prompt_logps",
                        lambda *a, **kw: scored.append(a[0].training) or shared_logps(*a, **kw))
    model, processor = load(tiny_pocket_dir)
    trainer = train.grpo_trainer(model, processor, puzzle_data, tmp_path, max_steps=1, per_device_train_batch_size=8,
                                 num_generations=4, max_completion_length=8, learning_rate=1e-3,
                                 gradient_checkpointing=True)
    trainer.train()
    assert model.is_activation_checkpointing and scored == [False]
    assert math.isfinite(trainer.state.log_history[0]["loss"])
