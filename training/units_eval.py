"""Held-out figures of the unit generator and tokenizer (see the issue's "Done when").

- ``user_prediction_accuracy``: on held-out dialogues, the session runs with the real agent
  chunks forced and the real user chunks arriving one chunk late (so every user chunk is first
  predicted, then replaced); each predicted chunk's speech/silence is compared with the real one.
  A chunk is speech when most of its 25 Hz units are non-silence units of the codebook. The
  "persistence" baseline predicts the state of the newest real chunk the model had.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from agent.sync_format import UnitVocab, frames_per_chunk
from agent.unit_generator import UnitGenerator
from agent.unit_session import GeneratorSession
from configs.schema import GeneratorConfig
from training.unit_sequences import UnitDialogue, duplex_sequence, token_table
from training.units_common import CondTable, UnitCorpus


def _speech(units: np.ndarray, silent: set[int]) -> bool:
    return float(np.mean([int(u) not in silent for u in units])) > 0.5


def _word_vectors(d: UnitDialogue, conds: CondTable) -> list[list[torch.Tensor]]:
    """Per agent turn (sorted by start), the slot vectors of each of its words."""
    table, _ = token_table(d)
    out = []
    row = 0
    for t in sorted(d.agent_turns, key=lambda t: t.start):
        vecs = conds.vectors(d, np.arange(row, row + len(t.token_ids)))
        words, pos = [], 0
        for n in t.word_tokens:
            words.append(vecs[pos : pos + n])
            pos += n
        out.append(words)
        row += len(t.token_ids)
    del table
    return out


@torch.no_grad()
def user_prediction_accuracy(model: UnitGenerator, corpus: UnitCorpus, indices: Sequence[int], conds: CondTable,
                             delay: int = 1) -> dict[str, float]:
    model.eval()
    vocab = UnitVocab(model.arch.num_units)
    n = frames_per_chunk(model.arch.chunk_ms)
    silent = set(corpus.silent_units)
    cfg = GeneratorConfig(temperature=0.0, predict_user=True, max_context=1 << 15, compact_to=1 << 14)
    model_ctx = UnitGenerator(model.arch, max_context=cfg.max_context)
    model_ctx.load_state_dict(model.state_dict())
    model_ctx.eval()
    hits = base_hits = total = speech_real = 0
    speech_hits = speech_total = 0
    for i in indices:
        d = corpus.dialogues[i]
        seq = duplex_sequence(d, vocab, model.arch.chunk_ms, model.arch.text_lookahead)
        user = np.concatenate([d.user, np.full((-len(d.user)) % n, d.user[-1])])
        turns = sorted(d.agent_turns, key=lambda t: t.start)
        words = _word_vectors(d, conds)
        ins = {}
        for t, w in zip(turns, words, strict=True):
            first = t.word_onsets[0] if t.word_onsets else t.start
            ins.setdefault(first // n, []).append(w)
        session = GeneratorSession(model_ctx, cfg, None, silent_units=silent)
        for k in range(len(seq.chunk_pos)):
            for w in ins.get(k, []):
                session.start_reply()
                for vec in w:
                    session.push_word(vec)
                session.end_text()
            j = k - 1 - delay
            if j >= 0:
                session.push_user_chunk(j, user[j * n : (j + 1) * n])
            a, b = seq.chunk_pos[k]
            forced = [int(t) for t in seq.tokens[a + 1 : b] if vocab.is_unit(int(t)) or int(t) == vocab.word]
            out = session.step(force_agent=forced)
            if out.user_units is None or out.user_source != "predicted":
                continue
            real = user[(k - 1) * n : k * n]
            truth = _speech(real, silent)
            pred = _speech(out.user_units, silent)
            known = k - 1 - delay  # newest real chunk the model had
            base = _speech(user[known * n : (known + 1) * n], silent) if known >= 0 else False
            hits += int(pred == truth)
            base_hits += int(base == truth)
            speech_real += int(truth)
            if truth:
                speech_total += 1
                speech_hits += int(pred)
            total += 1
    return {
        "user_speech_silence_acc": hits / max(total, 1),
        "user_speech_silence_acc_persistence": base_hits / max(total, 1),
        "user_speech_recall": speech_hits / max(speech_total, 1),
        "user_speech_share": speech_real / max(total, 1),
        "user_chunks_scored": float(total),
    }
