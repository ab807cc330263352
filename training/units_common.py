"""What the three unit-generator recipes share: data, batching, loss, checkpoints, run options.

Each stage recipe (``training/units_stage{1,2,3}.py``) is ``setup / train / save_checkpoint`` with a
thin ``main()``; they differ in which dialogues they read and how they format them (turn-based
for stage 1, the full-duplex chunk format for stages 2-3) and in where they start from.

Run directory layout (``--out``, resumed when it exists)::

    config.json                      the config and arguments of the run
    checkpoints/step-000500/         generator.safetensors (fp32) + trainer.pt (optimiser, rng, batcher)
    checkpoints/latest               name of the newest complete step directory
    loss.csv, loss.png               train loss / held-out loss / lr per logged step
    final.safetensors                the stage's result (fp32; the next stage starts from it)
    metrics.json                     held-out figures of the finished stage
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agent.sync_format import UnitVocab
from agent.unit_generator import GeneratorArch, UnitGenerator, load_generator_file, save_generator
from configs import AgentConfig, load_config
from configs.schema import UnitTrainConfig
from training import checkpoint as ckpt
from training.unit_sequences import (
    AgentTurn,
    TrainSequence,
    UnitDialogue,
    duplex_sequence,
    token_table,
    turn_sequence,
    windows,
)
from training.units_args import add_recipe_args  # noqa: F401  (re-exported for the recipes)


# -- run options ---------------------------------------------------------------------------------
def config_from(args: argparse.Namespace) -> AgentConfig:
    return load_config(args.preset, args.overrides)


def stage_dir(cfg: UnitTrainConfig, stage: int, out: str | None) -> Path:
    return Path(out).expanduser() if out else Path(cfg.out_dir).expanduser() / f"stage{stage}"


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


# -- model ------------------------------------------------------------------------------------------
def arch_from(cfg: UnitTrainConfig, cond_dim: int, num_units: int, silence_unit: int,
              phoneme_symbols: Sequence[str] = ()) -> GeneratorArch:
    return GeneratorArch(
        num_units=num_units, chunk_ms=cfg.chunk_ms, d_model=cfg.d_model, num_layers=cfg.num_layers,
        num_heads=cfg.num_heads, ffn_mult=cfg.ffn_mult, cond_dim=cond_dim, use_hidden=cfg.use_hidden,
        text_lookahead=cfg.text_lookahead, silence_unit=silence_unit, dropout=cfg.dropout,
        phoneme_symbols=tuple(phoneme_symbols),
    )


def build_model(arch: GeneratorArch, init: str | Path | None, max_len: int) -> UnitGenerator:
    """A fresh generator, or the weights of ``init`` (whose arch must agree on the format).

    An ``init`` without phoneme slots may start a model with them: its phoneme embedding starts
    fresh, the rest is the init's (so it begins reading pronunciations on top of what it knows).
    """
    model = UnitGenerator(arch, max_context=max_len)
    if init:
        loaded = load_generator_file(init, max_context=max_len).model
        a, b = loaded.arch, arch
        for key in ("num_units", "d_model", "num_layers", "num_heads", "ffn_mult", "cond_dim", "use_hidden"):
            if getattr(a, key) != getattr(b, key):
                raise ValueError(f"--init {init}: {key} is {getattr(a, key)}, this stage wants {getattr(b, key)}")
        if a.phoneme_symbols and a.phoneme_symbols != b.phoneme_symbols:
            raise ValueError(f"--init {init} reads another phoneme inventory than this stage")
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        fresh = [k for k in missing if not (k.startswith("phoneme_embed.") and not a.phoneme_symbols)]
        if fresh or unexpected:
            raise ValueError(f"--init {init}: weights do not fit (missing {fresh}, unexpected {unexpected})")
    return model


# -- data -------------------------------------------------------------------------------------------
@dataclass
class UnitCorpus:
    """Dialogues of one split plus what the generator needs besides units."""

    dialogues: list[UnitDialogue]
    num_units: int
    silent_units: list[int]
    silence_unit: int

    @classmethod
    def load(cls, cache_dir: str | Path, split: str, max_dialogues: int = 0) -> UnitCorpus:
        """One prepared cache, or several joined by commas (they must share the codebook)."""
        parts = [p for p in str(cache_dir).split(",") if p]
        blobs = []
        for part in parts:
            path = Path(part).expanduser() / f"dialogues-{split}.pt"
            if not path.is_file():
                raise FileNotFoundError(
                    f"no prepared unit data at {path}; run `duplex-agent units prepare --data DATA_DIR` first"
                )
            blobs.append(torch.load(path, weights_only=False))
        keys = {(int(b["num_units"]), tuple(b["silent_units"]), int(b["silence_unit"])) for b in blobs}
        if len(keys) != 1:
            raise ValueError(f"caches {cache_dir} were prepared with different codebooks")
        dialogues = [d for b in blobs for d in b["dialogues"]]
        if max_dialogues:
            dialogues = dialogues[:max_dialogues]
        b = blobs[0]
        return cls(dialogues, int(b["num_units"]), list(b["silent_units"]), int(b["silence_unit"]))

    def save(self, cache_dir: str | Path, split: str) -> Path:
        path = Path(cache_dir).expanduser() / f"dialogues-{split}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save({"dialogues": self.dialogues, "num_units": self.num_units, "silent_units": self.silent_units,
                    "silence_unit": self.silence_unit}, tmp)
        tmp.replace(path)
        return path

    def select(self, kinds: Sequence[str]) -> list[int]:
        return [i for i, d in enumerate(self.dialogues) if d.kind in kinds]


class CondTable:
    """Text-slot vectors: LLM input embeddings of each dialogue's agent tokens (+ hidden states),
    and, with a phoneme inventory, one-hot phoneme slots after each word's tokens.

    Only the embedding matrix of the frozen LLM is kept (a copy, never trained). Phoneme slots
    are added to a corpus by ``add_phoneme_slots``: in its agent turns a phoneme is a negative
    "token id" ``-(1 + symbol id)`` with a zero hidden-state row, so every sequence builder
    counts and orders them exactly like token slots (as ``agent.reply_text`` does at run time).
    """

    def __init__(self, embedding: torch.Tensor, use_hidden: bool, tokenizer: Any = None,
                 phoneme_symbols: Sequence[str] = ()) -> None:
        self.embedding = embedding.detach().float()
        self.use_hidden = use_hidden
        self.hidden_size = int(embedding.shape[1])
        self.tokenizer = tokenizer
        self.phoneme_symbols = tuple(phoneme_symbols)
        self._phonemizer: Any = None

    @classmethod
    def from_llm(cls, llm: Any, use_hidden: bool, phoneme_symbols: Sequence[str] = ()) -> CondTable:
        return cls(llm.model.get_input_embeddings().weight, use_hidden, llm.tokenizer, phoneme_symbols)

    @property
    def llm_cond_in(self) -> int:
        return self.hidden_size * (2 if self.use_hidden else 1)

    @property
    def cond_in(self) -> int:
        return self.llm_cond_in + len(self.phoneme_symbols)

    # -- phoneme slots --------------------------------------------------------------------------
    def _words(self, turn: AgentTurn) -> list[str]:
        ids, out, pos = turn.token_ids, [], 0
        for n in turn.word_tokens:
            out.append(str(self.tokenizer.decode([int(i) for i in ids[pos : pos + n]])))
            pos += n
        return out

    def _turn_words(self, corpus: UnitCorpus) -> list[list[list[str]]]:
        """Each agent turn's words (dialogue -> turn -> words), decoded once per call."""
        if self.tokenizer is None:
            raise ValueError("phoneme slots need the LLM's tokenizer (CondTable.from_llm)")
        return [[self._words(t) for t in d.agent_turns] for d in corpus.dialogues]

    def _phonemizer_for(self, words: list[str]) -> Any:
        """The table's phonemizer, with ``words`` phonemized in one espeak-ng call."""
        from agent.word_phonemes import WordPhonemizer

        if self._phonemizer is None:
            self._phonemizer = WordPhonemizer()
        self._phonemizer.prime(words)
        return self._phonemizer

    def fit_phonemes(self, corpus: UnitCorpus) -> tuple[str, ...]:
        """Set the phoneme inventory to the symbols of the corpus's agent words."""
        from agent.word_phonemes import fit_inventory

        words = [w for turns in self._turn_words(corpus) for ws in turns for w in ws]
        self.phoneme_symbols = fit_inventory(self._phonemizer_for([]), words)
        return self.phoneme_symbols

    def add_phoneme_slots(self, corpus: UnitCorpus) -> UnitCorpus:
        """The corpus with each agent word's phoneme slots after its token slots (a copy; the same
        corpus back when there is no inventory)."""
        if not self.phoneme_symbols:
            return corpus
        turn_words = self._turn_words(corpus)
        ph = self._phonemizer_for([w for turns in turn_words for ws in turns for w in ws])
        index = {s: i for i, s in enumerate(self.phoneme_symbols)}
        dialogues = []
        for d, words_of_turns in zip(corpus.dialogues, turn_words, strict=True):
            turns = []
            for t, words in zip(d.agent_turns, words_of_turns, strict=True):
                if (t.token_ids < 0).any():
                    raise ValueError(f"{d.name}: phoneme slots were added already")
                ids, hid, counts, pos = [], [], [], 0
                for n, word in zip(t.word_tokens, words, strict=True):
                    p = [-(1 + i) for i in ph.ids(word, index)]
                    ids += list(t.token_ids[pos : pos + n]) + p
                    if t.hidden is not None:
                        hid += [t.hidden[pos : pos + n], np.zeros((len(p), t.hidden.shape[1]), t.hidden.dtype)]
                    counts.append(n + len(p))
                    pos += n
                turns.append(dataclasses.replace(t, token_ids=np.asarray(ids, dtype=np.int64), word_tokens=counts,
                                                 hidden=np.concatenate(hid) if t.hidden is not None else None))
            dialogues.append(dataclasses.replace(d, agent_turns=turns))
        return dataclasses.replace(corpus, dialogues=dialogues)

    def vectors(self, d: UnitDialogue, rows: np.ndarray) -> torch.Tensor:
        """(N,) rows (-1 = not a text slot) -> (N, cond_in); zeros where rows < 0."""
        table, hidden = token_table(d)
        out = torch.zeros(len(rows), self.cond_in)
        sel = np.nonzero(rows >= 0)[0]
        if len(sel) == 0:
            return out
        ids = table[rows[sel]].astype(np.int64)
        tok, phon = sel[ids >= 0], sel[ids < 0]
        r = rows[tok]
        out[tok, : self.hidden_size] = self.embedding[torch.from_numpy(table[r].astype(np.int64))]
        if self.use_hidden:
            if hidden is None:
                raise ValueError(f"{d.name}: the generator uses LLM hidden states but the data has none "
                                 "(prepare the data with the LLM, or set units_train.use_hidden=false)")
            out[tok, self.hidden_size : self.llm_cond_in] = torch.from_numpy(hidden[r].astype(np.float32))
        if len(phon):
            if not self.phoneme_symbols:
                raise ValueError(f"{d.name} has phoneme slots but this table has no phoneme inventory")
            symbol = -1 - table[rows[phon]].astype(np.int64)
            out[torch.from_numpy(phon), torch.from_numpy(self.llm_cond_in + symbol)] = 1.0
        return out


@dataclass
class Example:
    dialogue: int
    tokens: np.ndarray
    rows: np.ndarray
    mask: np.ndarray


def stage_sequence(d: UnitDialogue, stage: int, vocab: UnitVocab, cfg: UnitTrainConfig,
                   rng: np.random.Generator) -> TrainSequence:
    if stage == 1:
        return turn_sequence(d, vocab, cfg.text_lookahead)
    # Text starts to be read 0 or 1 chunk before the first word: the model learns to start
    # speaking within a chunk of seeing the reply, whenever the runtime delivers it.
    leads = rng.integers(0, 2, len(d.agent_turns))
    return duplex_sequence(d, vocab, cfg.chunk_ms, cfg.text_lookahead, leads=leads)


def make_examples(corpus: UnitCorpus, indices: Sequence[int], stage: int, vocab: UnitVocab,
                  cfg: UnitTrainConfig, rng: np.random.Generator) -> list[Example]:
    out = []
    for i in indices:
        seq = stage_sequence(corpus.dialogues[i], stage, vocab, cfg, rng)
        for a, b in windows(seq, cfg.max_len):
            mask = seq.loss_mask[a:b].copy()
            mask[0] = False
            if mask.sum() == 0:
                continue
            out.append(Example(i, seq.tokens[a:b], seq.cond_rows[a:b], mask))
    return out


class TokenBatcher:
    """Batches of about ``batch_tokens`` padded tokens; examples of similar length go together.

    Every epoch reshuffles (and re-draws the text leads via ``rebuild``); each rank of a
    torchrun world takes every ``world``-th batch. The position is saved with checkpoints.
    """

    def __init__(self, build: Any, batch_tokens: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.build = build
        self.batch_tokens = batch_tokens
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0
        self.cursor = 0
        self._batches: list[list[Example]] = []
        self._make()

    def _make(self) -> None:
        rng = np.random.default_rng(self.seed + 1000 * self.epoch)
        examples = self.build(rng)
        if not examples:
            raise ValueError("no training examples (empty split?)")
        order = rng.permutation(len(examples))
        batches: list[list[Example]] = []
        pool = 64
        for p in range(0, len(order), pool):
            chunk = sorted((examples[i] for i in order[p : p + pool]), key=lambda e: len(e.tokens))
            cur: list[Example] = []
            for ex in chunk:
                longest = max([len(e.tokens) for e in cur] + [len(ex.tokens)])
                if cur and longest * (len(cur) + 1) > self.batch_tokens:
                    batches.append(cur)
                    cur = []
                cur.append(ex)
            if cur:
                batches.append(cur)
        rng.shuffle(batches)  # type: ignore[arg-type]
        # Every rank needs the same number of batches per epoch (DDP steps in lockstep).
        usable = len(batches) - len(batches) % self.world if len(batches) >= self.world else len(batches)
        self._batches = batches[:usable] if usable else batches

    def next(self) -> list[Example]:
        per_rank = max(1, len(self._batches) // self.world)
        if self.cursor >= per_rank:
            self.epoch += 1
            self.cursor = 0
            self._make()
        idx = (self.cursor * self.world + self.rank) % len(self._batches)
        self.cursor += 1
        return self._batches[idx]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, d: dict[str, int]) -> None:
        self.epoch, self.cursor = int(d["epoch"]), int(d["cursor"])
        self._make()


def collate(batch: list[Example], corpus: UnitCorpus, conds: CondTable, pad: int) -> dict[str, torch.Tensor]:
    t = max(len(e.tokens) for e in batch)
    b = len(batch)
    tokens = torch.full((b, t), pad, dtype=torch.long)
    mask = torch.zeros(b, t, dtype=torch.bool)
    cond = torch.zeros(b, t, conds.cond_in)
    for i, e in enumerate(batch):
        n = len(e.tokens)
        tokens[i, :n] = torch.from_numpy(e.tokens)
        mask[i, :n] = torch.from_numpy(e.mask)
        if (e.rows >= 0).any():
            cond[i, :n] = conds.vectors(corpus.dialogues[e.dialogue], e.rows)
    return {"tokens": tokens, "mask": mask, "cond": cond}


def loss_of(model: torch.nn.Module, batch: dict[str, torch.Tensor], bf16: bool = False
            ) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy over the target positions; also token accuracy."""
    tokens, mask = batch["tokens"], batch["mask"]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(tokens[:, :-1], batch["cond"][:, :-1])
    logits = logits.float()
    target = tokens[:, 1:]
    m = mask[:, 1:]
    loss = F.cross_entropy(logits[m], target[m])
    with torch.no_grad():
        acc = float((logits[m].argmax(-1) == target[m]).float().mean())
    return loss, {"acc": acc, "tokens": float(m.sum())}


@torch.no_grad()
def heldout_loss(model: UnitGenerator, examples: list[Example], corpus: UnitCorpus, conds: CondTable,
                 batch_tokens: int, bf16: bool = False) -> dict[str, float]:
    was = model.training
    model.eval()
    tot, n, correct = 0.0, 0.0, 0.0
    examples = sorted(examples, key=lambda e: len(e.tokens))
    i = 0
    while i < len(examples):
        j = i + 1
        while j < len(examples) and len(examples[j].tokens) * (j - i + 1) <= batch_tokens:
            j += 1
        batch = collate(examples[i:j], corpus, conds, model.vocab.pad)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch["tokens"][:, :-1], batch["cond"][:, :-1])
        logits = logits.float()
        m = batch["mask"][:, 1:]
        target = batch["tokens"][:, 1:][m]
        lg = logits[m]
        tot += float(F.cross_entropy(lg, target, reduction="sum"))
        correct += float((lg.argmax(-1) == target).sum())
        n += float(m.sum())
        i = j
    model.train(was)
    return {"val_loss": tot / max(n, 1.0), "val_acc": correct / max(n, 1.0)}


# -- checkpoints (training/checkpoint.py's atomic step directories) ---------------------------------
def save_checkpoint_dir(run_dir: Path, step: int, model: UnitGenerator, optimizer: torch.optim.Optimizer,
                        extra: dict[str, Any], keep: int = 2) -> Path:
    """``checkpoints/step-N`` with the generator's weights (training.checkpoint's atomic layout)."""
    return ckpt.save_step_dir(
        run_dir, step, lambda d: save_generator(model, d / "generator.safetensors", extra={"step": step},
                                                dtype=torch.float32),
        optimizer, extra, keep)


def resume_from(run_dir: Path, model: UnitGenerator, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Restore the newest checkpoint of ``run_dir``: (step, extra), or (0, {}) when there is none."""
    path = ckpt.latest_checkpoint(run_dir)
    if path is None:
        return 0, {}
    model.load_state_dict(load_generator_file(path / "generator.safetensors").model.state_dict())
    return ckpt.load_trainer_state(path, optimizer)


def export_final(run_dir: Path, model: UnitGenerator, extra: dict[str, Any]) -> Path:
    path = run_dir / "final.safetensors"
    save_generator(model, path, extra=extra, dtype=torch.float32)
    return path


# -- the loop the three recipes run -----------------------------------------------------------------
@dataclass
class StageRun:
    """Everything one stage's ``train`` needs (built by the recipe's ``setup``)."""

    stage: int
    cfg: UnitTrainConfig
    run_dir: Path
    model: UnitGenerator
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batcher: TokenBatcher
    corpus: UnitCorpus
    val_corpus: UnitCorpus
    val_examples: list[Example]
    conds: CondTable
    steps: int
    start_step: int
    dist: Any
    progress: bool
    curve: Any
    extra: dict[str, Any]
    stop_at: int | None = None

    @property
    def finished(self) -> bool:
        return self.start_step >= self.steps


def train_loop(run: StageRun) -> dict[str, float]:
    """AdamW steps with warm-up/cosine LR, clipping, held-out loss and checkpoints every
    ``eval_every`` steps, a loss curve (CSV + PNG) and a tqdm bar; resumable at any checkpoint."""
    from tqdm import tqdm

    from training.distributed import barrier, mean_across

    cfg, model = run.cfg, run.model
    model.train()
    bar = tqdm(total=run.steps, initial=run.start_step, desc=f"units stage {run.stage}",
               disable=not (run.progress and run.dist.is_main), dynamic_ncols=True)
    last: dict[str, float] = {}
    window: list[float] = []
    end = run.steps if run.stop_at is None else min(run.steps, run.stop_at)
    for step in range(run.start_step, end):
        lr = ckpt.lr_at(step, cfg.lr, cfg.warmup_steps, run.steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        batch = collate(run.batcher.next(), run.corpus, run.conds, model.vocab.pad)
        loss, info = loss_of(run.ddp_model, batch, cfg.bf16)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        run.optimizer.step()
        window.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{window[-1]:.3f}", acc=f"{info['acc']:.2f}")
        done = step + 1
        if done % 10 == 0 or done == run.steps:
            row = {"loss": mean_across(float(np.mean(window)), run.dist), "lr": lr}
            window = []
            if done % cfg.eval_every == 0 or done == run.steps:
                row.update(heldout_loss(model, run.val_examples, run.val_corpus, run.conds, cfg.batch_tokens, cfg.bf16))
            if run.dist.is_main:
                run.curve.log(done, **row)
            last = row
        if done % cfg.eval_every == 0 or done == run.steps or done == end:
            if run.dist.is_main:
                save_checkpoint_dir(run.run_dir, done, model, run.optimizer, {"batcher": run.batcher.state_dict()})
                run.curve.plot(f"unit generator, stage {run.stage}")
            barrier(run.dist)
    bar.close()
    run.start_step = max(run.start_step, end)
    return last


def setup_run(stage: int, args: argparse.Namespace, kinds: Sequence[str], mix_kinds: Sequence[str] = (),
              mix_share: float = 0.0) -> StageRun:
    """Common setup: config, data (the stage's dialogue kinds, plus a ``mix_share`` of
    ``mix_kinds`` to keep earlier skills), model (``--init`` or the previous stage's final),
    optimiser, resume, DDP."""
    from agent.llm import load_llm
    from training.curves import LossCurve
    from training.distributed import init_distributed, wrap_ddp

    cfg_all = config_from(args)
    cfg = cfg_all.units_train
    dist = init_distributed()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    data_dir = args.data or cfg.cache_dir  # one prepared cache or several, comma-separated
    corpus = UnitCorpus.load(data_dir, "train", cfg.max_dialogues)
    val = UnitCorpus.load(data_dir, "val", cfg.max_dialogues)
    init = args.init
    if init is None and stage > 1:
        prev = stage_dir(cfg, stage - 1, None) / "final.safetensors"
        if not prev.is_file():
            raise FileNotFoundError(f"stage {stage} starts from stage {stage - 1}'s {prev}; train it first or pass --init")
        init = str(prev)
    llm = load_llm(cfg_all.llm)
    conds = CondTable.from_llm(llm, cfg.use_hidden)
    del llm
    if cfg.phonemes:
        init_symbols = _init_phonemes(init)
        if init_symbols:  # continue on the init's inventory (its embedding rows mean those symbols)
            conds.phoneme_symbols = init_symbols
        else:
            conds.fit_phonemes(corpus)
        corpus, val = conds.add_phoneme_slots(corpus), conds.add_phoneme_slots(val)
    vocab = UnitVocab(corpus.num_units)
    main_idx = corpus.select(kinds)
    mix_idx = corpus.select(mix_kinds)
    if not main_idx:
        raise ValueError(f"stage {stage}: no training dialogues of kind {', '.join(kinds)} in {data_dir}")

    def build(rng: np.random.Generator) -> list[Example]:
        chosen = list(main_idx)
        if mix_idx and mix_share > 0:
            k = min(len(mix_idx), int(round(mix_share * len(main_idx))))
            chosen += [int(i) for i in rng.choice(mix_idx, size=k, replace=False)]
        return make_examples(corpus, chosen, stage, vocab, cfg, rng)

    val_idx = val.select(kinds)
    val_examples = make_examples(val, val_idx, stage, vocab, cfg, np.random.default_rng(1234))
    run_dir = stage_dir(cfg, stage, args.out)
    arch = arch_from(cfg, conds.hidden_size, corpus.num_units, corpus.silence_unit, conds.phoneme_symbols)
    model = build_model(arch, init, cfg.max_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    steps = args.steps or {1: cfg.stage1_steps, 2: cfg.stage2_steps, 3: cfg.stage3_steps}[stage]
    batcher = TokenBatcher(build, cfg.batch_tokens, cfg.seed + stage, dist.rank, dist.world)
    start, extra = resume_from(run_dir, model, optimizer)
    if start:
        batcher.load_state_dict(extra["batcher"])
    curve = LossCurve(run_dir, "loss")
    curve.truncate(start)
    if dist.is_main:
        write_json(run_dir / "config.json", {"stage": stage, "units_train": vars(cfg), "init": init,
                                             "steps": steps, "world": dist.world,
                                             "args": {k: v for k, v in vars(args).items() if not callable(v)}})
    return StageRun(
        stage=stage, cfg=cfg, run_dir=run_dir, model=model, ddp_model=wrap_ddp(model, dist), optimizer=optimizer,
        batcher=batcher, corpus=corpus, val_corpus=val, val_examples=val_examples, conds=conds, steps=steps,
        start_step=start, dist=dist, progress=not args.no_progress, curve=curve,
        extra={"silent_units": corpus.silent_units, "init": init}, stop_at=args.stop_at,
    )


def _init_phonemes(init: str | None) -> tuple[str, ...]:
    return load_generator_file(init).model.arch.phoneme_symbols if init else ()


def save_stage_checkpoint(run: StageRun, metrics: dict[str, float]) -> Path | None:
    """Export a stage's final weights and figures (main process, only once all steps are done)."""
    if not run.dist.is_main or not run.finished:
        return None
    path = export_final(run.run_dir, run.model, run.extra)
    write_json(run.run_dir / "metrics.json", {"stage": run.stage, **metrics})
    return path


def run_stage(run: StageRun, train: Any, save_checkpoint: Any) -> int:
    """Train (resuming), save, and say how it ended; the process group is always shut down."""
    from training.distributed import shutdown

    try:
        metrics = train(run)
        path = save_checkpoint(run, metrics)
        if path:
            print(f"stage {run.stage} done: {path} {metrics}")
        elif run.dist.is_main:
            print(f"stage {run.stage} stopped at step {run.start_step} of {run.steps}; rerun the same command to resume")
    finally:
        shutdown(run.dist)
    return 0
