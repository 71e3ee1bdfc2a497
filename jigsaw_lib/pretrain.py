"""Pretraining the pocket base model on the world's prior skills (the pocket stand-in for Qwen's pretraining).

The paper's base model arrives knowing things; ours must be taught them. :func:`pretrain` builds a
pocket Qwen2.5-VL (``models.build_pocket``, its tokenizer trained on the world's and the jigsaw's
prompt text), then runs TRL's ``SFTTrainer`` on the prior skills, answers in the ``<answer>`` format.
Jigsaw puzzles stay out of it, as they are out of Qwen's.

Skills are learned one after another, easiest first (measured: in a mixture of all six the
object skills stayed at chance for 3,000 steps while brightness ordering and the light side were
learned; counting and ordering alone were learned together). So the base is trained on a curriculum
(``PretrainConfig.stages``, by default :data:`CURRICULUM`): a list of stages, each with its own steps and
skill mixture (earlier skills stay in later mixtures as replay), each run as its own ``SFTTrainer`` with
warm-up and cosine decay; no training item is seen in two stages. ``stages=None`` trains one mixture.
A stage may draw its items in a changed world (``{"steps": 400, "mix": {...}, "world": {"max_objects": 1}}``:
scenes of one object, where "what shape is the red object?" is a naming drill rather than a search), while
held-out evaluation stays in the run's world.

The result is cached: :func:`pretrain` returns the checkpoint directory if one trained with the same
settings is there, and trains it otherwise (or when asked to ``retrain``). Training is deterministic
for a seed on a given machine (same data, same initial weights, same order), but not from one machine (or
version of this code) to the next: ``PretrainConfig()`` retrained in session 20 on a fresh machine gave other
weights than the base the study had used until then (E18, trained in session 14; a skill moved by up to 6
points). So the base ``PretrainConfig()`` trains is shipped in the repository, ``checkpoints/pocket-base``
(11 MB), and the study's results are read from that file; retraining it gives a base like it, not it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import paths, world
from .models import TINY, PocketSpec, build_pocket, default_corpus, freeze_vision_tower, load, save


# The first shipped base's curriculum (docs/experiment_log.md, "Pocket world", E4): counting and ordering first (learned
# together at once), then the object skills, then reading and existence, then all six; earlier skills stay as replay.
E4_CURRICULUM = [
    {"steps": 400, "mix": {"counting": 1, "ordering": 1}},
    {"steps": 400, "mix": {"counting": 0.5, "ordering": 0.5, "perception": 1, "grounding": 1}},
    {"steps": 400, "mix": {"counting": 0.5, "ordering": 0.5, "perception": 0.5, "grounding": 0.5,
                           "hallucination": 1, "ocr": 1}},
    {"steps": 400, "mix": {"grounding": 1.5, "ocr": 1.5, "perception": 1.5, "hallucination": 1.5, "counting": 1,
                           "ordering": 2}},
]
_REPLAY = {"counting": 0.25, "ordering": 0.25}
_OBJECTS = {"perception_questions": ["objects"]}  # the dense readout that binds colour to shape
_ALL_KINDS = {"perception_questions": ["light", "colour", "shape", "objects"]}
# The shipped base's curriculum (docs/experiment_log.md, E17/E18): E4's first stage, then a drill on the objects
# listing ("red circle white square") with replay, then the listing with the colour-and-shape hallucination question,
# then E4's other stages with the listing among the perception questions (a stage without a skill erases it: E16),
# then (E22, session 27) the last mixture once more for 800 steps with its own warm-up and cosine decay: the six
# stages before it (E21) ended with the loss still falling (0.20 at step 2,400; 0.15-0.17 after the seventh).
CURRICULUM = [
    E4_CURRICULUM[0],
    {"steps": 300, "mix": {"perception": 1, **_REPLAY}, "world": _OBJECTS},
    {"steps": 500, "mix": {"perception": 0.5, "hallucination": 1, **_REPLAY}, "world": _OBJECTS},
    {**E4_CURRICULUM[1], "mix": {**E4_CURRICULUM[1]["mix"], "hallucination": 0.5}, "world": _ALL_KINDS},
    {**E4_CURRICULUM[2], "world": _ALL_KINDS},
    {**E4_CURRICULUM[3], "world": _ALL_KINDS},
    {**E4_CURRICULUM[3], "steps": 800, "world": _ALL_KINDS},
]


# Settings added after bases had been recorded, with the behaviour those bases had (not today's defaults): a
# record without the key was trained so, and a config with that value writes no key (the same cache key as before).
_LATER = {"group_by_length": False, "vision_steps": 0, "freeze_vision": False}


@dataclass
class PretrainConfig:
    """What a pocket base model is trained with. Any change gives a different cached checkpoint.

    The defaults are the shipped base (README, E22: E21, E20's recipe at seed 1, with a seventh stage):
    :data:`CURRICULUM` after vision pretraining, with the tower frozen, in the default world but for restated
    hallucination answers and ordering prompts with a random format example in varied wordings (E18's config, which
    gave E18 and E18r, had only the first: E18r answered 2x2 puzzles well-formed 0.53 of the time, and seed 2 of it
    0.00). ``steps`` given with a curriculum scales its stages to exactly that total, each keeping its share (and at
    least one step), so ``PretrainConfig(steps=40)`` is the same schedule in small; ``stages=None`` trains one
    mixture (``mix``) for ``steps`` (2000 if not given). ``from_json`` reads a checkpoint's record back.
    """

    spec: PocketSpec = field(default_factory=PocketSpec)
    steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    # the shipped base, E22, is E21, seed 1 of E20's recipe (session 23), with a seventh stage (session 27; README,
    # "The shipped base"). Session 22 shipped E20, its seed 2, the seed at which E18's config answered no 2x2 puzzle
    # well-formed (0.00; README, "Why the count of numbers did not carry over"): reachable too, but with
    # hallucination at chance and a lower prior mean
    seed: int = 1
    # relative weight of each skill in the mixture: the slow learners (reading, binding, ranking) get more
    mix: dict = field(default_factory=lambda: {"grounding": 1.5, "ocr": 1.5, "perception": 1.5,
                                               "hallucination": 1.5, "counting": 1.0, "ordering": 2.0})
    # a curriculum: [{"steps": 600, "mix": {"counting": 1, "ordering": 1}}, ...]; it replaces mix
    stages: list | None = field(default_factory=lambda: json.loads(json.dumps(CURRICULUM)))
    # changes to the world's settings (world.WorldSettings), e.g. {"digit_pixel": 0.05}; {} is the default world.
    # The shipped base answers the hallucination question restated ("red circle yes"), not a bare yes/no (E17),
    # and meets the ordering prompt with a random format example and in varied wordings (E20)
    world: dict = field(default_factory=lambda: {"hallucination_echo": True, "ordering_random_example": True,
                                                 "ordering_varied_wording": True})
    # batches of similar prompt length (transformers' LengthGroupedSampler): the skills' prompts run from ~45
    # to ~130 tokens, so a mixed batch is ~40% padding, and a grouped step is faster (benchmarks/pretrain_step.py).
    # But a grouped batch holds one or two skills, not the mixture, and the shipped curriculum learned worse
    # so (docs/experiment_log.md, E5): off by default.
    group_by_length: bool = False
    # steps of vision pretraining before the curriculum (jigsaw_lib.vision: the tower learns shape, colour and
    # digits from dense scene labels, as Qwen's ViT arrives pretrained); 0 trains the tower only through the
    # language model, as the first shipped base (E4) was
    vision_steps: int = 1500
    # keep the vision tower (patch embedding and blocks) fixed while the language model learns the skills; the
    # merger, the projection into the language model, still trains. Measured (docs/experiment_log.md, E7): trained
    # on with the rest at lr 1e-3, a vision-pretrained tower lost what it had learned (a linear probe of shape
    # 0.96 -> 0.25)
    freeze_vision: bool = True

    def __post_init__(self):
        if isinstance(self.spec, dict):
            self.spec = PocketSpec(**self.spec)
        world.check_skills(self.mix)
        self.world = world.normalise(self.world)  # errors here, not after minutes of training; one cache key
        if self.stages:
            self.stages = [dict(stage) for stage in self.stages]  # the caller's list stays as it was
            for i, stage in enumerate(self.stages):
                if not {"steps", "mix"} <= set(stage) <= {"steps", "mix", "world"} or int(stage["steps"]) < 1:
                    raise ValueError(f"stage {i} of the curriculum must be {{'steps': n >= 1, 'mix': {{skill: "
                                     f"weight}}}} and optionally 'world': {{setting: value}}, got {stage!r}")
                world.check_skills(stage["mix"])
                if "world" in stage:  # the stage's items are drawn in the run's world with these changes
                    try:
                        with world.configure(**world.resolve(self.world)):  # the run's world, whatever the caller's
                            stage["world"] = world.normalise(stage["world"], on=world.SETTINGS)
                    except ValueError as e:
                        raise ValueError(f"stage {i} of the curriculum: {e}") from None
                    if not stage["world"]:
                        del stage["world"]  # no change: the same run as a stage without one
            lengths = [int(stage["steps"]) for stage in self.stages]
            if self.steps is not None and self.steps != sum(lengths):
                if self.steps < len(lengths):
                    raise ValueError(f"steps={self.steps} is fewer than the curriculum's {len(lengths)} stages (each "
                                     f"needs a step): give steps >= {len(lengths)}, or stages=None for one mixture")
                self.stages = [{**stage, "steps": n} for n, stage in zip(_scale(lengths, self.steps), self.stages)]
            self.steps = sum(int(stage["steps"]) for stage in self.stages)
        elif self.steps is None:
            self.steps = 2000
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.vision_steps < 0:
            raise ValueError(f"vision_steps must be >= 0 (0: no vision pretraining), got {self.vision_steps}")

    @classmethod
    def from_json(cls, record: dict) -> PretrainConfig:
        """The config a checkpoint's record (``pretrain_info.json``'s ``config``) describes, older records too:
        a setting it lacks was added later and had its old behaviour (``_LATER``), whatever today's default."""
        return cls(**{"stages": None, **_LATER, **_full(record)})  # a record without stages trained one mixture

    def plan(self) -> list[tuple[int, dict]]:
        """The stages as (steps, mix) pairs: one stage when no curriculum is given."""
        if not self.stages:
            return [(self.steps, dict(self.mix))]
        return [(int(stage["steps"]), dict(stage["mix"])) for stage in self.stages]

    def stage_world(self, stage: int) -> dict:
        """Changes to the run's world in which a stage's training items are drawn ({} for none)."""
        return dict(self.stages[stage].get("world", {})) if self.stages else {}

    def items_per_skill(self, stage: int | None = None) -> dict[str, int]:
        """Training items of each skill in one stage (all stages summed when ``stage`` is None)."""
        counts: dict[str, int] = {}
        for i, (steps, mix) in enumerate(self.plan()):
            if stage is None or i == stage:
                weight = sum(mix.values())
                for s, w in mix.items():
                    counts[s] = counts.get(s, 0) + max(1, round(steps * self.batch_size * w / weight))
        return counts

    def to_json(self) -> dict:
        d = asdict(self)
        if not self.stages:  # a plain mixture keeps the key it had before curricula existed
            d.pop("stages")
        for key, old in _LATER.items():  # settings added later: at their old behaviour, a base keeps the cache
            if d[key] == old:  # key it had before they existed
                d.pop(key)
        d["world"] = world.resolve(self.world)  # every setting: the record stays true when defaults change
        return d


def _scale(lengths: list[int], total: int) -> list[int]:
    """Stage lengths scaled to ``total`` steps in proportion, each at least 1, summing to ``total`` exactly."""
    ideal = [n * total / sum(lengths) for n in lengths]
    out = [max(1, int(x)) for x in ideal]
    while sum(out) < total:  # largest remainder first
        out[max(range(len(out)), key=lambda i: ideal[i] - out[i])] += 1
    while sum(out) > total:
        out[max((i for i in range(len(out)) if out[i] > 1), key=lambda i: out[i] - ideal[i])] -= 1
    return out


DEFAULT_DIR = paths.CHECKPOINTS / "pocket-base"
SMOKE_DIR = paths.CHECKPOINTS / "pocket-base-smoke"


def smoke_config() -> PretrainConfig:
    """The shipped schedule in miniature on the tiny model (one step per stage, two of vision pretraining):
    the base the notebooks' smoke runs build, in seconds, through the same code path."""
    return PretrainConfig(spec=TINY, steps=len(CURRICULUM), batch_size=4, warmup_steps=1, vision_steps=2)


INFO = "pretrain_info.json"


def _full(record: dict) -> dict:
    """A recorded config with its world in full (older records hold only their changes to FIRST_WORLD)."""
    return {**record, "world": world.resolve(record.get("world", {}), world.FIRST_WORLD)}


def _saved_config(out_dir: Path) -> dict:
    """A checkpoint's recorded config, its world in full."""
    return _full(json.loads((out_dir / INFO).read_text())["config"])


def _cached(out_dir: Path, config: PretrainConfig) -> bool:
    """A checkpoint trained with this config. A setting added since it was trained reads as its old behaviour,
    so a new setting must enter ``_LATER``; a record this code cannot read is not a match."""
    if not ((out_dir / INFO).exists() and (out_dir / "config.json").exists()):
        return False
    try:
        return PretrainConfig.from_json(_saved_config(out_dir)).to_json() == config.to_json()
    except (TypeError, ValueError):  # a setting this version lacks, or a value it rejects: train anew
        return False


def pretrain(config: PretrainConfig | None = None, out_dir: str | Path = DEFAULT_DIR, *,
             retrain: bool = False, progress: bool = True, callbacks=None, start_stage: int = 0,
             init: str | Path | None = None) -> Path:
    """Train (or find cached) a pocket base model; returns its checkpoint directory.

    ``start_stage=k`` with ``init``, a base trained by this config's first k stages, trains only stages k and on
    from its weights: the same items, seeds and schedules as a run from scratch, so on one machine the result is
    the same model (tested). The shipped base E22 is E21 (the first six stages) continued so from stage 6."""
    config = config or PretrainConfig()
    out_dir = Path(out_dir)
    if not retrain and _cached(out_dir, config):
        return out_dir
    if start_stage:
        _check_init(config, start_stage, init)
    with world.configure(**config.world):
        return _pretrain(config, out_dir, progress, callbacks, start_stage, init)


def _check_init(config: PretrainConfig, start_stage: int, init) -> None:
    """``init`` must be a base trained with exactly ``config``'s first ``start_stage`` stages."""
    stages = len(config.plan())
    if not config.stages or not 0 < start_stage < stages:
        raise ValueError(f"start_stage={start_stage} must name a later stage of the curriculum (1..{stages - 1}); "
                         "a config without stages has only one")
    if init is None or not (Path(init) / INFO).exists():
        raise FileNotFoundError(f"start_stage={start_stage} needs init=, a pretrained base (with {INFO}) trained by "
                                f"the config's first {start_stage} stages; got {init!r}")
    prefix = replace(config, stages=config.stages[:start_stage], steps=None)
    if not _cached(Path(init), prefix):
        raise ValueError(f"{init} was not trained by this config's first {start_stage} stages (its recorded config "
                         f"differs): continue a base only with the stages that follow its own")


def _pretrain(config: PretrainConfig, out_dir: Path, progress: bool, callbacks, start_stage: int = 0,
              init=None) -> Path:
    from . import train

    start = time.perf_counter()
    # share_prefix=False: pretraining runs as it ran when the shipped base was made (same numbers, bit for bit)
    if start_stage:  # the first stages are init's: its weights, time and log
        model, processor = load(init, share_prefix=False)
        earlier = info(init)
    else:
        corpus = default_corpus() + world.corpus()
        init_dir = out_dir / "init"
        build_pocket(config.spec, corpus=corpus, save_dir=init_dir)
        model, processor = load(init_dir, share_prefix=False)
        earlier = {}
    vision_record = earlier.get("vision", {})
    if config.vision_steps and not start_stage:
        from .vision import pretrain_vision

        vision_record = pretrain_vision(model, processor, config.vision_steps, out_dir / "trainer" / "vision",
                                        batch_size=config.batch_size, learning_rate=config.learning_rate,
                                        seed=config.seed, progress=progress)
        vision_record["seconds"] = time.perf_counter() - start
    if config.freeze_vision:  # the optimizer of each stage gets only what still requires a gradient
        freeze_vision_tower(model)
    plan = config.plan()
    seen: dict[str, int] = {}  # items of each skill used by earlier stages: a later stage starts after them
    log, done, data_seconds = list(earlier.get("log", [])), 0, earlier.get("data_seconds", 0.0)
    for k, (steps, mix) in enumerate(plan):
        counts = config.items_per_skill(k)
        first_item = {s: seen.get(s, 0) for s in mix}
        for s, n in counts.items():
            seen[s] = seen.get(s, 0) + n
        if k < start_stage:  # trained in init
            done += steps
            continue
        t = time.perf_counter()
        with world.configure(**config.stage_world(k)):  # e.g. scenes of one object while objects are learned
            data = world.build_dataset(counts, "train", seed=config.seed, size=config.spec.image_size,
                                       skills=list(mix), shuffle_seed=config.seed + k, progress=progress,
                                       start=first_item)
        data_seconds += time.perf_counter() - t
        grouping = {}
        if config.group_by_length:
            data = data.map(lambda row: {"length": prompt_length(row["prompt"])})
            # the sampler reads the length column, so TRL must not drop it (its collator ignores extra columns)
            grouping = {"train_sampling_strategy": "group_by_length", "remove_unused_columns": False}
        trainer = train.sft_trainer(
            model, processor, data, out_dir / "trainer" / f"stage{k}" if len(plan) > 1 else out_dir / "trainer",
            max_steps=steps, per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
            lr_scheduler_type="cosine", warmup_steps=min(config.warmup_steps, steps // 2),
            weight_decay=config.weight_decay, seed=config.seed + k, data_seed=config.seed + k,
            logging_steps=max(1, config.steps // 50), disable_tqdm=not progress, **grouping,
        )
        for cb in callbacks or []:
            trainer.add_callback(cb)
        trainer.train()
        model = trainer.model
        log += [{**entry, "step": entry.get("step", 0) + done, "stage": k} for entry in trainer.state.log_history]
        done += steps
    seconds = time.perf_counter() - start + earlier.get("seconds", 0.0)
    save(model, processor, out_dir, spec=config.spec)
    continued = {"continued": {"from": str(init), "start_stage": start_stage,
                               "seconds": time.perf_counter() - start}} if start_stage else {}
    (out_dir / INFO).write_text(json.dumps({
        "config": config.to_json(), "seconds": seconds, "data_seconds": data_seconds, "log": log,
        **({"vision": vision_record} if vision_record else {}), **continued}, indent=1))
    return out_dir


def prompt_length(prompt: list[dict]) -> int:
    """Characters of a conversational prompt's text: a stand-in for its token count that needs no tokenizer."""
    return sum(len(part.get("text") or "") for turn in prompt for part in turn["content"])


def world_of(checkpoint: str | Path) -> dict:
    """The world a pocket base was pretrained in, every setting ({}, the default world, for a checkpoint
    without pretraining info, e.g. Qwen's); runs from that base use it for puzzles and prior skills."""
    return _saved_config(Path(checkpoint))["world"] if (Path(checkpoint) / INFO).exists() else {}


def base_world(checkpoint: str | Path):
    """A ``with`` block in the world a base was pretrained in, so that its prior-skill items and puzzles are
    asked as it learned them (the shipped base restates its hallucination answers: "red circle yes"). The
    runners of ``jigsaw_lib.train`` enter it themselves; code that evaluates a base directly uses this."""
    return world.configure(**world_of(checkpoint))


def info(out_dir: str | Path = DEFAULT_DIR) -> dict:
    """What a cached base model was trained with, how long it took, and its training log."""
    path = Path(out_dir) / INFO
    if not path.exists():
        raise FileNotFoundError(f"no pretrained base model at {out_dir} (no {INFO}); run jigsaw_lib.pretrain.pretrain()")
    return json.loads(path.read_text())


def candidate_dir(seed: int) -> Path:
    """Where ``python -m jigsaw_lib.pretrain --seed S`` puts a base trained at another seed than the shipped one
    (a candidate: the shipped files stay as they are, and with them the cache key ``PretrainConfig()``)."""
    return paths.CHECKPOINTS / f"pocket-base-seed{seed}"


def main(argv=None) -> int:
    """``python -m jigsaw_lib.pretrain [--retrain] [--seed S]``: train (or find) the pocket base model; print its
    skills and the jigsaw numbers a base is chosen by.

    The checkpoint is shipped in ``checkpoints/pocket-base``, so this only loads it; ``--retrain`` trains
    it again from scratch with the default ``PretrainConfig`` (about 40 minutes on a 2-core CPU; deterministic
    for its seed on one machine, but another machine gives other weights) and overwrites the shipped files.
    ``--seed S`` trains ``PretrainConfig(seed=S)`` into :func:`candidate_dir` instead (or ``--out-dir``): how
    candidates for a new base are made, to be chosen by their reachability (2x2 well-formed, pass@8; README,
    "Why a base is shipped") before one is shipped. ``--from-stage K --init DIR`` continues a base trained by the
    first K stages: E22 is ``--retrain --from-stage 6 --init E21`` (E21's files: ``git show 585e9e9:...``).
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--retrain", action="store_true", help="train again even if a matching checkpoint exists")
    parser.add_argument("--seed", type=int, default=None, help="train PretrainConfig(seed=SEED), a candidate base")
    parser.add_argument("--out-dir", default=None, help="default: the shipped base, or a candidate's own folder")
    parser.add_argument("--n", type=int, default=200, help="held-out items per skill and puzzles per grid")
    parser.add_argument("--from-stage", type=int, default=0, metavar="K",
                        help="train only stages K and on, from --init (a base trained by the first K stages)")
    parser.add_argument("--init", default=None, help="with --from-stage: the base to continue")
    args = parser.parse_args(argv)
    config = PretrainConfig() if args.seed is None else PretrainConfig(seed=args.seed)
    out_dir = args.out_dir or (DEFAULT_DIR if config.seed == PretrainConfig().seed else candidate_dir(config.seed))
    continued = {"start_stage": args.from_stage, "init": args.init} if args.from_stage else {}
    path = pretrain(config, out_dir, retrain=args.retrain, **continued)
    print(f"base model at {path}: pretraining took {info(path)['seconds']:.0f} s")
    print(report(path, args.n).to_string(index=False))
    print("\nnumbers in greedy 2x2 answers (share of answers; -1: no <answer> block), the jigsaw prompt and the same "
          "prompt with one part\nswapped for the ordering skill's (evaluate.answer_lengths): a robust base gives 4")
    print(count_probe(path, args.n).to_string())
    return 0


def _load_base(checkpoint: str | Path):
    """A base's model, processor and the image size it was trained at."""
    model, processor = load(checkpoint)
    return model, processor, PretrainConfig.from_json(info(checkpoint)["config"]).spec.image_size


def count_probe(checkpoint: str | Path, n: int = 100, rows: int = 2, cols: int = 2):
    """:func:`evaluate.answer_lengths` of a base, in its world: variants of the jigsaw prompt (rows) against the
    count of numbers in its greedy answers (columns), as shares. README, "Why the count of numbers did not carry
    over": a base that gives rows*cols numbers only to some variants read the count from one prompt's surface."""
    from .evaluate import answer_lengths

    model, processor, size = _load_base(checkpoint)
    with base_world(checkpoint):
        table = answer_lengths(model, processor, rows, cols, n, image_size=size)
    return table.pivot(index="variant", columns="numbers", values="share").fillna(0.0)


def report(checkpoint: str | Path, n: int = 200, *, samples: int = 8, progress: bool = True):
    """A base's held-out numbers: every skill (``accuracy``), and on 2x2 puzzles, in its own world and in the
    study's puzzle world (``jigsaw_2x2_study``), exact, hit, rows, columns, well-formed, pass@``samples`` and the
    hit spread (``evaluate.evaluate_jigsaw``): what reachability is judged on."""
    import pandas as pd

    from .evaluate import evaluate_jigsaw, evaluate_skills

    model, processor, size = _load_base(checkpoint)
    with base_world(checkpoint):  # its items as it learned them
        skills = evaluate_skills(model, processor, n, image_size=size, progress=progress)
        jigsaw = evaluate_jigsaw(model, processor, [(2, 2)], n, samples=samples, image_size=size, axes=True,
                                 progress=progress)
        on_study = study_jigsaw(model, processor, n, samples=samples, image_size=size, progress=progress)
    return pd.concat([skills, jigsaw, on_study], ignore_index=True)


def study_jigsaw(model, processor, n: int = 200, *, samples: int = 8, image_size: int = 64, scale: str = "pocket",
                 progress: bool = True):
    """Jigsaw numbers on the study's own puzzles (the RFT preset's grids, drawn in its puzzle world within the
    current world; skill ``jigsaw_<r>x<c>_study``), as notebook 02 trains on them. Call it inside
    :func:`base_world`."""
    from .config import make as make_run
    from .evaluate import evaluate_jigsaw

    study = make_run("rft", scale)
    with study.in_puzzle_world():
        table = evaluate_jigsaw(model, processor, [tuple(g) for g in study.grids], n, samples=samples,
                                image_size=image_size, axes=True, progress=progress)
    table["skill"] += "_study"
    return table


if __name__ == "__main__":
    raise SystemExit(main())
