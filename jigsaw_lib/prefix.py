"""Reading a batch's common prefix once: every jigsaw prompt of a grid starts with the same instruction.

A 2x2 pocket prompt is 186 tokens: 162 of instruction text, identical in every puzzle of that grid, then the
image's 16 tokens and 8 more; an answer is about 8. So in any batch of such prompts (an SFT batch, the rows GRPO
scores, a batch of evaluation prompts) nearly all the language model's work is the same text read again in every
row. :func:`share_prefix` wraps Qwen2.5-VL's backbone (``model.model``, the module every forward pass, training,
scoring and generation alike, goes through) so that where the rows of a call begin with the same tokens, the
prefix is read once into a cache with one row, the cache is repeated to every row (transformers' own
``DynamicCache``), and the rest of the rows run over it. The prefix's hidden states are returned repeated, so the
output has the shape and meaning of the plain forward pass; with grad on, the prefix's gradient is the sum over the
rows, as before. The positions are the model's own (``compute_3d_position_ids``, computed on the whole rows), so
its 3D image positions and ``rope_deltas`` are what the plain pass gives.

The numbers equal the plain pass's up to float rounding (sums in another order: about 1e-6 on a pocket log-prob),
not bit for bit. It stands aside, and the plain forward runs, wherever it does not apply: fewer than
``min_tokens`` common tokens (left-padded rows, prior-skill questions that differ from the first word), a cache
that already holds tokens (each step of generation after the first), inputs other than token ids with images,
hidden states or attentions asked for, video, a training pass under gradient checkpointing (which drops the cache
inside each layer). It is off under several processes, where a sharded model (ZeRO-3) needs every rank in the same
forward passes.
"""

from __future__ import annotations

import os
import types

import torch
from transformers import DynamicCache


def world_size() -> int:
    """Processes of this run: under ``accelerate launch`` / torchrun, WORLD_SIZE; else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def common_prefix(input_ids, attention_mask=None, mm_token_type_ids=None) -> int:
    """Tokens at the start of every row that are the same in all rows, text (not image), and not padding."""
    same = (input_ids == input_ids[:1]).all(0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(0)
    if mm_token_type_ids is not None:
        same &= (mm_token_type_ids == 0).all(0)
    differs = (~same).nonzero()
    return int(differs[0]) if len(differs) else input_ids.size(1)


def share_prefix(model, min_tokens: int = 32, enable: bool = True):
    """Have ``model``'s backbone read the tokens all rows of a call begin with once (see the module's text).

    Installed on the instance (``model.model.forward``, bound like a method, so a deep copy of the model gets its
    own), so it also serves TRL's fused LM head and ``generate``. Installing it twice wraps once; ``enable=False``
    takes it off.
    """
    install_method(model.model, "forward", _prefix_forward, enable, _prefix_min_tokens=min_tokens)
    return model


def install_method(obj, name: str, method, enable: bool = True, **attrs):
    """Put ``method`` in place of ``obj.<name>`` on the instance, bound to it (a deep copy gets its own), the one it
    replaces kept as ``obj._plain_<name>``; ``attrs`` are set on ``obj``. Installed twice, it wraps once; with
    ``enable=False``, or under several processes (where a sharded model needs every rank in the same passes), the
    plain one is put back."""
    plain, own = f"_plain_{name}", f"_plain_{name}_own"
    if plain in vars(obj):  # installed before: back to the plain one first
        if vars(obj)[own]:
            setattr(obj, name, getattr(obj, plain))
        else:  # the class's own: the instance's attribute goes
            delattr(obj, name)
        delattr(obj, plain)
        delattr(obj, own)
    if enable and world_size() == 1:
        setattr(obj, own, name in vars(obj))
        setattr(obj, plain, getattr(obj, name))
        for key, value in attrs.items():
            setattr(obj, key, value)
        setattr(obj, name, types.MethodType(method, obj))
    return obj


def _prefix_forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                    use_cache=None, pixel_values=None, image_grid_thw=None, mm_token_type_ids=None,
                    mm_encoder_outputs=None, **kwargs):
    """Qwen2.5-VL's ``Qwen2_5_VLModel.forward``, with the rows' common prefix read once (:func:`share_prefix`)."""
    plain = self._plain_forward
    given = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                 inputs_embeds=inputs_embeds, use_cache=use_cache, pixel_values=pixel_values,
                 image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids,
                 mm_encoder_outputs=mm_encoder_outputs, **kwargs)
    images = (pixel_values is not None and image_grid_thw is not None) or bool(mm_encoder_outputs)
    config = self.config.get_text_config()
    if (input_ids is None or inputs_embeds is not None or not images or mm_token_type_ids is None
            or input_ids.size(0) < 2
            or (cache is not None and (type(cache) is not DynamicCache or cache.get_seq_length() > 0))
            or (attention_mask is not None and not isinstance(attention_mask, torch.Tensor))
            or (attention_mask is not None and attention_mask.dim() != 2)
            or (position_ids is None and image_grid_thw is None)
            or "past_key_values" in kwargs or kwargs.get("return_dict") is False
            or any(kwargs.get(k) not in (None, False)
                   for k in ("output_attentions", "output_hidden_states", "pixel_values_videos", "video_grid_thw",
                             "second_per_grid_ts"))
            or (mm_encoder_outputs or {}).get("video") is not None
            or getattr(config, "output_attentions", False) or getattr(config, "output_hidden_states", False)
            # gradient checkpointing drops the cache in training passes: the prefix would be lost
            or (self.training and torch.is_grad_enabled() and self.is_activation_checkpointing)):
        return plain(**given)
    cut = common_prefix(input_ids, attention_mask, mm_token_type_ids)
    if cut < self._prefix_min_tokens or cut >= input_ids.size(1):
        return plain(**given)
    if position_ids is None:  # the model's own 3D positions of the whole rows (and rope_deltas, as it sets them)
        position_ids = self.compute_3d_position_ids(
            input_ids=input_ids, image_grid_thw=image_grid_thw, video_grid_thw=None, inputs_embeds=None,
            attention_mask=attention_mask, cache=None, mm_token_type_ids=mm_token_type_ids)
    rows, keep = input_ids.size(0), cache is not None or use_cache is not False
    cache = cache if cache is not None else DynamicCache(config=self.config)
    head = plain(input_ids=input_ids[:1, :cut], attention_mask=None if attention_mask is None else attention_mask[:1, :cut],
                 position_ids=position_ids[..., :1, :cut], cache=cache, use_cache=True, **kwargs)
    if cache.get_seq_length() != cut:
        raise RuntimeError(f"share_prefix: the prefix's cache holds {cache.get_seq_length()} tokens, not {cut}; "
                           "turn it off with jigsaw_lib.prefix.share_prefix(model, enable=False) and report this")
    cache.reorder_cache(torch.zeros(rows, dtype=torch.long, device=input_ids.device))
    out = plain(input_ids=input_ids[:, cut:], attention_mask=attention_mask, position_ids=position_ids[..., cut:],
                cache=cache, use_cache=use_cache, pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                mm_token_type_ids=mm_token_type_ids[:, cut:], mm_encoder_outputs=mm_encoder_outputs, **kwargs)
    fields = {k: v for k, v in out.items() if keep or k != "cache"}  # no cache asked for, none returned
    fields["last_hidden_state"] = torch.cat([head.last_hidden_state.expand(rows, -1, -1), out.last_hidden_state], 1)
    return type(out)(**fields)
