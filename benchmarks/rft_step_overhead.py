"""One GRPO step of ``run_rft`` against a bare TRL ``GRPOTrainer`` on the same model, data and settings.

    .venv/bin/python benchmarks/rft_step_overhead.py [--base checkpoints/pocket-base] [--steps 6]

``run_rft`` adds the kit's tracking callback, checkpointing and config handling around TRL; between
evaluations its steps must cost what TRL's own do (target: ratio <= 1.1). Both runs use the same
puzzles, seed and GRPO settings; evaluation is pushed past the last step so only training is timed.
The bare trainer is TRL's as it comes (``share_prompts=False``, ``load(..., share_prefix=False)``). The kit reads
each prompt of a group once when it samples the group (``train.share_prompt_reads``) and when it scores it
(``train.SharedPromptGRPOTrainer``), and the instruction all prompts begin with once a batch (``jigsaw_lib.prefix``),
which makes its steps cheaper than TRL's own; so a third run, the bare trainer with those changes alone, shows what
the kit's callback, checkpointing and config add. Prints the median step time of each after one warm-up step, the
ratios, and how far apart the runs' logged numbers are (scoring over a shared prompt moves them in the last bits).
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
    keys = ("loss", "reward", "kl")
    with tempfile.TemporaryDirectory() as out:
        timer = StepTimer()
        result = train.run_rft(cfg, f"{out}/kit", prior=False, progress=False, callbacks=[timer])
        kit = statistics.median(timer.times[1:])
        m = result.metrics
        kit_logs = {key: m[m.metric == f"train/{key}"].sort_values("step").value.tolist() for key in keys}

        def bare(share: bool):
            model, processor = load(cfg.base, share_prefix=share)
            if cfg.freeze_vision:  # the same trainable parameters as the kit's run
                freeze_vision_tower(model)
            timer = StepTimer()
            trainer = train.grpo_trainer(
                model, processor, train.train_dataset(cfg), f"{out}/bare{int(share)}", max_steps=cfg.max_steps,
                learning_rate=cfg.learning_rate, seed=cfg.seed,
                per_device_train_batch_size=cfg.batch_size * cfg.num_generations, num_generations=cfg.num_generations,
                beta=cfg.beta, temperature=cfg.temperature, max_completion_length=cfg.max_completion_length,
                reward_weights=list(cfg.reward_weights), lr_scheduler_type="constant", disable_tqdm=True,
                share_prompts=share)
            if not cfg.freeze_vision:  # the same learning rates: the tower's a fraction of the rest's
                train.scale_tower_lr(trainer, model, cfg.vision_lr_scale)
            trainer.add_callback(timer)
            trainer.train()
            logs = {key: [log.get(key) for log in trainer.state.log_history if "loss" in log] for key in keys}
            return statistics.median(timer.times[1:]), logs

        plain, plain_logs = bare(False)
        shared, shared_logs = bare(True)
    print(f"GRPO step, {cfg.batch_size} prompts x {cfg.num_generations} rollouts, base {cfg.base}, median of {a.steps}")
    print(f"  run_rft (kit)                         {kit:.3f} s")
    print(f"  bare TRL GRPOTrainer                  {plain:.3f} s   kit / bare    {kit / plain:.3f}")
    print(f"  bare, prompts read once (kit's)      {shared:.3f} s   kit / that    {kit / shared:.3f} "
          "(what the kit adds around TRL)")

    def gap(a, b):  # the largest difference of the logged loss, reward and kl over every step
        return max(abs(x - y) for key in keys for x, y in zip(a[key], b[key], strict=True))

    print(f"  largest difference of the logged loss, reward and kl over {a.steps + 1} steps: kit and bare read once "
          f"{gap(kit_logs, shared_logs):.2g}, bare and bare read once {gap(plain_logs, shared_logs):.2g}")


if __name__ == "__main__":
    main()
