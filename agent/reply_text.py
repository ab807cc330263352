"""The frozen LLM's reply as conditioning for the unit generator: tokens -> words -> slot vectors.

The generator reads the reply word by word (see ``agent.unit_session``), so tokens are grouped
into words the same way at training and at run time: a token whose text starts with whitespace
(or the first token of a reply) starts a word; anything else (word pieces, punctuation, digits)
joins the current word. A word is complete once the next word's first token has arrived or the
reply has ended, which costs one LLM token of latency (~33 ms for SmolLM2 on 2 cores).

A ``[T]`` slot vector is the LLM's input embedding of the token, concatenated with the LLM's
last hidden state for it when the generator uses hidden states. A generator with a phoneme
inventory also reads the word's pronunciation (``agent.word_phonemes``): the word's token slots
are followed by one slot per phoneme, a one-hot in the vectors' last ``len(inventory)`` columns
(zeros there on token slots, zeros in the LLM columns on phoneme slots).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


class TextConditioner:
    """Knows the LLM's tokenizer (word starts) and embedding table (slot vectors)."""

    def __init__(
        self,
        tokenizer: Any,
        embed: Callable[[torch.Tensor], torch.Tensor],
        hidden_size: int,
        use_hidden: bool,
        phoneme_symbols: Sequence[str] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self._embed = embed
        self.hidden_size = hidden_size
        self.use_hidden = use_hidden
        self.phoneme_index = {s: i for i, s in enumerate(phoneme_symbols)}
        self._phonemizer: Any = None
        self._starts: dict[int, bool] = {}

    @classmethod
    def from_llm(cls, llm: Any, use_hidden: bool, phoneme_symbols: Sequence[str] = ()) -> TextConditioner:
        """From an ``agent.llm.FrozenLLM``."""
        return cls(llm.tokenizer, llm.embed, llm.hidden_size, use_hidden, phoneme_symbols)

    @property
    def llm_cond_in(self) -> int:
        return self.hidden_size * (2 if self.use_hidden else 1)

    @property
    def cond_in(self) -> int:
        return self.llm_cond_in + len(self.phoneme_index)

    def phoneme_rows(self, word_text: str) -> torch.Tensor:
        """(p, cond_in) phoneme slot vectors of one word (p = 0 without an inventory)."""
        if not self.phoneme_index:
            return torch.zeros(0, self.cond_in)
        if self._phonemizer is None:
            from agent.word_phonemes import WordPhonemizer

            self._phonemizer = WordPhonemizer()
        ids = self._phonemizer.ids(word_text, self.phoneme_index)
        rows = torch.zeros(len(ids), self.cond_in)
        rows[torch.arange(len(ids)), self.llm_cond_in + torch.tensor(ids, dtype=torch.long)] = 1.0
        return rows

    def starts_word(self, token: int) -> bool:
        if token not in self._starts:
            text = str(self.tokenizer.decode([int(token)]))
            self._starts[token] = text[:1].isspace()
        return self._starts[token]

    def group_words(self, ids: Sequence[int]) -> list[list[int]]:
        """Indices of ``ids`` grouped into words."""
        words: list[list[int]] = []
        for i, tok in enumerate(ids):
            if not words or self.starts_word(int(tok)):
                words.append([i])
            else:
                words[-1].append(i)
        return words

    @torch.no_grad()
    def vectors(self, ids: Sequence[int], hidden: torch.Tensor | None) -> torch.Tensor:
        """One word's (m,) token ids (+ (m, D) hidden states) -> its (m + p, cond_in) float32 slot
        vectors: token slots, then (with a phoneme inventory) the word's p phoneme slots."""
        emb = self._embed(torch.tensor([list(ids)], dtype=torch.long))[0].float()
        if self.use_hidden:
            if hidden is None:
                raise ValueError("this generator conditions on LLM hidden states: pass them with the tokens")
            if hidden.shape != (len(ids), self.hidden_size):
                raise ValueError(f"hidden must be ({len(ids)}, {self.hidden_size}), got {tuple(hidden.shape)}")
            emb = torch.cat([emb, hidden.float()], dim=-1)
        if not self.phoneme_index:
            return emb
        tokens = torch.cat([emb, torch.zeros(len(ids), len(self.phoneme_index))], dim=-1)
        return torch.cat([tokens, self.phoneme_rows(str(self.tokenizer.decode([int(i) for i in ids])))])


@dataclass
class ReplyWords:
    """The reply text received so far, as complete words of slot vectors."""

    conditioner: TextConditioner | None
    words: list[torch.Tensor] = field(default_factory=list)
    """Complete words, each (m, cond_in)."""
    _ids: list[int] = field(default_factory=list)
    _hidden: list[torch.Tensor] = field(default_factory=list)
    ended: bool = False
    """The LLM finished the reply: the last partial word is complete too."""

    def push(self, token: int, hidden: torch.Tensor | None = None) -> None:
        if self.ended:
            raise RuntimeError("reply already ended")
        if self.conditioner is None:
            raise RuntimeError("pushing tokens needs a TextConditioner (or push whole words)")
        if self._ids and self.conditioner.starts_word(int(token)):
            self._close_word()
        self._ids.append(int(token))
        if hidden is not None:
            self._hidden.append(hidden.detach().reshape(-1))

    def push_word(self, vectors: torch.Tensor) -> None:
        """A whole word's (m, cond_in) slot vectors at once (closes any partial word first)."""
        if self.ended:
            raise RuntimeError("reply already ended")
        if self._ids:
            self._close_word()
        self.words.append(vectors)

    def end(self) -> None:
        if not self.ended:
            if self._ids:
                self._close_word()
            self.ended = True

    def _close_word(self) -> None:
        assert self.conditioner is not None
        hidden = torch.stack(self._hidden) if self._hidden else None
        self.words.append(self.conditioner.vectors(self._ids, hidden))
        self._ids, self._hidden = [], []
