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

import torch
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

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


def grpo_trainer(model, processor, train_dataset, output_dir, reward_funcs=JIGSAW_REWARDS,
                 **config) -> GRPOTrainer:
    """A TRL ``GRPOTrainer`` rewarded by the jigsaw rewards (hit + exact + format by default).

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
    return GRPOTrainer(model=model, args=args, reward_funcs=list(reward_funcs), train_dataset=train_dataset,
                       processing_class=processor)
