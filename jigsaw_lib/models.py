"""Models: the pocket Qwen2.5-VL built here, and one loader for it and the real Qwen2.5-VL.

The study needs a vision-language model that TRL can train. At paper scale that is
``Qwen/Qwen2.5-VL-3B-Instruct`` (or 7B). At pocket scale nothing can be downloaded, so we build
the same architecture, small, from transformers' own classes:

- ``Qwen2_5_VLConfig`` with a 2-layer vision tower and a 4-layer text decoder (about 2M parameters);
- a byte-level BPE tokenizer trained here with ``tokenizers`` on the kit's own prompt text, carrying
  Qwen's chat and vision special tokens (``<|im_start|>``, ``<|image_pad|>``, ...) so the processor,
  the chat template and TRL treat it exactly as they treat Qwen's;
- ``Qwen2VLImageProcessor`` / ``Qwen2VLVideoProcessor`` with a patch size of 8 (Qwen uses 14) and the
  same 2x2 spatial merge, so a 64x64 image becomes 8x8 patches and 16 image tokens;
- Qwen2.5-VL's own chat template.

The result is saved as an ordinary Hugging Face checkpoint directory (weights, config, processor,
tokenizer, chat template) and loaded by :func:`load` through the very code that loads the real
model. Two settings matter at this size (measured while building the kit): the multimodal RoPE base
``rope_theta`` must be small (10, not 1e6) or image positions are nearly invisible to 32-wide
heads, and inputs must carry ``mm_token_type_ids`` (the processor and TRL add them) or Qwen2.5-VL
silently falls back to 1-D positions for image tokens.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

PAPER_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"

# Qwen2.5-VL's special tokens, in Qwen's order. The pocket tokenizer carries all of them.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Tags of the answer format: single tokens in the pocket vocabulary (ordinary, not special, so
# decoding with skip_special_tokens=True keeps them).
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen2.5-VL-Instruct's chat template (the image/video branch of Qwen2-VL's template), less one thing:
# Qwen's inserts "You are a helpful assistant." as a system turn when a conversation has none; the pocket
# template does not, which saves 15 of the ~100 tokens of a pocket prompt (training is compute-bound).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class PocketSpec:
    """Sizes of a pocket Qwen2.5-VL. The defaults are the kit's pocket model (about 2M parameters).

    ``image_size`` is the side the image processor keeps (images are resized to a multiple of
    ``patch_size * merge_size`` within ``[min_pixels, max_pixels]``, as for Qwen).
    """

    vocab_size: int = 1024
    text_hidden: int = 192
    text_layers: int = 4
    text_heads: int = 6
    text_kv_heads: int = 2
    text_intermediate: int = 512
    vision_hidden: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    vision_intermediate: int = 384
    patch_size: int = 8
    merge_size: int = 2
    image_size: int = 64
    rope_theta: float = 10.0
    mrope_section: list[int] = field(default_factory=lambda: [2, 7, 7])
    max_position_embeddings: int = 2048
    seed: int = 0

    def __post_init__(self):
        head = self.text_hidden // self.text_heads
        if self.text_hidden % self.text_heads or head % 2:
            raise ValueError(
                f"text_hidden={self.text_hidden} must split into text_heads={self.text_heads} heads of even size"
            )
        if sum(self.mrope_section) * 2 != head:
            raise ValueError(
                f"mrope_section={self.mrope_section} must sum to half the head size ({head // 2}); "
                "it splits each head's rotary frequencies between time, height and width"
            )
        if self.image_size % (self.patch_size * self.merge_size):
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of patch_size*merge_size="
                f"{self.patch_size * self.merge_size}"
            )


TINY = PocketSpec(
    vocab_size=400, text_hidden=64, text_layers=2, text_heads=2, text_kv_heads=1, text_intermediate=128,
    vision_hidden=32, vision_layers=1, vision_heads=1, vision_intermediate=64, image_size=32,
)  # for tests: a forward+backward in milliseconds. head 32 keeps mrope_section [2, 7, 7].


def default_corpus() -> list[str]:
    """Text the pocket tokenizer is trained on: the kit's jigsaw prompts and answers.

    Later stages (the prior-skill world) pass their own text too; the tokenizer is byte-level,
    so any text encodes, this only decides which words get single tokens.
    """
    from .answers import format_answer
    from .puzzles import jigsaw_prompt

    texts = []
    for rows in range(1, 7):
        for cols in range(1, 7):
            if rows * cols < 2:
                continue
            for fmt in ("think", "direct"):
                texts.append(jigsaw_prompt(rows, cols, answer_format=fmt))
            n = rows * cols
            texts.append(format_answer(list(range(n, 0, -1)), think="The top row shows sky, so it goes first."))
    texts.append("You are a helpful assistant.")
    texts.append(" ".join(str(i) for i in range(100)))
    return texts


def build_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (as Qwen's) on ``corpus`` with Qwen's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens(TAG_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=4096,
        padding_side="left",  # generation pads on the left, as Qwen's processor does
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(spec: PocketSpec, tokenizer) -> Qwen2_5_VLProcessor:
    """Qwen2.5-VL's processor around the pocket tokenizer, with the pocket patch size."""
    side = spec.image_size
    factor = spec.patch_size * spec.merge_size
    common = dict(
        patch_size=spec.patch_size,
        merge_size=spec.merge_size,
        temporal_patch_size=2,
        min_pixels=factor * factor,
        max_pixels=side * side,
    )
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(spec: PocketSpec, tokenizer) -> Qwen2_5_VLConfig:
    """A ``Qwen2_5_VLConfig`` of the pocket sizes, wired to the tokenizer's special-token ids."""
    ids = tokenizer.convert_tokens_to_ids
    vision = dict(
        depth=spec.vision_layers,
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_heads=spec.vision_heads,
        patch_size=spec.patch_size,
        spatial_merge_size=spec.merge_size,
        temporal_patch_size=2,
        out_hidden_size=spec.text_hidden,
        # One attention window covers the whole pocket image; the last block attends fully anyway.
        window_size=spec.image_size,
        fullatt_block_indexes=[spec.vision_layers - 1],
    )
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta,
                         "mrope_section": list(spec.mrope_section)},
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_pocket(spec: PocketSpec | None = None, corpus: list[str] | None = None,
                 save_dir: str | os.PathLike | None = None):
    """Build a randomly initialised pocket Qwen2.5-VL and its processor; save them if asked.

    Deterministic for ``spec.seed``: the same spec and corpus give the same weights and vocabulary.
    Returns ``(model, processor)``.
    """
    spec = spec or PocketSpec()
    tokenizer = build_tokenizer(corpus if corpus is not None else default_corpus(), spec.vocab_size)
    processor = build_processor(spec, tokenizer)
    config = build_config(spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        bos_token_id=config.text_config.bos_token_id,
        do_sample=False,
    )
    if save_dir is not None:
        save(model, processor, save_dir, spec=spec)
    return model, processor


def save(model, processor, save_dir: str | os.PathLike, spec: PocketSpec | None = None) -> Path:
    """Save model and processor as one Hugging Face checkpoint directory."""
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(save_dir)
    processor.save_pretrained(save_dir)
    if spec is not None:
        import json

        (save_dir / "pocket_spec.json").write_text(json.dumps(asdict(spec), indent=2))
    return save_dir


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load(name_or_path: str | os.PathLike, dtype: torch.dtype | str | None = None, device_map=None,
         attn_implementation: str | None = None, share_prefix: bool = True):
    """Load ``(model, processor)`` from a checkpoint directory or a Hub id, the same way for both.

    ``load("checkpoints/pocket-base")`` and ``load("Qwen/Qwen2.5-VL-3B-Instruct")`` go through the
    same two calls (``AutoProcessor`` and ``Qwen2_5_VLForConditionalGeneration.from_pretrained``),
    so what is tested on the pocket checkpoint is what runs at paper scale. With ``HF_HUB_OFFLINE=1``
    a Hub id loads from the local Hugging Face cache. ``share_prefix``: the model reads the text that all rows
    of a batch begin with once (:func:`jigsaw_lib.prefix.share_prefix`; the same numbers to float rounding).
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"{path} is a directory but holds no checkpoint (no config.json). Build one with "
                "jigsaw_lib.models.build_pocket(save_dir=...) or point at a Hugging Face checkpoint."
            )
        source = str(path)
    elif _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        source = name
    else:
        raise FileNotFoundError(
            f"no checkpoint at {name!r}: the path does not exist. Build the pocket model with "
            "jigsaw_lib.models.build_pocket(save_dir=...) or give a Hub id such as "
            f"{PAPER_MODEL!r}."
        )
    kwargs = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        processor = AutoProcessor.from_pretrained(source)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, **kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " (HF_HUB_OFFLINE is set: only the local cache is searched)" if offline else ""
        raise FileNotFoundError(
            f"could not load {name!r}: it is neither a local checkpoint directory nor a model "
            f"available from the Hugging Face Hub{hint}. Original error: {err}"
        ) from err
    if share_prefix:
        from .prefix import share_prefix as install

        install(model)
    return model, processor


def vision_tower_parameters(model) -> list:
    """The parameters of a Qwen2.5-VL's vision tower: its patch embedding and blocks, not the merger, the projection
    into the language model (what ``freeze_vision`` fixes and ``vision_lr_scale`` scales)."""
    visual = model.model.visual
    return [*visual.patch_embed.parameters(), *visual.blocks.parameters()]


def freeze_vision_tower(model) -> None:
    """Stop the gradient through the vision tower (:func:`vision_tower_parameters`) of a Qwen2.5-VL; the merger
    still trains. The trainers' optimizers take only what requires a gradient."""
    for p in vision_tower_parameters(model):
        p.requires_grad_(False)


def freeze_embeddings(model) -> None:
    """Stop the gradient through the token embeddings and the output head (one matrix when they are tied, as in the
    pocket model and Qwen2.5-VL-3B): what a word means, on the way in and on the way out, stays the base's."""
    model.get_input_embeddings().requires_grad_(False)
    model.get_output_embeddings().requires_grad_(False)


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
