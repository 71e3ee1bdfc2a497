"""Vision pretraining: the pocket vision tower learns to see the world before the language model learns to
talk about it.

Qwen2.5-VL's vision encoder arrives pretrained (its ViT was trained on images before the whole model was
trained on image-text data); the pocket one starts from random weights. Measured here (docs/experiment_log.md, "Why
the object skills stay low"): through the language model alone, the pocket vision tower never learns shape. A
fresh pocket model asked only "what shape is the <colour> object?" of one-object scenes stayed at chance (0.37)
for 1,000 steps, while the same vision tower with a linear head on its pooled tokens learned shape to 0.92 in
1,000 steps, and a language model on top of that trained tower learned the question to 0.945 in 300. Colour
needs no trained vision (it is already in the random patch embedding) and was learned at once; shape, digits
and objects need features the tower must learn, and a random language model on top passes it almost no
gradient to learn them from: a saddle that the pocket pretraining did not leave.

So the tower is trained first, as Qwen's was, on what the world's scenes hold: for each merged image token (one
16x16-pixel cell of the 64x64 image, the tokens the language model sees) a linear head says which shape and
which colour of object has its centre in that cell, and which digit is on a sign there (or none), and a
linear regression gives the cell's mean colour (so the tower keeps brightness, which the jigsaw reads). These
dense labels come from the scene description and the image, so they cost nothing and are exact. The heads are thrown away; the
tower (patch embedding, blocks and merger) goes into the base model, and the prior-skill curriculum of
:mod:`jigsaw_lib.pretrain` trains everything from there.

Training uses transformers' ``Trainer`` on a small ``nn.Module`` (the tower plus heads); scenes are drawn
from seeds, so a run is deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import world

# What each merged token is labelled with: class 0 is "nothing of that kind has its centre in this cell".
HEADS = {"shape": 1 + len(world.SHAPES), "colour": 1 + len(world.COLORS), "digit": 1 + 10}
# and, by regression, the cell's mean colour (RGB in 0..1): the tower must keep how bright a region is, which
# the jigsaw and the ordering skill read, though the labels above would let it learn to ignore the side light
MEAN_COLOUR_WEIGHT = 10.0  # an MSE of ~0.01 weighs about as much as a cross-entropy of ~0.1
_STREAMS = {"train": 0, "test": 1}


def token_labels(scene: world.Scene, grid: int) -> np.ndarray:
    """Labels of a scene's merged tokens, shape (grid*grid, 3) for (shape, colour, digit), row-major cells
    (the order of Qwen2.5-VL's merged image tokens). An object is labelled in the cell holding its centre."""
    labels = np.zeros((grid * grid, len(HEADS)), dtype=np.int64)
    cell = lambda x, y: world.cell_of(x, y, grid, grid) - 1  # noqa: E731  (cell_of numbers from 1)
    for t in scene.things:
        labels[cell(t.x, t.y), 0] = world.SHAPES.index(t.shape) + 1
        labels[cell(t.x, t.y), 1] = list(world.COLORS).index(t.color) + 1
    if scene.sign is not None:
        dp = world.SETTINGS.digit_pixel
        labels[cell(scene.sign[0] + 2.5 * dp, scene.sign[1] + 3.5 * dp), 2] = int(scene.digit) + 1
    return labels


def cell_means(image, grid: int) -> np.ndarray:
    """Mean RGB (0..1) of each of a square image's grid x grid cells, row-major: shape (grid*grid, 3)."""
    a = np.asarray(image, dtype=np.float32) / 255.0
    side = a.shape[0] // grid
    a = a[: side * grid, : side * grid].reshape(grid, side, grid, side, 3)
    return a.mean(axis=(1, 3)).reshape(grid * grid, 3)


def scene(split: str, i: int, seed: int = 0) -> world.Scene:
    """Scene i of a split: train and test come from disjoint seed streams (and from none of the skills')."""
    if split not in _STREAMS:
        raise ValueError(f"split must be one of {tuple(_STREAMS)}, got {split!r}")
    key = np.random.SeedSequence([seed, 7919, _STREAMS[split], i])  # 7919: a stream of its own
    return world.sample_scene(np.random.default_rng(key))


class SceneLabels(torch.utils.data.Dataset):
    """Scenes drawn on the fly, as an image and its token labels (the world's settings as they are now)."""

    def __init__(self, n: int, split: str = "train", seed: int = 0, size: int = 64, grid: int = 4, start: int = 0):
        self.n, self.split, self.seed, self.size, self.grid, self.start = n, split, seed, size, grid, start
        self.settings = world.resolve({})  # the world it was made in, also when read later by a data loader

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        with world.configure(**self.settings):
            sc = scene(self.split, self.start + i, self.seed)
            image = world.render(sc, self.size)
            return {"image": image, "labels": token_labels(sc, self.grid), "means": cell_means(image, self.grid)}


class Collator:
    """Images through Qwen2.5-VL's image processor (pixel_values and image_grid_thw, as the model gets them)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, rows: list[dict]) -> dict:
        enc = self.image_processor(images=[r["image"] for r in rows], return_tensors="pt")
        labels = torch.from_numpy(np.concatenate([r["labels"] for r in rows]))
        means = torch.from_numpy(np.concatenate([r["means"] for r in rows]))
        return {"pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"], "labels": labels,
                "means": means}


class TowerWithHeads(nn.Module):
    """A Qwen2.5-VL vision tower with one linear head per label kind on its merged tokens."""

    def __init__(self, visual: nn.Module, out_hidden: int):
        super().__init__()
        self.visual = visual
        self.heads = nn.ModuleDict({k: nn.Linear(out_hidden, n) for k, n in {**HEADS, "mean_colour": 3}.items()})

    def logits(self, pixel_values, image_grid_thw) -> dict[str, torch.Tensor]:
        tokens = self.visual(pixel_values, grid_thw=image_grid_thw).pooler_output  # (images * cells, out_hidden)
        return {k: head(tokens) for k, head in self.heads.items()}

    def forward(self, pixel_values, image_grid_thw, labels=None, means=None):
        out = self.logits(pixel_values, image_grid_thw)
        if labels is not None:
            ce = nn.functional.cross_entropy
            out["loss"] = sum(ce(out[k], labels[:, j]) for j, k in enumerate(HEADS))
            if means is not None:
                out["loss"] = out["loss"] + MEAN_COLOUR_WEIGHT * nn.functional.mse_loss(out["mean_colour"], means)
        return out


def pretrain_vision(model, processor, steps: int, output_dir, *, batch_size: int = 32, learning_rate: float = 1e-3,
                    warmup_steps: int = 50, seed: int = 0, n_eval: int = 200, progress: bool = True) -> dict:
    """Train ``model``'s vision tower (``model.model.visual`` of a ``Qwen2_5_VLForConditionalGeneration``) in
    place on the token labels of ``steps * batch_size`` fresh scenes. Returns the trainer's log and the heads'
    held-out accuracy on ``n_eval`` scenes (per label kind, over the cells that hold one)."""
    from transformers import Trainer, TrainingArguments

    from .train import device_defaults

    if steps < 1:
        raise ValueError(f"vision pretraining needs steps >= 1, got {steps}")
    visual = model.model.visual
    size, grid = _sizes(model, processor)
    torch.manual_seed(seed)  # the heads are initialised from the seed (the tower keeps its weights)
    tower = TowerWithHeads(visual, model.config.vision_config.out_hidden_size)
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=min(warmup_steps, steps // 2),
        weight_decay=0.0, seed=seed, data_seed=seed, logging_steps=max(1, steps // 20), report_to="none",
        save_strategy="no", remove_unused_columns=False, disable_tqdm=not progress,
        **{k: v for k, v in device_defaults().items() if k != "gradient_checkpointing"},
    )
    data = SceneLabels(steps * batch_size, "train", seed, size, grid)
    trainer = Trainer(model=tower, args=args, train_dataset=data, data_collator=Collator(processor.image_processor))
    trainer.train()
    return {"log": trainer.state.log_history,
            "accuracy": held_out_accuracy(tower, processor, n_eval, seed, size, grid) if n_eval else {}}


def _sizes(model, processor) -> tuple[int, int]:
    """The image side the processor keeps and the side of the merged token grid."""
    v = model.config.vision_config
    side = int(round(processor.image_processor.size["longest_edge"] ** 0.5))  # max_pixels of a square image
    return side, side // (v.patch_size * v.spatial_merge_size)


@torch.no_grad()
def held_out_accuracy(tower: TowerWithHeads, processor, n: int = 200, seed: int = 0, size: int = 64,
                      grid: int = 4) -> dict[str, float]:
    """Accuracy of each head on held-out scenes, over the cells that hold something of its kind, and the mean
    absolute error of the cells' mean colour (0..1)."""
    data = SceneLabels(n, "test", seed, size, grid)
    device = next(tower.parameters()).device  # where the Trainer left it (a GPU if there is one)
    batch = {k: v.to(device) for k, v in Collator(processor.image_processor)([data[i] for i in range(n)]).items()}
    out = tower.logits(batch["pixel_values"], batch["image_grid_thw"])
    result = {}
    for j, k in enumerate(HEADS):
        y = batch["labels"][:, j]
        mask = y > 0
        result[k] = float((out[k].argmax(-1)[mask] == y[mask]).float().mean()) if mask.any() else float("nan")
    result["mean_colour_mae"] = float((out["mean_colour"] - batch["means"]).abs().mean())
    return result
