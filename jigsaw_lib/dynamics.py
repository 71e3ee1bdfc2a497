"""Learning dynamics: log-probabilities of responses under a model, and KL to the base model.

The study explains forgetting through how a step on new data moves the model's probabilities
elsewhere (Ren & Sutherland, ICLR 2025; arXiv 2506.23508, claim C4). Everything here starts from one
quantity: the log-probability of a response y given a prompt x and an image, summed over the
response's tokens (the prompt and image are context, never scored).

- :func:`sequence_logprobs`: batched ``log pi(y | x, image)`` and the response's token count;
- :func:`kl_to_base`: the forward KL(pi_0 || pi) on held-out prompts, estimated by Monte Carlo from
  responses sampled once from the base model pi_0: KL = E_{y ~ pi_0}[log pi_0(y|x) - log pi(y|x)]
  ("RL's Razor", Shenfeld et al. 2025, finds forgetting tracks this quantity).
"""

from __future__ import annotations

import numpy as np
import torch


def _response_batch(processor, prompts, images, responses, add_eos: bool):
    """Prompt+response inputs (right-padded), and a mask of the positions that hold response tokens.

    A response is text (tokenised here, ``add_eos`` appends the end-of-turn token) or a list of token
    ids taken as they are (what ``generate(..., return_ids=True)`` sampled).
    """
    tokenizer = processor.tokenizer
    heads = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        head = processor(text=heads, images=images, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    tails = []
    for r in responses:
        if isinstance(r, str):
            r = tokenizer(r, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if add_eos else [])
        tails.append(list(r))
    head_len = head["attention_mask"].sum(1)
    width = int(max(int(h) + len(t) for h, t in zip(head_len, tails)))
    ids = torch.full((len(tails), width), tokenizer.pad_token_id, dtype=head["input_ids"].dtype)
    attn = torch.zeros((len(tails), width), dtype=head["attention_mask"].dtype)
    mask = torch.zeros((len(tails), width), dtype=torch.bool)
    mm = torch.zeros((len(tails), width), dtype=head["mm_token_type_ids"].dtype) if "mm_token_type_ids" in head else None
    for i, (h, t) in enumerate(zip(head_len.tolist(), tails)):
        ids[i, :h] = head["input_ids"][i, :h]
        ids[i, h:h + len(t)] = torch.tensor(t, dtype=ids.dtype)
        attn[i, :h + len(t)] = 1
        mask[i, h:h + len(t)] = True
        if mm is not None:
            mm[i, :h] = head["mm_token_type_ids"][i, :h]
    batch = {k: v for k, v in head.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    batch.update(input_ids=ids, attention_mask=attn)
    if mm is not None:
        batch["mm_token_type_ids"] = mm
    return batch, mask


@torch.no_grad()
def sequence_logprobs(model, processor, prompts: list, images: list, responses: list[str], *,
                      batch_size: int = 32, add_eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``log pi(response | prompt, image)`` summed over response tokens, and the number of those tokens.

    Responses are text or token ids (see ``_response_batch``); for text, ``add_eos`` scores the
    end-of-turn token too, as generation emits it (a sampled response ends there).
    Per-token perplexity is ``exp(-logprob / n_tokens)``.
    """
    if not len(prompts) == len(images) == len(responses):
        raise ValueError(f"sequence_logprobs: {len(prompts)} prompts, {len(images)} images, "
                         f"{len(responses)} responses: they must match one to one")
    was_training = model.training
    model.eval()
    total, count = [], []
    try:
        for start in range(0, len(prompts), batch_size):
            sl = slice(start, start + batch_size)
            batch, mask = _response_batch(processor, prompts[sl], images[sl], responses[sl], add_eos)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model(**batch).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            token = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
            m = mask[:, 1:].to(token.device)
            total.append((token * m).sum(1).cpu())
            count.append(m.sum(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(total).numpy(), torch.cat(count).numpy()


def perplexity(logprob: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """Per-token perplexity of each response: exp(-mean token log-probability)."""
    return np.exp(-np.asarray(logprob) / np.maximum(np.asarray(n_tokens), 1))


class KLProbe:
    """Forward KL(pi_0 || pi) on fixed held-out prompts, from responses sampled once from pi_0.

    Build it with the base model (it samples ``samples`` responses per prompt, as token ids, with a
    fixed seed, and scores them under pi_0), then call :meth:`measure` with any later model: the mean over responses of
    ``log pi_0(y|x) - log pi(y|x)``, a Monte Carlo estimate of the sequence-level KL in nats.
    """

    def __init__(self, base_model, processor, prompts: list, images: list, *, samples: int = 4,
                 max_new_tokens: int = 24, temperature: float = 1.0, batch_size: int = 32, seed: int = 0):
        from .evaluate import generate

        with torch.random.fork_rng():  # the same responses every time, and the caller's RNG untouched
            torch.manual_seed(seed)
            sampled = generate(base_model, processor, prompts, images, max_new_tokens=max_new_tokens,
                               do_sample=True, temperature=temperature, num_samples=samples, progress=False,
                               batch_size=batch_size, return_ids=True)
        self.prompts = [p for p in prompts for _ in range(samples)]
        self.images = [im for im in images for _ in range(samples)]
        self.responses = [r for group in sampled for r in group]
        self.batch_size = batch_size
        self.processor = processor
        self.base_logprobs, self.n_tokens = sequence_logprobs(base_model, processor, self.prompts, self.images,
                                                              self.responses, batch_size=batch_size)

    def measure(self, model) -> float:
        logprobs, _ = sequence_logprobs(model, self.processor, self.prompts, self.images, self.responses,
                                        batch_size=self.batch_size)
        return float(np.mean(self.base_logprobs - logprobs))
