"""Synthetic corpus -> cached ``UnitDialogue`` splits for the generator stages (``units prepare``).

Reads the data developer's manifests (``training.data.manifest``) and, per record:

- ``dialogues`` (stages turn/duplex/overlap): the stereo 16 kHz WAV (channel 0 user, 1 agent);
  each channel -> 25 Hz units; agent ``turn`` segments become ``AgentTurn``s (their text's LLM
  tokens grouped into words and matched to the segment's word timings; a truncated turn keeps
  its spoken words); user segments (turns, backchannels, side talk) become user turns;
- ``qa``: the spoken question (user voice) then, after a short gap, the LLM's answer in the agent
  voice, as a two-channel dialogue of kind ``qa`` (the runtime's situation, LLM text exactly);
- ``utterances`` with role ``agent``: one agent utterance (user channel silent), kind
  ``utterance``: plain text -> speech pairs.

The LLM's hidden states for every agent text are computed teacher-forced over the chat it
answers (system prompt + the user turn it replies to, or "Say something." without one), which
equals what ``FrozenLLM.generate_stream`` yields token by token. Units come from the configured
unit tokenizer (offline extraction == streaming extraction). Results:
``<cache>/dialogues-{train,val,test}.pt``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.reply_text import TextConditioner
from agent.units import SAMPLE_RATE, SILENCE_DBFS, UNIT_SAMPLES, UnitTokenizer, frame_dbfs
from training.unit_sequences import AgentTurn, UnitDialogue

FRAME_S = UNIT_SAMPLES / SAMPLE_RATE
NO_QUESTION = "Say something."
"""The user line an agent utterance without a question is taken to answer (for hidden states)."""
QA_GAP_S = 0.4
"""Silence between a spoken question and its answer in a QA dialogue."""


@torch.no_grad()
def reply_hidden(llm: Any, question: str, reply_ids: Sequence[int]) -> np.ndarray:
    """(n, D) float16 last-layer hidden states of the reply tokens, teacher-forced after the chat prompt."""
    prompt = llm.chat_ids(question)
    ids = torch.tensor([list(prompt) + list(reply_ids)])
    out = llm.forward(llm.embed(ids), with_logits=False)
    return out.hidden[0, len(prompt) :].float().numpy().astype(np.float16)


def _norm(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower())


def split_words(cond: TextConditioner, ids: Sequence[int], spoken: Sequence[str]) -> list[int] | None:
    """Tokens per word such that the words match the ``spoken`` words (None when they cannot).

    Token groups (a word-initial token + what follows) without letters or digits (a lone dash,
    quotes) are merged into the word before them, as the voice does not say them as words.
    """
    groups = cond.group_words(ids)
    texts = [_norm("".join(str(cond.tokenizer.decode([int(ids[i])])) for i in g)) for g in groups]
    merged: list[list[int]] = []
    merged_text: list[str] = []
    for g, t in zip(groups, texts, strict=True):
        if (not t) and merged:
            merged[-1] += g
        elif merged and not merged_text[-1]:
            merged[-1] += g
            merged_text[-1] = t
        else:
            merged.append(list(g))
            merged_text.append(t)
    want = [_norm(w) for w in spoken]
    if len(merged) != len(want):
        return None
    # Spoken words are the text's words; a mismatch in spelling (numbers, abbreviations) is fine
    # as long as the count agrees and most words match.
    same = sum(a == b for a, b in zip(merged_text, want, strict=True))
    if same < 0.6 * len(want):
        return None
    return [len(g) for g in merged]


@dataclass
class PrepStats:
    dialogues: int = 0
    agent_turns: int = 0
    skipped_turns: int = 0
    seconds: float = 0.0


class Preparer:
    """Turns manifest records into ``UnitDialogue``s (units, LLM tokens, hidden states)."""

    def __init__(self, tokenizer: UnitTokenizer, llm: Any, use_hidden: bool = True) -> None:
        self.tok = tokenizer
        self.llm = llm
        self.cond = TextConditioner.from_llm(llm, use_hidden=False)
        self.use_hidden = use_hidden
        self.stats = PrepStats()

    def units(self, audio: np.ndarray) -> np.ndarray:
        return self.tok.extract(audio, SAMPLE_RATE).astype(np.int16)

    def _turn(self, text: str, words: list[Any], question: str, offset_s: float, t_total: int) -> AgentTurn | None:
        if not words:
            return None
        ids = self.llm.encode_text(text.strip())
        split = split_words(self.cond, ids, [w.word for w in words])
        if split is None:
            # Truncated (barge-in) turns keep only their spoken words in the timing; read the
            # text's leading words that match them.
            full = self.cond.group_words(ids)
            if len(full) > len(words):
                n_tok = sum(len(g) for g in full[: len(words)])
                split = split_words(self.cond, ids[:n_tok], [w.word for w in words])
                if split is not None:
                    split = split + [len(g) for g in full[len(words) :]]
        if split is None:
            self.stats.skipped_turns += 1
            return None
        onsets = [min(t_total - 1, int((w.start + offset_s) / FRAME_S)) for w in words]
        start = onsets[0]
        end = min(t_total, int(np.ceil((words[-1].end + offset_s) / FRAME_S)))
        hidden = reply_hidden(self.llm, question, ids) if self.use_hidden else None
        self.stats.agent_turns += 1
        return AgentTurn(start=start, end=max(end, start + 1), word_onsets=onsets, word_tokens=split,
                         token_ids=np.asarray(ids, dtype=np.int64), hidden=hidden)

    def _speech(self, audio: np.ndarray, t: int) -> np.ndarray:
        padded = np.pad(audio, (0, max(0, t * UNIT_SAMPLES - len(audio))))[: t * UNIT_SAMPLES]
        return frame_dbfs(padded) > SILENCE_DBFS

    def dialogue(self, rec: Any) -> UnitDialogue | None:
        audio = rec.load_audio(SAMPLE_RATE)
        user_a, agent_a = audio[:, 0], audio[:, 1]
        user, agent = self.units(user_a), self.units(agent_a)
        t = min(len(user), len(agent))
        user, agent = user[:t], agent[:t]
        turns: list[AgentTurn] = []
        user_turns: list[tuple[int, int]] = []
        for seg in rec.segments:
            if seg.channel == "agent" and seg.kind == "turn":
                q = rec.segments[seg.reply_to].text if seg.reply_to is not None else NO_QUESTION
                turn = self._turn(seg.text, seg.words, q or NO_QUESTION, 0.0, t)
                if turn is not None:
                    turns.append(turn)
            elif seg.channel == "user" and seg.kind in ("turn", "backchannel", "side"):
                s, e = int(seg.start / FRAME_S), int(np.ceil(seg.end / FRAME_S))
                user_turns.append((max(0, s), min(t, max(e, s + 1))))
        self.stats.dialogues += 1
        self.stats.seconds += t * FRAME_S
        return UnitDialogue(name=rec.id, agent=agent, user=user, agent_turns=turns, user_turns=sorted(user_turns),
                            user_speech=self._speech(user_a, t), kind=rec.stage)

    def qa(self, rec: Any) -> UnitDialogue | None:
        q = rec.load_question_audio(SAMPLE_RATE)
        a = rec.load_answer_audio(SAMPLE_RATE)
        gap = int(QA_GAP_S * SAMPLE_RATE)
        offset = len(q) + gap
        n = offset + len(a) + gap
        user_a = np.zeros(n, np.float32)
        user_a[: len(q)] = q
        agent_a = np.zeros(n, np.float32)
        agent_a[offset : offset + len(a)] = a
        user, agent = self.units(user_a), self.units(agent_a)
        t = len(agent)
        turn = self._turn(rec.answer_spoken or rec.answer, rec.answer_words, rec.question, offset / SAMPLE_RATE, t)
        if turn is None:
            return None
        qs = [w.start for w in rec.question_words] or [0.0]
        qe = [w.end for w in rec.question_words] or [len(q) / SAMPLE_RATE]
        user_turns = [(int(qs[0] / FRAME_S), min(t, int(np.ceil(qe[-1] / FRAME_S))))]
        self.stats.dialogues += 1
        self.stats.seconds += t * FRAME_S
        return UnitDialogue(name=rec.id, agent=agent, user=user, agent_turns=[turn], user_turns=user_turns,
                            user_speech=self._speech(user_a, t), kind="qa")

    def utterance(self, rec: Any) -> UnitDialogue | None:
        a = rec.load_audio(SAMPLE_RATE)
        lead = int(0.3 * SAMPLE_RATE)
        agent_a = np.concatenate([np.zeros(lead, np.float32), a, np.zeros(lead, np.float32)])
        agent = self.units(agent_a)
        user = self.units(np.zeros_like(agent_a))
        t = len(agent)
        turn = self._turn(rec.text, rec.words, NO_QUESTION, lead / SAMPLE_RATE, t)
        if turn is None:
            return None
        self.stats.dialogues += 1
        self.stats.seconds += t * FRAME_S
        return UnitDialogue(name=rec.id, agent=agent, user=user, agent_turns=[turn], user_turns=[],
                            user_speech=np.zeros(t, dtype=bool), kind="utterance")


def records(data_dir: str | Path, split: str, limits: dict[str, int]) -> Iterable[tuple[str, Any]]:
    """(kind, record) of every manifest the generator uses, ``limits[kind]`` at most (0 = all)."""
    from training.data.manifest import load_manifest, manifest_path

    for kind in ("dialogues", "qa", "utterances"):
        if not manifest_path(data_dir, kind).is_file():
            continue
        recs = load_manifest(data_dir, kind, split)
        if kind == "utterances":
            recs = [r for r in recs if r.role == "agent" and r.emotion == "neutral" and not r.augment]
        limit = limits.get(kind, 0)
        for r in recs[: limit or None]:
            yield kind, r
