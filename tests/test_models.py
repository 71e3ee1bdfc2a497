"""The pocket Qwen2.5-VL: built from transformers' own classes, saved and loaded like the real one."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from jigsaw_lib import models
from jigsaw_lib.models import TINY, PocketSpec, build_pocket, load


def _inputs(processor, size=32, text="Where is the sky?"):
    image = Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype("uint8"))
    messages = [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[prompt], images=[image], return_tensors="pt")


def test_load_round_trip_gives_identical_model(tiny_pocket_dir):
    model, processor = load(tiny_pocket_dir)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert isinstance(processor, Qwen2_5_VLProcessor)
    again, _ = load(tiny_pocket_dir)
    inputs = _inputs(processor)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs).logits)


def test_checkpoint_directory_is_an_ordinary_hf_checkpoint(tiny_pocket_dir):
    names = {p.name for p in tiny_pocket_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    assert "chat_template.jinja" in names or "chat_template.json" in names
    config = json.loads((tiny_pocket_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    spec = json.loads((tiny_pocket_dir / "pocket_spec.json").read_text())
    assert spec["text_hidden"] == TINY.text_hidden


def test_special_tokens_match_config_and_image_tokens_count(tiny_pocket_dir):
    model, processor = load(tiny_pocket_dir)
    tok = processor.tokenizer
    cfg = model.config
    assert tok.convert_tokens_to_ids("<|image_pad|>") == cfg.image_token_id
    assert tok.convert_tokens_to_ids("<|vision_start|>") == cfg.vision_start_token_id
    assert tok.eos_token == "<|im_end|>"
    for tag in models.TAG_TOKENS:  # answer tags are single tokens
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1
    inputs = _inputs(processor, size=TINY.image_size)
    # patch 8, merge 2: a 32x32 image is 4x4 patches, 2x2 = 4 image tokens
    side = TINY.image_size // TINY.patch_size
    assert int((inputs["input_ids"] == cfg.image_token_id).sum()) == side * side // TINY.merge_size**2
    # mm_token_type_ids drive Qwen2.5-VL's 2D image positions: the processor must return them
    assert "mm_token_type_ids" in inputs
    assert int(inputs["mm_token_type_ids"].sum()) == side * side // TINY.merge_size**2


def test_chat_template_is_qwen_style(tiny_pocket_dir):
    _, processor = load(tiny_pocket_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}] + messages
    text = processor.apply_chat_template(with_system, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_tokenizer_round_trips_any_text(tiny_pocket_dir):
    _, processor = load(tiny_pocket_dir)
    text = "<think>Sky is blue, ünïcode ✓</think><answer>3 1 2 4</answer>"
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.decode(ids) == text


def test_build_is_deterministic_for_a_seed(tmp_path):
    a, _ = build_pocket(TINY)
    b, _ = build_pocket(TINY)
    c, _ = build_pocket(PocketSpec(**{**TINY.__dict__, "seed": 1}))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_generate_runs_and_stops(tiny_pocket_dir):
    model, processor = load(tiny_pocket_dir)
    inputs = _inputs(processor, size=TINY.image_size)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= inputs["input_ids"].shape[1] + 5


def test_default_pocket_size():
    model, processor = build_pocket()
    n = models.n_parameters(model)
    assert 1_000_000 < n < 5_000_000, n
    assert len(processor.tokenizer) <= PocketSpec().vocab_size + len(models.TAG_TOKENS)


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match="no-such-checkpoint"):
        load(missing)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load(tmp_path)


def test_hub_id_goes_through_the_same_loader_offline(monkeypatch):
    # With HF_HUB_OFFLINE=1 and an empty cache, the real model id reaches from_pretrained and fails
    # with an error that names it: the code path is the one used at paper scale.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="Qwen/Qwen2.5-VL-3B-Instruct"):
        load(models.PAPER_MODEL)


@pytest.mark.parametrize("kwargs, match", [
    ({"text_hidden": 100, "text_heads": 3}, "heads of even size"),
    ({"mrope_section": [2, 2, 2]}, "mrope_section"),
    ({"image_size": 40}, "multiple of patch_size"),
])
def test_bad_spec_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PocketSpec(**kwargs)
