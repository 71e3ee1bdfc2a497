"""Training: TRL's SFTTrainer and GRPOTrainer set up for the jigsaw study.

This module holds no training loop of its own: it builds TRL's trainers with the settings the study
needs and that TRL's defaults get wrong for it:

- ``max_length=None`` for SFT: truncation would cut image tokens ("image features and image tokens
  do not match" is the commonest failure of VLM SFT in TRL);
- on a machine without a GPU: ``use_cpu``, no bf16 and no gradient checkpointing (GRPOConfig turns
  both on by default; on a CPU they only slow the pocket model down);
- GRPO with the three jigsaw rewards of :mod:`jigsaw_lib.rewards` and a KL term to the base model
  (``beta``; TRL's default of 0 drops the reference model and logs no KL).

Every other keyword goes straight to ``SFTConfig`` / ``GRPOConfig``, so a misspelled key is an error
raised by TRL itself, and every TRL option is available.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from trl.extras.profiling import profiling_decorator

from .prefix import install_method, share_prefix, world_size
from .rewards import JIGSAW_REWARDS


def device_defaults() -> dict:
    """Config keys that depend on the hardware: bf16 on a GPU, plain fp32 on a CPU."""
    if torch.cuda.is_available():
        return {"bf16": True}
    return {"use_cpu": True, "bf16": False, "gradient_checkpointing": False, "dataloader_num_workers": 0}


def _common(output_dir, overrides: dict) -> dict:
    config = {"output_dir": str(output_dir), "report_to": "none", "save_strategy": "no", "logging_steps": 1,
              **device_defaults()}
    config.update(overrides)
    return config


def sft_trainer(model, processor, train_dataset, output_dir, **config) -> SFTTrainer:
    """A TRL ``SFTTrainer`` on prompt/completion rows (loss on the completion only)."""
    args = SFTConfig(**_common(output_dir, {"max_length": None, **config}))
    return SFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=processor)


def grpo_trainer(model, processor, train_dataset, output_dir, reward_funcs=JIGSAW_REWARDS, *,
                 share_prompts: bool = True, **config) -> GRPOTrainer:
    """A TRL ``GRPOTrainer`` rewarded by the jigsaw rewards (hit + exact + format by default).

    ``share_prompts`` reads each prompt of a group once instead of ``num_generations`` times: when the group is
    sampled (without vLLM; :func:`share_prompt_reads`, the same samples) and when it is scored
    (:class:`SharedPromptGRPOTrainer`, the same numbers to float rounding). With a policy that reads a batch's common
    prefix once (``models.load``, :mod:`jigsaw_lib.prefix`), TRL's reference model does too. ``share_prompts=False``
    and ``load(..., share_prefix=False)``: TRL's GRPOTrainer as it comes. A pocket step: 3.7 s -> 0.8 s.

    With ``beta > 0`` TRL re-loads the reference model (the KL anchor) from the directory the
    policy was loaded from (``model.config._name_or_path``), so the policy must come from
    :func:`jigsaw_lib.models.load`, not straight from ``build_pocket`` without ``save_dir``.
    """
    defaults = {"beta": 0.04, "num_generations": 8, "temperature": 1.0, "max_completion_length": 64}
    args = GRPOConfig(**_common(output_dir, {**defaults, **config}))
    if args.beta and not getattr(model.config, "_name_or_path", ""):
        raise ValueError(
            "grpo_trainer: beta > 0 needs a reference model, which TRL loads from the policy's checkpoint "
            "directory, but this model was built in memory. Save it first (build_pocket(save_dir=...)) and "
            "load it with jigsaw_lib.models.load, or pass beta=0."
        )
    share_prompt_reads(model, args.num_generations, enable=share_prompts and not args.use_vllm)
    trainer_class = SharedPromptGRPOTrainer if share_prompts else GRPOTrainer
    trainer = trainer_class(model=model, args=args, reward_funcs=list(reward_funcs), train_dataset=train_dataset,
                            processing_class=processor)
    if trainer.ref_model is not None:  # TRL loads it itself: it reads the common prefix once too, as the policy
        share_prefix(trainer.ref_model, enable=share_prompts and hasattr(model.model, "_plain_forward"))
    return trainer


# The keywords of GRPOTrainer._get_per_token_logps_and_entropies that a Qwen2.5-VL jigsaw batch leaves unset
_OTHER_VISION_INPUTS = ("pixel_attention_mask", "spatial_shapes", "num_tiles", "image_sizes", "token_type_ids",
                        "image_position_ids")


def _prompt_heads(prompt_ids, prompt_mask, mm_token_type_ids, pixel_values, image_grid_thw):
    """``(heads, inverse)``: the first row of each distinct prompt (tokens, mask and image) of a batch with one
    image a row, and for every row the index of its prompt among the heads; None where no prompt repeats."""
    images = torch.split(pixel_values, image_grid_thw.prod(-1).tolist())
    heads, inverse = [], []
    for row in range(prompt_ids.size(0)):
        for k, head in enumerate(heads):
            if (torch.equal(prompt_ids[row], prompt_ids[head]) and torch.equal(prompt_mask[row], prompt_mask[head])
                    and torch.equal(mm_token_type_ids[row], mm_token_type_ids[head])
                    and torch.equal(image_grid_thw[row], image_grid_thw[head])
                    and torch.equal(images[row], images[head])):
                inverse.append(k)
                break
        else:
            inverse.append(len(heads))
            heads.append(row)
    if len(heads) == len(inverse):
        return None
    return heads, torch.tensor(inverse, device=prompt_ids.device)


def shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep, *, pixel_values, image_grid_thw,
                        mm_token_type_ids, heads, inverse):
    """TRL's fused per-token log-probs (and entropies) of the completions, with each distinct prompt read once.

    ``input_ids`` are prompts (left-padded, one length) followed by ``logits_to_keep`` completion tokens, as
    GRPOTrainer scores them; ``heads``/``inverse`` from :func:`_prompt_heads`. The prompts but their last token
    fill a cache in one forward pass over their distinct rows (with grad, when grad is on: the prompt's keys and
    values depend on the weights); the cache is gathered to every row (``inverse``) and the rows' last prompt token
    and completions run over it through the model's fused LM head (``fused_lm_head=True, shift_labels=``), so
    temperature, entropy and TRL's chunked log-softmax are TRL's own. Qwen2.5-VL's 3D positions are computed for
    the whole rows once (``get_rope_index``) and passed to both passes, so no ``rope_deltas`` state is used.
    Returns the model's ``FusedCausalLMOutput``; ``log_probs`` and ``entropy`` are ``(rows, logits_to_keep)``.
    """
    from transformers import DynamicCache

    cut = input_ids.size(1) - logits_to_keep - 1  # the prompt but its last token
    positions, _ = model.model.get_rope_index(input_ids, mm_token_type_ids=mm_token_type_ids,
                                              image_grid_thw=image_grid_thw, attention_mask=attention_mask)
    rows = torch.tensor(heads, device=input_ids.device)
    images = torch.split(pixel_values, image_grid_thw.prod(-1).tolist())
    cache = DynamicCache(config=model.config)
    model.model(input_ids=input_ids[rows, :cut], attention_mask=attention_mask[rows, :cut],
                position_ids=positions[:, rows, :cut], mm_token_type_ids=mm_token_type_ids[rows, :cut],
                pixel_values=torch.cat([images[h] for h in heads]), image_grid_thw=image_grid_thw[rows],
                cache=cache, use_cache=True)
    if cache.get_seq_length() != cut:
        raise RuntimeError(f"shared_prompt_logps: the prompts' cache holds {cache.get_seq_length()} tokens, not {cut} "
                           "(gradient checkpointing drops it); score with share_prompts=False")
    cache.reorder_cache(inverse)
    labels = input_ids[:, -logits_to_keep:].masked_fill(attention_mask[:, -logits_to_keep:] == 0, -100)
    return model(input_ids=input_ids[:, cut:-1], attention_mask=attention_mask[:, :-1],
                 position_ids=positions[:, :, cut:-1], cache=cache, shift_labels=labels, fused_lm_head=True)


class SharedPromptGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` that reads each prompt of a group once when it scores the group's completions.

    Each step GRPO scores every completion under the policy (forward and backward) and the reference model, and
    TRL runs each over the whole row, prompt included: a prompt's ``num_generations`` copies are read again and
    again. At pocket scale a prompt is about 190 tokens and a completion about 8, so that is nearly all of the
    step's forward and backward work. Here a batch whose prompts repeat (one image a row, in the prompt, Qwen2.5-VL's
    inputs, one process, one chunk, no gradient checkpointing in a training pass: it drops the cache) is scored by
    :func:`shared_prompt_logps`; anything else goes to TRL's own code.
    The log-probs equal TRL's up to float rounding (the same sums in another order, about 1e-6), so a run's
    numbers move in their last bits, not in what they mean.
    """

    @profiling_decorator
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, pixel_values=None,
                                           image_grid_thw=None, num_images=None, mm_token_type_ids=None, **other):
        def trl():
            return super(SharedPromptGRPOTrainer, self)._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, pixel_values=pixel_values,
                image_grid_thw=image_grid_thw, num_images=num_images, mm_token_type_ids=mm_token_type_ids, **other)

        rows = input_ids.size(0)
        if (compute_aux_loss or world_size() > 1 or (batch_size or rows) < rows
                or pixel_values is None or image_grid_thw is None or mm_token_type_ids is None
                or image_grid_thw.size(0) != rows or (num_images is not None and set(num_images) != {1})
                or any(other.get(k) is not None for k in _OTHER_VISION_INPUTS)
                or not hasattr(getattr(model, "model", None), "get_rope_index")
                or mm_token_type_ids[:, -logits_to_keep:].any()  # an image in the completions (tools)
                # gradient checkpointing drops the cache in training passes
                or (model.training and torch.is_grad_enabled() and model.is_activation_checkpointing)):
            return trl()
        prompt = slice(0, input_ids.size(1) - logits_to_keep)
        found = _prompt_heads(input_ids[:, prompt], attention_mask[:, prompt], mm_token_type_ids[:, prompt],
                              pixel_values, image_grid_thw)
        if found is None:
            return trl()
        with self.accelerator.autocast():
            out = shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep, pixel_values=pixel_values,
                                      image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids,
                                      heads=found[0], inverse=found[1])
        return out.log_probs, (out.entropy if compute_entropy else None), None


def _group_heads(inputs: dict, group: int) -> dict | None:
    """The first row of each run of ``group`` identical rows of a generate batch (tokens and image), or None
    where the batch is not made of such runs or is not a prompt with one image a row."""
    from .evaluate import PROMPT_IMAGE_INPUTS, PROMPT_TOKEN_INPUTS

    if set(inputs) != {*PROMPT_TOKEN_INPUTS, *PROMPT_IMAGE_INPUTS} or group < 2:
        return None
    rows = inputs["input_ids"].shape[0]
    thw = inputs["image_grid_thw"]
    if rows % group or thw.shape[0] != rows:  # one image a row, as in the jigsaw prompts
        return None
    found = _prompt_heads(inputs["input_ids"], inputs["attention_mask"], inputs["mm_token_type_ids"],
                          inputs["pixel_values"], thw)
    runs = torch.arange(rows // group).repeat_interleave(group)
    if found is None or not torch.equal(found[1].cpu(), runs):
        return None
    heads, images = found[0], torch.split(inputs["pixel_values"], thw.prod(-1).tolist())
    return {**{key: inputs[key][heads] for key in PROMPT_TOKEN_INPUTS},
            "pixel_values": torch.cat([images[h] for h in heads]), "image_grid_thw": thw[heads]}


def share_prompt_reads(model, group: int, enable: bool = True):
    """Make ``model.generate`` read each prompt of GRPO's groups once (transformers' generation, vLLM unused).

    TRL's GRPOTrainer passes every prompt ``num_generations`` times in a row to ``model.generate``, which reads
    (prefills) each copy: at pocket scale that is nearly all of generation's time. Where a batch is made of such
    runs, this generates from one copy of each prompt with :func:`jigsaw_lib.evaluate.generate_shared`: the same
    rows in the same order, sampled from the same distributions. Any other call (other inputs, a cache of its own,
    several sequences a row, a cache implementation) goes to ``generate`` as it is. Off under several processes,
    where each would decide on its own rows and a sharded model (ZeRO-3) needs every rank in the same forward passes;
    ``enable=False`` takes it off. Installing it twice wraps once. It is bound to the model like a method, so a deep
    copy of the model gets its own.
    """
    return install_method(model, "generate", _shared_generate, enable, _share_group=group)


def _shared_generate(self, **kwargs):
    """``generate`` with each prompt of a GRPO group read once (:func:`share_prompt_reads`)."""
    from .evaluate import generate_shared

    config = kwargs.get("generation_config")
    own = ({"cache", "past_key_values", "num_return_sequences"} & set(kwargs)
           or (config is not None and ((config.num_return_sequences or 1) > 1 or config.cache_implementation)))
    tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    heads = None if own else _group_heads(tensors, self._share_group)
    if heads is None:
        return self._plain_generate(**kwargs)
    return generate_shared(self, heads, self._share_group, generate=self._plain_generate,
                           **{k: v for k, v in kwargs.items() if k not in tensors})


# -----------------------------------------------------------------------------
# The three methods of the study


def train_dataset(cfg, n: int | None = None):
    """Training puzzles of a run: images from the procedural world (or cfg.image_folder), seeded by cfg.seed."""
    from . import puzzles

    n = n or cfg.n_train
    with cfg.in_puzzle_world():  # build_dataset consumes the image generator inside the block
        if cfg.image_folder:
            images = puzzles.folder_images(cfg.image_folder)
        else:
            images = puzzles.procedural_images(n, size=cfg.image_size, seed=cfg.seed)
        return puzzles.build_dataset(images, grids=[tuple(g) for g in cfg.grids], n=n, seed=cfg.seed,
                                     answer_format=cfg.answer_format)


def _run_dir(cfg, output_dir) -> Path:
    from . import paths

    return Path(output_dir) if output_dir else paths.CHECKPOINTS / "runs" / cfg.run_name


def _last_checkpoint(out: Path, resume: bool) -> str | None:
    return get_last_checkpoint(str(out / "trainer")) if resume and (out / "trainer").exists() else None


def _output_dir(cfg, output_dir):
    out = _run_dir(cfg, output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    return out


def per_process(n: int, what: str = "batch_size") -> int:
    """Split a per-step count over the processes of the run (it must divide evenly)."""
    world = world_size()
    if n % world:
        raise ValueError(f"{what}={n} does not split evenly over {world} processes; make it a multiple of {world}")
    return n // world


def _run(cfg, trainer_fn, data, output_dir, resume, prior, progress, extra_callbacks, **trl):
    from .models import freeze_embeddings, freeze_vision_tower, load
    from .tracking import Tracker

    out = _output_dir(cfg, output_dir)
    last = _last_checkpoint(out, resume)
    if last and (done := _finished(cfg, out, last)):
        return done
    # fp32 master weights: bf16 weights would round GRPO's 1e-6 updates away (bf16 autocast still applies on GPU)
    model, processor = load(cfg.base, dtype=torch.float32)
    if last:
        # Resuming: transformers 5.24's Trainer restores weights with a plain load_state_dict, which matches
        # none of the keys of a Qwen2.5-VL checkpoint (saved under the legacy names "visual.*", "model.layers.*")
        # and silently keeps the base weights. from_pretrained converts the names, so load the weights here;
        # Trainer still restores the optimizer, scheduler and RNG states. The KL reference that GRPO loads from
        # config._name_or_path must stay the base model, not the checkpoint.
        model, _ = load(last, dtype=torch.float32)
        model.config._name_or_path = str(cfg.base)
    if cfg.freeze_vision:
        freeze_vision_tower(model)
    if cfg.freeze_embeddings:
        freeze_embeddings(model)
    tracker = Tracker(cfg, processor, out, prior=prior, progress=progress)
    checkpoint_every = trl.pop("checkpoint_every", cfg.eval_every)
    fixed = dict(max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, seed=cfg.seed, data_seed=cfg.seed, **trl)
    clash = sorted(set(cfg.trl) & set(fixed))
    if clash:
        raise ValueError(f"trl={{...}} sets {clash}, which the run's own config fields decide; set those fields instead "
                         "(e.g. config.make(..., learning_rate=...)), so that the recorded config is what ran")
    # the runner's defaults, which cfg.trl may change (e.g. save_strategy="no" where checkpoints would fill a disk)
    defaults = dict(lr_scheduler_type="constant", save_strategy="steps", save_steps=checkpoint_every,
                    save_total_limit=1, disable_tqdm=not progress)
    trainer = trainer_fn(model, processor, data, out / "trainer", **fixed, **{**defaults, **cfg.trl})
    if not cfg.freeze_vision:
        scale_tower_lr(trainer, model, cfg.vision_lr_scale)
    trainer.add_callback(tracker)
    for cb in extra_callbacks:
        trainer.add_callback(cb)
    if not resume and (out / "metrics.csv").exists() and trainer.is_world_process_zero():
        (out / "metrics.csv").unlink()
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out / "final"))  # gathers sharded (DeepSpeed) weights; writes on the main process
    if trainer.is_world_process_zero():
        processor.save_pretrained(out / "final")
    return RunResult(cfg, out, tracker.table())


def scale_tower_lr(trainer, model, scale: float) -> None:
    """Give the vision tower (``models.vision_tower_parameters``, what ``freeze_vision`` fixes) ``scale`` times the
    trainer's learning rate, through transformers' ``optimizer_cls_and_kwargs``: the optimizer is the one the
    trainer's args choose, its parameter groups split into tower and rest (weight decay as the Trainer decides it).
    The scheduler then scales each group's own rate, so the ratio holds over the run. Under DeepSpeed this holds as
    long as its config names no optimizer of its own (the configs in ``configs/accelerate`` do not): one that does
    replaces the Trainer's, groups and all."""
    from .models import vision_tower_parameters

    if scale == 1:
        return
    tower = {id(p) for p in vision_tower_parameters(model)}
    decay = set(trainer.get_decay_parameter_names(model))
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, model)
    lr = kwargs.get("lr", trainer.args.learning_rate)
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in tower, name in decay), []).append(p)
    # the rest first: the Trainer logs the first group's rate as the run's learning_rate
    params = [{"params": ps, "weight_decay": trainer.args.weight_decay if decays else 0.0,
               **({"lr": lr * scale} if in_tower else {})} for (in_tower, decays), ps in sorted(groups.items())]
    trainer.optimizer_cls_and_kwargs = (cls, {**kwargs, "params": params})


def _finished(cfg, out: Path, last: str):
    """The result of a run whose last checkpoint is its last step (its weights and metrics as they are), or None
    if the checkpoint is earlier and the run goes on.

    Training a finished run again would take one more, unmeasured step (transformers 5.24 resumes inside the
    last epoch when max_steps is not a multiple of the steps per epoch, and stops only after the next step).
    """
    import pandas as pd
    from accelerate import PartialState

    from .models import load, save

    step = json.loads((Path(last) / "trainer_state.json").read_text())["global_step"]
    if step < cfg.max_steps:
        return None
    if step > cfg.max_steps:
        raise ValueError(f"{last} is at step {step}, past max_steps={cfg.max_steps}: resume with "
                         f"max_steps={step}, or run again without resume")
    state = PartialState()
    if state.is_main_process:
        if not any((out / "final").glob("*.safetensors")):
            save(*load(last, dtype=torch.float32), out / "final")
        metrics = pd.read_csv(out / "metrics.csv") if (out / "metrics.csv").exists() else None
        if metrics is None or step not in set(metrics.step):
            raise FileNotFoundError(f"{out} holds a checkpoint of step {step} but no metrics of that step in "
                                    "metrics.csv: run it again without resume")
        metrics = metrics[metrics.step <= step].reset_index(drop=True)
    else:  # as in a trained run, only the main process holds the metrics
        metrics = pd.DataFrame(columns=["method", "seed", "step", "metric", "value"])
    state.wait_for_everyone()
    return RunResult(cfg, out, metrics)


@dataclass
class RunResult:
    config: object
    output_dir: Path
    metrics: "pd.DataFrame"

    @property
    def final(self) -> Path:
        return self.output_dir / "final"


def in_base_world(runner):
    """Run in the world the base model was pretrained in (puzzle images and prior skills; see pretrain.world_of)."""

    @functools.wraps(runner)
    def wrapped(cfg, *args, **kwargs):
        from .pretrain import base_world

        with base_world(cfg.base):
            return runner(cfg, *args, **kwargs)

    return wrapped


@in_base_world
def run_sft(cfg, output_dir=None, *, resume: bool = False, prior: bool = True, progress: bool = True,
            callbacks=(), data=None) -> RunResult:
    """SFT on ground-truth answers: TRL SFTTrainer on (prompt, image, answer) puzzles."""
    data = data if data is not None else train_dataset(cfg)
    return _run(cfg, sft_trainer, data, output_dir, resume, prior, progress, callbacks,
                per_device_train_batch_size=per_process(cfg.batch_size))


@in_base_world
def run_rft(cfg, output_dir=None, *, resume: bool = False, prior: bool = True, progress: bool = True,
            callbacks=()) -> RunResult:
    """RFT: TRL GRPOTrainer on the same puzzles, rewarded by hit + exact + format, KL to the base (beta)."""
    data = train_dataset(cfg)
    return _run(cfg, grpo_trainer, data, output_dir, resume, prior, progress, callbacks,
                per_device_train_batch_size=per_process(cfg.batch_size * cfg.num_generations,
                                                        "batch_size * num_generations"),
                num_generations=cfg.num_generations, beta=cfg.beta, temperature=cfg.temperature,
                max_completion_length=cfg.max_completion_length, reward_weights=list(cfg.reward_weights),
                use_vllm=cfg.use_vllm)


def collect_rollouts(checkpoint, data, per_prompt: int = 8, temperature: float = 1.0, max_new_tokens: int = 24,
                     answer_format: str = "direct", progress: bool = True, seed: int = 0):
    """Sample ``per_prompt`` rollouts per puzzle from a checkpoint; keep the distinct exactly-right ones.

    Returns ``(dataset, stats)``: an SFT dataset whose ``completion`` is a correct rollout of the
    model (rejection sampling), and the acceptance numbers. The sampling is seeded by ``seed``: the
    rollouts do not depend on what the process ran before, and torch's random state (CPU and the current
    GPU) is left as it was.
    """
    from datasets import Dataset

    from .evaluate import generate, score_jigsaw
    from accelerate import PartialState

    from .models import load
    from .puzzles import assistant_turn

    model, processor = load(checkpoint)
    model.to(PartialState().device)  # sample on the GPU where there is one (the process's own under accelerate)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        sampled = generate(model, processor, list(data["prompt"]), list(data["image"]),
                           max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                           num_samples=per_prompt, progress=progress, desc="rollouts")
    del model  # free the accelerator before the SFT run loads its own copy
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    keep = []
    for i, group in enumerate(sampled):
        exact = score_jigsaw(group, [data[i]["solution"]] * len(group), answer_format)["exact"]
        for text in dict.fromkeys(t for t, e in zip(group, exact) if e == 1.0):
            keep.append((i, text))
    rows = data.select([i for i, _ in keep]).to_dict()
    rows["completion"] = [assistant_turn(t) for _, t in keep]
    stats = {"prompts": len(data), "rollouts": len(data) * per_prompt, "correct_distinct": len(keep),
             "prompts_with_correct": len({i for i, _ in keep})}
    return Dataset.from_dict(rows, features=data.features), stats


@in_base_world
def run_rollout_sft(cfg, output_dir=None, *, resume: bool = False, prior: bool = True, progress: bool = True,
                    callbacks=()) -> RunResult:
    """SFT from the base model on the correct rollouts of an RFT checkpoint (cfg.rollouts_from)."""
    if not cfg.rollouts_from:
        raise ValueError("rollout_sft needs rollouts_from: the RFT checkpoint whose correct rollouts to learn from")
    out = _run_dir(cfg, output_dir)
    last = _last_checkpoint(out, resume)
    if last and (done := _finished(cfg, out, last)):  # finished: no need to sample its rollouts again
        return done
    data, stats = collect_rollouts(cfg.rollouts_from, train_dataset(cfg), cfg.rollouts_per_prompt,
                                   cfg.rollout_temperature, cfg.max_completion_length, cfg.answer_format, progress,
                                   seed=cfg.seed)
    if len(data) == 0:
        raise ValueError(f"{cfg.rollouts_from} produced no correct rollout on {stats['prompts']} puzzles "
                         f"({stats['rollouts']} samples): train RFT longer or sample more")
    result = run_sft(cfg, output_dir, resume=resume, prior=prior, progress=progress, callbacks=callbacks, data=data)
    (result.output_dir / "rollouts.json").write_text(json.dumps(stats))
    return result


RUNNERS = {"sft": run_sft, "rft": run_rft, "rollout_sft": run_rollout_sft}


def _parse_value(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None) -> int:
    """``python -m jigsaw_lib.train {sft,rft,rollout-sft} --preset pocket --set key=value ...``.

    Runs one method; under ``accelerate launch`` (configs/accelerate/*.yaml: DeepSpeed ZeRO-2/3 on
    GPUs, or several CPU processes) TRL's trainers spread it over the processes.
    """
    import argparse

    from . import config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("method", choices=["sft", "rft", "rollout-sft"])
    parser.add_argument("--preset", default="pocket", choices=list(config.PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set learning_rate=1e-4 --set grids=[[2,2]]")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    parser.add_argument("--no-prior", action="store_true", help="skip the prior-skill evaluation (paper scale)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key] = _parse_value(value)
    method = args.method.replace("-", "_")
    cfg = config.make(method, args.preset, **overrides)
    result = RUNNERS[method](cfg, args.output_dir, resume=args.resume, prior=not args.no_prior)
    from accelerate import PartialState

    state = PartialState()
    print(f"process {state.process_index} of {state.num_processes} finished {method}", flush=True)
    if state.is_main_process:
        last = result.metrics[result.metrics.step == result.metrics.step.max()]
        print(last[~last.metric.str.startswith("train/")].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
