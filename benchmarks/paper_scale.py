"""Paper scale on one GPU: the kit's own SFT and GRPO runners on a Qwen2.5-VL of the real size.

    python benchmarks/paper_scale.py --size 3b --json paper_scale.json    # on a GPU machine
    python benchmarks/paper_scale.py --size tiny                          # the same path on a CPU, in a minute

No weights can be downloaded where this kit is built, so the model is Qwen2.5-VL-3B-Instruct (or 7B)
built from its published config with random weights, around the pocket tokenizer; the embedding
keeps the real 151,936 rows, so memory is what the real model needs. The runs are the paper presets
of ``jigsaw_lib.config`` (3x3 puzzles, 448 px images, ``think`` format, 512-token completions, SFT lr
2e-5, GRPO lr 1e-6, beta 0.04, 8 rollouts at temperature 1), cut down only in steps, prompts per step
and evaluation sizes, and without vLLM and DeepSpeed. A random model never writes its end token, so
every rollout and every evaluation answer runs to the full 512 tokens: the slowest case.

Prints (and writes with --json) the parameters, the median optimizer-step time after a warm-up step,
peak GPU memory of each run, and the tracked metrics at the last step.
"""

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _timing import StepTimer
from transformers import (GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                          Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

from jigsaw_lib import config, train
from jigsaw_lib.models import CHAT_TEMPLATE, build_tokenizer, default_corpus, n_parameters

VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu")
TEXT = dict(vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
SIZES = {  # the published config.json of each model (text and vision towers)
    "3b": (dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                num_key_value_heads=2, tie_word_embeddings=True), dict(out_hidden_size=2048)),
    "7b": (dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, tie_word_embeddings=False), dict(out_hidden_size=3584)),
    "tiny": (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, tie_word_embeddings=True, vocab_size=4096,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}),
             dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  fullatt_block_indexes=[1])),
}


def build(size: str, save_dir: Path) -> int:
    """Save a random Qwen2.5-VL of ``size`` with a Qwen-layout processor (patch 14, merge 2); return its parameters."""
    tokenizer = build_tokenizer(default_corpus(), 4096)
    ids = tokenizer.convert_tokens_to_ids
    text, vision = SIZES[size]
    special = dict(bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"))
    cfg = Qwen2_5_VLConfig(text_config={**TEXT, **special, **text}, vision_config={**VISION, **vision},
                           image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                           vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
                           tie_word_embeddings=text["tie_word_embeddings"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_dtype(torch.bfloat16)  # as the published checkpoints; the runners load fp32 master weights
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model.generation_config = GenerationConfig(do_sample=False, **special)
    model.save_pretrained(save_dir)
    image = dict(patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**image), video_processor=Qwen2VLVideoProcessor(**image),
                        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(save_dir)
    n = n_parameters(model)
    del model
    return n


def timed_run(method: str, base: Path, out: Path, **overrides) -> dict:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = config.make(method, "paper", base=str(base), **overrides)
    timer = StepTimer()
    start = time.perf_counter()
    result = train.RUNNERS[method](cfg, out / method, prior=False, progress=False, callbacks=[timer])
    shutil.rmtree(out / method)  # a 3B run's final weights take 15 GB of disk
    m = result.metrics
    last = m[m.step == m.step.max()]
    return {"method": method, "prompts_per_step": cfg.batch_size, "steps": cfg.max_steps,
            "step_seconds": [round(t, 2) for t in timer.times],
            "median_step_seconds_after_warmup": round(statistics.median(timer.times[1:] or timer.times), 2),
            "run_seconds_with_evaluations": round(time.perf_counter() - start, 1),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
            "last_step": dict(zip(last.metric, last.value.round(4)))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="3b")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps of each run")
    parser.add_argument("--sft-prompts", type=int, default=16, help="puzzles per SFT step (paper preset: 64)")
    parser.add_argument("--rft-prompts", type=int, default=4, help="puzzles per GRPO step, x 8 rollouts (paper: 64)")
    parser.add_argument("--completion", type=int, default=512, help="max completion tokens (paper preset: 512)")
    parser.add_argument("--methods", default="sft,rft")
    parser.add_argument("--json", default=None, help="also write the results here")
    a = parser.parse_args()
    report = {"size": a.size, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "runs": []}
    # no resumable checkpoints: fp32 weights and AdamW states of a 3B model are 45 GB each
    small = dict(max_steps=a.steps, eval_every=a.steps, eval_jigsaw=2, eval_kl=2, max_completion_length=a.completion,
                 trl={"save_strategy": "no"})
    if a.size == "tiny":
        small["image_size"] = 112
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        report["parameters"] = build(a.size, tmp / "base")
        report["build_seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps(report), flush=True)
        for method in a.methods.split(","):
            prompts = a.sft_prompts if method == "sft" else a.rft_prompts
            extra = {"use_vllm": False} if method == "rft" else {}  # vLLM is not installed on the GPU machine
            run = timed_run(method, tmp / "base", tmp, batch_size=prompts, n_train=prompts * a.steps, **small, **extra)
            report["runs"].append(run)
            print(json.dumps(run), flush=True)
            if a.json:
                Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
