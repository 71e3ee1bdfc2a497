"""One GRPO step of ``run_rft`` against a bare TRL ``GRPOTrainer`` on the same model, data and settings.

    .venv/bin/python benchmarks/rft_step_overhead.py [--base checkpoints/pocket-base] [--steps 6]

``run_rft`` adds the kit's tracking callback, checkpointing and config handling around TRL; between
evaluations its steps must cost what TRL's own do (target: ratio <= 1.1). Both runs use the same
puzzles, seed and GRPO settings; evaluation is pushed past the last step so only training is timed.
The bare trainer is TRL's as it comes (``share_prompts=False``); the kit's generation reads each prompt of a
group once (``train.share_prompt_reads``). Prints the median step time of each after one warm-up step, their
ratio, and whether the two runs logged the same numbers.
"""

import argparse
import statistics
import tempfile

from _timing import StepTimer

from jigsaw_lib import config, pretrain, train
from jigsaw_lib.models import freeze_vision_tower, load


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=str(pretrain.DEFAULT_DIR))
    parser.add_argument("--steps", type=int, default=6)
    a = parser.parse_args()
    cfg = config.make("rft", "pocket", base=a.base, max_steps=a.steps + 1, eval_every=10_000, eval_jigsaw=8,
                      eval_prior=2, eval_kl=2, probe_jigsaw=0, probe_prior=0, n_train=256)
    with tempfile.TemporaryDirectory() as out:
        timer = StepTimer()
        result = train.run_rft(cfg, f"{out}/kit", prior=False, progress=False, callbacks=[timer])
        kit = statistics.median(timer.times[1:])
        kit_logs = result.metrics[result.metrics.metric.isin(["train/loss", "train/reward", "train/kl"])]

        model, processor = load(cfg.base)
        if cfg.freeze_vision:  # the same trainable parameters as the kit's run
            freeze_vision_tower(model)
        timer = StepTimer()
        trainer = train.grpo_trainer(
            model, processor, train.train_dataset(cfg), f"{out}/bare", max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate, seed=cfg.seed, per_device_train_batch_size=cfg.batch_size * cfg.num_generations,
            num_generations=cfg.num_generations, beta=cfg.beta, temperature=cfg.temperature,
            max_completion_length=cfg.max_completion_length, reward_weights=list(cfg.reward_weights),
            lr_scheduler_type="constant", disable_tqdm=True, share_prompts=False)
        trainer.add_callback(timer)
        trainer.train()
        bare = statistics.median(timer.times[1:])
        bare_logs = [log[key] for log in trainer.state.log_history if "loss" in log for key in ("loss", "reward", "kl")]
    print(f"GRPO step, {cfg.batch_size} prompts x {cfg.num_generations} rollouts, base {cfg.base}")
    print(f"  run_rft (kit)        {kit:.3f} s")
    print(f"  bare GRPOTrainer     {bare:.3f} s")
    print(f"  ratio                {kit / bare:.3f}")
    print(f"  same numbers         {sorted(kit_logs.value.tolist()) == sorted(bare_logs)} (loss, reward, kl of every step)")


if __name__ == "__main__":
    main()
