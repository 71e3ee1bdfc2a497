"""Learning dynamics: log-probabilities of responses under a model, and KL to the base model.

The study explains forgetting through how a step on new data moves the model's probabilities
elsewhere (Ren & Sutherland, ICLR 2025; arXiv 2506.23508, claim C4). Everything here starts from one
quantity: the log-probability of a response y given a prompt x and an image, summed over the
response's tokens (the prompt and image are context, never scored).

- :func:`sequence_logprobs`: batched ``log pi(y | x, image)`` and the response's token count;
- :func:`kl_to_base`: the forward KL(pi_0 || pi) on held-out prompts, estimated by Monte Carlo from
  responses sampled once from the base model pi_0: KL = E_{y ~ pi_0}[log pi_0(y|x) - log pi(y|x)]
  ("RL's Razor", Shenfeld et al. 2025, finds forgetting tracks this quantity).
- :func:`graft` and :func:`where_forgetting_sits`: put the base's weights of one part (vision tower, merger,
  language model, and the token embeddings inside it) back into a fine-tuned model and measure again, to see
  which part holds what it forgot and what it learned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from transformers import TrainerCallback


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
    logprob, count, _ = _score(model, processor, prompts, images, responses, batch_size, add_eos, norms=False)
    return logprob, count


@torch.no_grad()
def _score(model, processor, prompts, images, responses, batch_size: int, add_eos: bool = True, norms: bool = True):
    """Batched, in eval mode: per response its log-probability, token count and (``norms``) |e_y - p|."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            sl = slice(start, start + batch_size)
            batch, mask = _response_batch(processor, prompts[sl], images[sl], responses[sl], add_eos)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            stats = _response_stats(model, batch, mask, norms=norms)
            out.append([t.cpu() for t in stats])
    finally:
        model.train(was_training)
    logprob, count, norm = (torch.cat(column).numpy() for column in zip(*out))
    return logprob, count, norm


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


# -----------------------------------------------------------------------------
# Data sources: (prompt, image, response) triples


@dataclass
class Samples:
    """(prompt, image, response) triples of one data source; responses are text or token ids."""

    prompts: list
    images: list
    responses: list

    def __post_init__(self):
        if not len(self.prompts) == len(self.images) == len(self.responses):
            raise ValueError(f"Samples: {len(self.prompts)} prompts, {len(self.images)} images, "
                             f"{len(self.responses)} responses: they must match one to one")

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, index) -> "Samples":
        index = list(index)
        return Samples([self.prompts[i] for i in index], [self.images[i] for i in index],
                       [self.responses[i] for i in index])

    def head(self, n: int) -> "Samples":
        return self.select(range(min(n, len(self))))

    def spread(self, n: int) -> "Samples":
        """n samples evenly spaced through the set (a stratified subset of a set ordered by skill)."""
        if n >= len(self):
            return self
        return self.select(np.linspace(0, len(self) - 1, n).round().astype(int).tolist())

    @classmethod
    def from_dataset(cls, data) -> "Samples":
        """A TRL dataset's rows (``prompt``, ``image``, ``completion``): the completion is the response."""
        from .answers import completion_text

        return cls(list(data["prompt"]), list(data["image"]), [completion_text(c) for c in data["completion"]])


def prior_samples(n_per_skill: int, *, split: str = "test", seed: int = 0, size: int = 64, skills=None) -> Samples:
    """Prior-knowledge samples x_v: world items with their correct answers, ``n_per_skill`` of each skill."""
    from .puzzles import user_turn
    from .world import check_skills, items

    triples = [(user_turn(it.question), it.image, f"<answer>{it.answer}</answer>")
               for skill in check_skills(skills) for it in items(skill, split, n_per_skill, seed, size)]
    return Samples(*map(list, zip(*triples)))


def _place(pos: int, rows: int, cols: int) -> str:
    r, c = divmod(pos - 1, cols)
    vert = "top" if r == 0 else "bottom" if r == rows - 1 else f"row {r + 1}"
    horiz = "left" if c == 0 else "right" if c == cols - 1 else f"column {c + 1}"
    if rows == 1:
        return horiz
    if cols == 1:
        return vert
    return f"{vert} {horiz}".replace("row ", "middle row ").replace("column ", "middle column ")


_CUES = (
    "its colours continue the neighbouring piece without a seam",
    "the line of the horizon lines up with the piece beside it",
    "the light across it matches the side it came from",
    "the edge it shares with the next piece carries the same pattern",
    "what is cut at its border continues on the piece next to it",
)


def reasoning_trace(solution, rows: int, cols: int, seed: int = 0) -> str:
    """A step-by-step explanation of a puzzle's solution, in a style the pocket base model never saw.

    The stand-in for the paper's teacher (GPT-4o) reasoning: fluent, off-distribution text that walks
    through every piece and ends in the right answer (``<think>...</think> <answer>...</answer>``).
    """
    from .answers import format_answer

    rng = np.random.default_rng(seed)
    n = rows * cols
    if sorted(solution) != list(range(1, n + 1)):
        raise ValueError(f"reasoning_trace: solution {solution} is not a permutation of 1..{n}")
    steps = [f"Let me reason step by step about the {rows} by {cols} puzzle, one piece at a time."]
    for here, there in enumerate(solution, start=1):
        cue = _CUES[int(rng.integers(len(_CUES)))]
        steps.append(f"The piece now at position {here} belongs at the {_place(there, rows, cols)}, "
                     f"which is position {there}, because {cue}.")
    steps.append("Checking that every position is used exactly once, the arrangement is consistent.")
    return format_answer(solution, think=" ".join(steps))


def reasoning_samples(data) -> Samples:
    """The reasoning corpus for a puzzle dataset: each puzzle with :func:`reasoning_trace` as response."""
    responses = [reasoning_trace(list(sol), r, c, seed=int(s))
                 for sol, r, c, s in zip(data["solution"], data["rows"], data["cols"], data["seed"])]
    return Samples(list(data["prompt"]), list(data["image"]), responses)


def study_sources(data, *, rft_final=None, rft_early=None, per_prompt: int = 8, max_new_tokens: int = 24,
                  seed: int = 0, progress: bool = True) -> tuple[dict, dict]:
    """The four data sources of the paper's landscape, on the same puzzles ``data``:

    ``sft_answers`` (ground truth), ``rft_rollouts`` / ``rft_rollouts_early`` (the distinct correct
    rollouts of an RFT checkpoint, by rejection sampling; left out, with a note in the stats, when a
    checkpoint is not given or gets nothing right) and ``reasoning`` (:func:`reasoning_trace`).
    Rollouts are sampled with a fixed ``seed`` (the same sources on every run). Returns ``(sources, stats)``.
    """
    from .train import collect_rollouts

    sources, stats = {"sft_answers": Samples.from_dataset(data)}, {}
    for name, checkpoint in (("rft_rollouts", rft_final), ("rft_rollouts_early", rft_early)):
        if not checkpoint:
            stats[name] = "no checkpoint given"
            continue
        rollouts, stats[name] = collect_rollouts(checkpoint, data, per_prompt, max_new_tokens=max_new_tokens,
                                                 answer_format=data[0]["answer_format"], progress=progress, seed=seed)
        if len(rollouts):
            sources[name] = Samples.from_dataset(rollouts)
    sources["reasoning"] = reasoning_samples(data)
    return sources, stats


def landscape(model, processor, sources: dict, *, batch_size: int = 32) -> "pd.DataFrame":
    """The probability landscape: every response of every source scored under ``model`` (the base).

    One row per response: ``source, index, logprob, n_tokens, perplexity`` (per-token).
    """
    import pandas as pd

    frames = []
    for name, s in sources.items():
        lp, n = sequence_logprobs(model, processor, s.prompts, s.images, s.responses, batch_size=batch_size)
        frames.append(pd.DataFrame({"source": name, "index": np.arange(len(s)), "logprob": lp, "n_tokens": n,
                                    "perplexity": perplexity(lp, n)}))
    return pd.concat(frames, ignore_index=True)


# -----------------------------------------------------------------------------
# Gradients: per-sample gradients of log pi(y | x), in full or in a subspace


def select_parameters(model, subspace: str = "full") -> list:
    """The parameters influence is measured in: ``"full"`` (every trainable one), ``"lora"`` (the LoRA
    adapter weights of a peft model), or a regular expression matched against parameter names
    (e.g. ``"lm_head|layers\\.3\\."`` for the output head and the last text layer)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if subspace == "full":
        chosen = named
    elif subspace == "lora":
        chosen = [(n, p) for n, p in named if "lora_" in n]
    else:
        pattern = re.compile(subspace)
        chosen = [(n, p) for n, p in named if pattern.search(n)]
    if not chosen:
        raise ValueError(f"select_parameters: no trainable parameter matches subspace {subspace!r} "
                         "(use 'full', 'lora' on a peft model, or a regex of parameter names)")
    return [p for _, p in chosen]


class CountSketch:
    """A random projection of gradients to ``k`` dimensions, for models whose full per-sample gradients
    cannot be held (LESS, Xia et al. 2024, projects them at random too).

    A count sketch (a sparse Johnson-Lindenstrauss transform): every coordinate is added, with a random
    sign, to one of ``k`` buckets, so ``<Sx, Sy>`` estimates ``<x, y>`` without bias and costs O(D) per
    gradient. The hash of a parameter is drawn from ``seed`` and its index, so the projection is the
    same for every sample; it is never a k x D matrix. With ``cache=True`` (the default, right for the
    pocket model) the hashes are kept, 5 bytes per parameter (int32 bucket, int8 sign); with
    ``cache=False`` they are regenerated for every gradient (no memory, more time: large models).
    """

    def __init__(self, k: int, seed: int = 0, cache: bool = True):
        if k < 1:
            raise ValueError(f"CountSketch: k must be >= 1, got {k}")
        self.k, self.seed, self.cache, self._hashes = k, seed, cache, {}

    def _hash(self, i: int, n: int, device):
        if i in self._hashes:
            return self._hashes[i]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        bucket = torch.randint(self.k, (n,), generator=gen, dtype=torch.int32).to(device)
        sign = (torch.randint(2, (n,), generator=gen, dtype=torch.int8) * 2 - 1).to(device)
        if self.cache:
            self._hashes[i] = (bucket, sign)
        return bucket, sign

    def __call__(self, grads: list) -> torch.Tensor:
        out = torch.zeros(self.k, dtype=torch.float32, device=grads[0].device)
        for i, g in enumerate(grads):
            bucket, sign = self._hash(i, g.numel(), g.device)
            out.index_add_(0, bucket, g.reshape(-1).float() * sign.float())
        return out


def _response_stats(model, batch, mask, norms: bool = True):
    """Per sequence: log pi(y|x) summed over response tokens, their count, and sqrt(sum_t ||e_{y_t} - p_t||^2)
    (NaN unless ``norms``).

    The last is the norm of the gradient of log pi(y|x) with respect to the logits: |A(x_v)| for a
    probed sample, |G(x_u)| for a trained one, in Ren & Sutherland's decomposition.
    """
    logits = model(**batch).logits.float()[:, :-1]
    logp = torch.log_softmax(logits, dim=-1)
    ids = batch["input_ids"][:, 1:, None]
    m = mask[:, 1:].to(logits.device)
    token = logp.gather(-1, ids).squeeze(-1)
    logprob, count = (token * m).sum(1), m.sum(1)
    if not norms:
        return logprob, count, torch.full_like(logprob, float("nan"))
    p = logp.exp()
    sq = (1 - 2 * token.exp() + (p * p).sum(-1)).clamp_min(0)
    return logprob, count, (sq * m).sum(1).sqrt()


@dataclass
class Gradients:
    """Per-sample gradients of log pi(y|x) (rows of ``vectors``) and what the normalisation needs."""

    vectors: torch.Tensor  # (N, D) full, (N, D_subspace), or (N, k) projected
    logprob: np.ndarray
    logit_norm: np.ndarray  # |A| (probe) or |G| (train): see _response_stats

    @property
    def norms(self) -> np.ndarray:
        return self.vectors.norm(dim=1).cpu().numpy()


def _sample_gradient(model, processor, samples: Samples, i: int, params: list):
    """Gradient of log pi(y_i|x_i) in ``params`` (one forward and backward), log pi itself, and |e_y - p|."""
    batch, mask = _response_batch(processor, samples.prompts[i:i + 1], samples.images[i:i + 1],
                                  samples.responses[i:i + 1], add_eos=True)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    lp, _, norm = _response_stats(model, batch, mask)
    return torch.autograd.grad(lp[0], params), lp.item(), norm.item()


def response_gradients(model, processor, samples: Samples, *, subspace: str = "full", project: int | None = None,
                       seed: int = 0, progress: bool = False) -> Gradients:
    """Gradient of log pi(y|x) for every sample, one forward and backward each (the pocket model is small
    enough that a loop beats padding a batch); ``project=k`` count-sketches each gradient to k numbers."""
    from tqdm.auto import tqdm

    params = select_parameters(model, subspace)
    sketch = CountSketch(project, seed) if project else None
    was_training = model.training
    model.eval()
    vectors, logprob, norm = [], [], []
    try:
        for i in tqdm(range(len(samples)), desc="gradients", disable=not progress):
            grads, lp, n = _sample_gradient(model, processor, samples, i, params)
            vectors.append(sketch(grads) if sketch else torch.cat([g.reshape(-1).float() for g in grads]))
            logprob.append(lp)
            norm.append(n)
    finally:
        model.train(was_training)
    return Gradients(torch.stack(vectors), np.array(logprob), np.array(norm))


# -----------------------------------------------------------------------------
# Influence of a step on x_u on log pi(y_v | x_v): magnitude and direction


@dataclass
class Influence:
    """How one step on each training sample u moves the log-probability of each probe sample v.

    ``delta[u, v]``: the change of log pi(y_v|x_v) after one SGD step of size ``lr`` on -log pi(y_u|x_u)
    (measured, or its first-order prediction lr * <g_u, g_v>). ``magnitude`` normalises it as Ren &
    Sutherland do: |delta| / (lr |A(x_v)| |G(x_u)|), a lower bound on the norm of the empirical NTK
    K(x_v, x_u), comparable across sources whose answers differ in length and confidence.
    """

    delta: np.ndarray  # (U, V)
    lr: float
    train_norm: np.ndarray  # |G(x_u)|
    probe_norm: np.ndarray  # |A(x_v)|
    cosine: np.ndarray | None = None  # (U, V) gradient cosine, the direction

    @property
    def magnitude(self) -> np.ndarray:
        return np.abs(self.delta) / (self.lr * np.outer(self.train_norm, self.probe_norm) + 1e-30)

    @property
    def signed(self) -> np.ndarray:
        return self.delta / (self.lr * np.outer(self.train_norm, self.probe_norm) + 1e-30)

    def summary(self) -> dict:
        out = {"influence": float(self.magnitude.mean()), "influence_median": float(np.median(self.magnitude)),
               "influence_signed": float(self.signed.mean()),
               "delta_logprob": float(self.delta.mean())}
        if self.cosine is not None:
            out["gradient_cosine"] = float(self.cosine.mean())
        return out


def gradient_influence(model, processor, train: Samples, probe: Samples, *, lr: float = 1.0,
                       subspace: str = "full", project: int | None = None, seed: int = 0,
                       progress: bool = False) -> Influence:
    """First-order influence: ``delta = lr * <g_u, g_v>`` from per-sample gradients, and their cosine."""
    gu = response_gradients(model, processor, train, subspace=subspace, project=project, seed=seed, progress=progress)
    gv = response_gradients(model, processor, probe, subspace=subspace, project=project, seed=seed, progress=progress)
    inner = (gu.vectors @ gv.vectors.T).cpu().numpy()
    cosine = inner / (np.outer(gu.norms, gv.norms) + 1e-30)
    return Influence(lr * inner, lr, gu.logit_norm, gv.logit_norm, cosine)


def step_influence(model, processor, train: Samples, probe: Samples, *, lr: float = 1e-5, subspace: str = "full",
                   batch_size: int = 32, progress: bool = False) -> Influence:
    """Measured influence: for each u, one SGD step ``theta += lr * grad log pi(y_u|x_u)`` (in the chosen
    parameters), the probe set re-scored, the parameters restored. Exact, not first-order; U steps.

    The step must be small for the normalised magnitude to mean what it should: on the pocket base a
    step of 1e-3 already moves probe log-probabilities by about a nat, and the ratio then explodes on
    probes the model is sure of (|A| near 0). At the default 1e-5 measured and first-order agree (the
    tests check it on a tiny model; ``benchmarks/influence_matrix.py`` on the pocket base).
    """
    from tqdm.auto import tqdm

    params = select_parameters(model, subspace)
    saved = [p.detach().clone() for p in params]
    was_training = model.training
    model.eval()
    base, _, probe_norm = _score(model, processor, probe.prompts, probe.images, probe.responses, batch_size)
    delta, train_norm = np.zeros((len(train), len(probe))), np.zeros(len(train))
    try:
        for u in tqdm(range(len(train)), desc="influence steps", disable=not progress):
            grads, _, train_norm[u] = _sample_gradient(model, processor, train, u, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.add_(g, alpha=lr)
            after, _ = sequence_logprobs(model, processor, probe.prompts, probe.images, probe.responses,
                                         batch_size=batch_size)
            delta[u] = after - base
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        model.train(was_training)
    return Influence(delta, lr, train_norm, probe_norm)


def symmetry(model, processor, a: Samples, b: Samples, *, lr: float = 1e-5, **kw) -> "pd.DataFrame":
    """The first-order symmetry check: the influence of a step on u in ``a`` on v in ``b``, against that of
    a step on v on u. Rows ``u, v, u_on_v, v_on_u`` (log-prob changes); to first order they are equal."""
    import pandas as pd

    ab = step_influence(model, processor, a, b, lr=lr, **kw)
    ba = step_influence(model, processor, b, a, lr=lr, **kw)
    u, v = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    return pd.DataFrame({"u": u.ravel(), "v": v.ravel(), "u_on_v": ab.delta.ravel(), "v_on_u": ba.delta.T.ravel()})


# -----------------------------------------------------------------------------
# During training: probe log-probabilities, influence along a run


def _check_unsharded(args, who: str):
    """The probes run on the main process with whole weights: not under ZeRO-3 or FSDP (sharded weights)."""
    ds = getattr(args, "hf_deepspeed_config", None)
    if getattr(args, "fsdp", None) or (ds is not None and ds.is_zero3()):
        raise ValueError(f"{who} needs whole weights on the main process; it cannot run under DeepSpeed ZeRO-3 "
                         "or FSDP. Use ZeRO-2 / DDP, or run the analysis on saved checkpoints.")


class ProbeCallback(TrainerCallback):
    """A TRL/transformers callback that scores fixed probe sets every ``every`` steps (and at step 0).

    ``probes`` maps a source name to :class:`Samples`; rows ``source, step, metric, value`` with the
    mean ``logprob`` (summed over response tokens) and mean per-token ``perplexity``. Pass it to any
    run of :mod:`jigsaw_lib.train` (``callbacks=[ProbeCallback(...)]``); ``path`` appends rows to a CSV.
    """

    def __init__(self, processor, probes: dict, every: int, *, path=None, batch_size: int = 32):
        if every < 1:
            raise ValueError(f"ProbeCallback: every must be >= 1, got {every}")
        self.processor, self.probes, self.every, self.batch_size = processor, probes, every, batch_size
        self.path, self.rows = path, []

    def measure(self, model, step: int):
        import pandas as pd

        rows = []
        for name, s in self.probes.items():
            lp, n = sequence_logprobs(model, self.processor, s.prompts, s.images, s.responses,
                                      batch_size=self.batch_size)
            rows += [{"source": name, "step": step, "metric": "logprob", "value": float(lp.mean())},
                     {"source": name, "step": step, "metric": "perplexity", "value": float(perplexity(lp, n).mean())}]
        self.rows += rows
        if self.path is not None:
            from pathlib import Path

            path = Path(self.path)
            pd.DataFrame(rows).to_csv(path, mode="a", header=not path.exists(), index=False)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _check_unsharded(args, "ProbeCallback")
        if state.global_step == 0 and state.is_world_process_zero:
            self.measure(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 and state.is_world_process_zero:
            self.measure(model, state.global_step)

    def table(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["source", "step", "metric", "value"])


class InfluenceCallback(TrainerCallback):
    """Measures, at chosen steps of a run, the influence of the run's own training samples on a prior
    probe set (:func:`step_influence`, plus the gradient cosine) and their perplexity under the model
    (``own_perplexity``)."""

    def __init__(self, processor, source: str, train: Samples, probe: Samples, steps, *, lr: float = 1e-5,
                 subspace: str = "full", project: int | None = None):
        self.processor, self.source, self.train, self.probe = processor, source, train, probe
        self.steps, self.lr, self.subspace, self.project, self.rows = set(steps), lr, subspace, project, []

    def measure(self, model, step: int):
        inf = step_influence(model, self.processor, self.train, self.probe, lr=self.lr, subspace=self.subspace)
        first = gradient_influence(model, self.processor, self.train, self.probe, lr=self.lr, subspace=self.subspace,
                                   project=self.project)
        lp, n = sequence_logprobs(model, self.processor, self.train.prompts, self.train.images, self.train.responses)
        values = {**inf.summary(), "gradient_cosine": float(first.cosine.mean()),
                  "influence_first_order": float(first.magnitude.mean()),
                  "own_perplexity": float(perplexity(lp, n).mean())}
        self.rows += [{"source": self.source, "step": step, "metric": k, "value": v} for k, v in values.items()]

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _check_unsharded(args, "InfluenceCallback")
        if 0 in self.steps and state.global_step == 0 and state.is_world_process_zero:
            self.measure(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and state.is_world_process_zero:
            self.measure(model, state.global_step)

    def table(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["source", "step", "metric", "value"])


def samples_dataset(samples: Samples):
    """A TRL SFT dataset (prompt, completion, image) whose completions are the samples' responses."""
    from datasets import Dataset

    from .puzzles import assistant_turn

    if any(not isinstance(r, str) for r in samples.responses):
        raise ValueError("samples_dataset: responses must be text to train on them")
    return Dataset.from_dict({
        "prompt": samples.prompts, "image": samples.images,
        "completion": [assistant_turn(r) for r in samples.responses],
    })


def influence_over_training(base, sources: dict, probe: Samples, *, steps=(0, 10, 25, 50), n_influence: int = 16,
                            learning_rate: float = 1e-3, batch_size: int = 16, lr_probe: float = 1e-5,
                            subspace: str = "full", project: int | None = None, seed: int = 0, output_dir=None,
                            progress: bool = True) -> "pd.DataFrame":
    """For each data source, SFT the base model on it (TRL's SFTTrainer) and measure, at ``steps``, the
    influence of its first ``n_influence`` samples on the prior ``probe`` set: the paper's magnitude
    curves (answers-only vs teacher reasoning vs RFT rollouts). Rows ``source, step, metric, value``."""
    import tempfile

    import pandas as pd

    from . import train
    from .models import load

    if max(steps) < 1:
        raise ValueError(f"influence_over_training: steps {list(steps)} must include one >= 1 (SFT steps to take)")
    frames = []
    for name, samples in sources.items():
        model, processor = load(base, dtype=torch.float32)
        cb = InfluenceCallback(processor, name, samples.head(n_influence), probe, steps, lr=lr_probe,
                               subspace=subspace, project=project)
        out = output_dir or tempfile.mkdtemp(prefix=f"influence-{name}-")
        trainer = train.sft_trainer(model, processor, samples_dataset(samples), out, max_steps=max(steps),
                                    per_device_train_batch_size=batch_size, learning_rate=learning_rate,
                                    lr_scheduler_type="constant", seed=seed, data_seed=seed, disable_tqdm=not progress)
        trainer.add_callback(cb)
        trainer.train()
        frames.append(cb.table())
    return pd.concat(frames, ignore_index=True)


# -----------------------------------------------------------------------------
# KL to the base model against forgetting ("RL's Razor")


def kl_forgetting(metrics: "pd.DataFrame") -> tuple["pd.DataFrame", dict]:
    """Points (method, seed, step, kl_to_base, forgetting) from a metrics table, and a least-squares line.

    ``forgetting`` = prior_mean at step 0 of the run minus prior_mean at the step (points are a run's
    evaluations after step 0). The fit: slope, intercept, Pearson r and Spearman rho over all points
    (r and rho are NaN when either quantity does not vary).
    """
    need = {"kl_to_base", "prior_mean"}
    if not need <= set(metrics.metric):
        raise ValueError(f"kl_forgetting: the metrics table needs the metrics {sorted(need)}; "
                         f"it has {sorted(set(metrics.metric))[:10]}")
    wide = metrics[metrics.metric.isin(need)].pivot_table(index=["method", "seed", "step"], columns="metric",
                                                          values="value").reset_index()
    start = wide[wide.step == 0].set_index(["method", "seed"])["prior_mean"]
    wide = wide[wide.step > 0].copy()
    wide["forgetting"] = [start.get((m, s), np.nan) - v for m, s, v in zip(wide.method, wide.seed, wide.prior_mean)]
    wide = wide.dropna(subset=["forgetting", "kl_to_base"])
    if len(wide) < 3:
        raise ValueError(f"kl_forgetting: {len(wide)} points; it needs at least 3 evaluations after step 0")
    slope, intercept = np.polyfit(wide.kl_to_base, wide.forgetting, 1)
    varies = wide.kl_to_base.std() > 0 and wide.forgetting.std() > 0
    fit = {"slope": float(slope), "intercept": float(intercept), "n": len(wide),
           "pearson_r": float(np.corrcoef(wide.kl_to_base, wide.forgetting)[0, 1]) if varies else float("nan"),
           "spearman_rho": float(np.corrcoef(wide.kl_to_base.rank(), wide.forgetting.rank())[0, 1])
           if varies else float("nan")}
    return wide[["method", "seed", "step", "kl_to_base", "forgetting"]].reset_index(drop=True), fit


# -----------------------------------------------------------------------------
# Where the forgetting sits: graft the base's weights of one part back into a fine-tuned model

PARTS = {  # parameter-name patterns of a Qwen2_5_VLForConditionalGeneration's parts
    "tower": r"^model\.visual\.(patch_embed|blocks)\.",  # the vision transformer (what freeze_vision fixes)
    "merger": r"^model\.visual\.merger\.",  # the projection of image features into the language model
    "language_model": r"^(model\.language_model\.|lm_head\.)",  # text layers, embeddings and output head
}
# finer parts inside one of PARTS, grafted the same way
SUBPARTS = {
    # inside the language model: the token embeddings and the output head (one tied matrix in the pocket model).
    # RFT's model of seed 0 on E21 with the base's put back: prior .690 -> .704, jigsaw exact unchanged (session 24)
    "embeddings": r"^(model\.language_model\.embed_tokens\.|lm_head\.)",
}


@torch.no_grad()
def graft(model, donor, part: str):
    """Copy ``donor``'s weights of one part (a key of :data:`PARTS` or :data:`SUBPARTS`) into ``model``, in place;
    return ``model``."""
    patterns = {**PARTS, **SUBPARTS}
    if part not in patterns:
        raise ValueError(f"graft: unknown part {part!r}; the parts are: {', '.join(patterns)}")
    pattern, theirs = re.compile(patterns[part]), donor.state_dict()
    mine = {k: v for k, v in model.state_dict().items() if pattern.search(k)}
    if not mine or set(mine) - set(theirs):
        raise ValueError(f"graft: the models do not share the part {part!r} (different architectures?)")
    for k, v in mine.items():
        v.copy_(theirs[k])
    return model


def where_forgetting_sits(checkpoint, base, *, parts=(*PARTS, *SUBPARTS), n_per_skill: int = 200,
                          n_jigsaw: int = 200, grid=(2, 2), puzzle_world: dict | None = None, image_size: int = 64,
                          progress: bool = True) -> "pd.DataFrame":
    """Prior skills and greedy jigsaw accuracy of a fine-tuned checkpoint as it is, with each part in ``parts``
    put back to the base's weights, and of the base: rows ``model, skill, metric, value``.

    What returns when a part is put back was forgotten in that part; what is lost was learned there. Prior
    items are asked in the base's world (``pretrain.base_world``), puzzles with ``puzzle_world``'s changes
    (the run's ``cfg.puzzle_world``)."""
    import pandas as pd

    from . import evaluate, world
    from .models import load
    from .pretrain import base_world

    base_model, processor = load(base)

    def measure(model, name):
        with base_world(base):
            skills = evaluate.evaluate_skills(model, processor, n_per_skill, image_size=image_size, progress=progress)
            with world.configure(**(puzzle_world or {})):
                jigsaw = evaluate.evaluate_jigsaw(model, processor, [tuple(grid)], n_jigsaw, samples=0,
                                                  image_size=image_size, progress=progress)
        mean = {"skill": "prior_mean", "metric": "accuracy", "value": skills["value"].mean()}
        table = pd.concat([skills, pd.DataFrame([mean]), jigsaw[jigsaw.metric.isin(["exact", "hit"])]])
        return table.assign(model=name)[["model", "skill", "metric", "value"]]

    tables = [measure(load(checkpoint)[0], "finetuned")]
    for part in parts:
        tables.append(measure(graft(load(checkpoint)[0], base_model, part), f"base {part}"))
    tables.append(measure(base_model, "base"))
    return pd.concat(tables, ignore_index=True)
