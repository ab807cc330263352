"""Synthetic unit-level dialogues (no audio) for tests and smoke runs of the generator stages.

Each LLM token has a fixed unit pattern (2-4 distinct units, drawn from the token id), each
unit lasting 1-3 frames; an agent word is the concatenation of its tokens' patterns, so the
text -> unit mapping is learnable and a falling loss means the model reads the text slots.
User speech uses patterns of its own; unit 0 is silence. The layouts mimic the three stages:
``turn``/``duplex`` alternate turns with pauses and never overlap; ``overlap`` adds user
backchannels during agent turns and user interruptions that cut the agent off mid-reply.
Everything here is synthetic and says so in the dialogue names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.unit_sequences import AgentTurn, UnitDialogue

SILENCE = 0


def token_pattern(token: int, num_units: int) -> list[int]:
    r = np.random.default_rng(10_000 + int(token))
    length = int(r.integers(2, 5))
    return [int(u) for u in r.choice(np.arange(1, num_units // 2), size=length, replace=False)]


def _user_pattern(word: int, num_units: int) -> list[int]:
    r = np.random.default_rng(90_000 + int(word))
    return [int(u) for u in r.choice(np.arange(num_units // 2, num_units), size=int(r.integers(2, 5)), replace=False)]


def _render(patterns: list[list[int]], rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Units of consecutive words (each a list of unit patterns); returns frames and word onsets."""
    frames: list[int] = []
    onsets: list[int] = []
    for word in patterns:
        onsets.append(len(frames))
        for u in word:
            frames += [u] * int(rng.integers(1, 4))
    return frames, onsets


def synthetic_dialogues(
    n: int,
    lexicon: Sequence[Sequence[int]],
    *,
    kind: str = "duplex",
    seed: int = 0,
    num_units: int = 500,
    turns: tuple[int, int] = (2, 4),
) -> list[UnitDialogue]:
    """``n`` dialogues whose agent words are drawn from ``lexicon`` (token ids per word)."""
    if kind not in ("turn", "duplex", "overlap"):
        raise ValueError(f"kind must be turn, duplex or overlap, got {kind!r}")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        agent: list[int] = []
        user: list[int] = []
        agent_turns: list[AgentTurn] = []
        user_turns: list[tuple[int, int]] = []

        def pad_to(t: int, agent: list[int] = agent, user: list[int] = user) -> None:
            agent.extend([SILENCE] * (t - len(agent)))
            user.extend([SILENCE] * (t - len(user)))

        pad_to(int(rng.integers(2, 8)))
        for _ in range(int(rng.integers(*turns))):
            # User turn.
            words = [_user_pattern(int(w), num_units) for w in rng.integers(0, 40, int(rng.integers(2, 6)))]
            frames, _ = _render(words, rng)
            s = len(user)
            user.extend(frames)
            user_turns.append((s, len(user)))
            pad_to(len(user) + int(rng.integers(2, 8)))
            # Agent turn.
            wid = rng.integers(0, len(lexicon), int(rng.integers(3, 9)))
            word_ids = [list(lexicon[int(w)]) for w in wid]
            pats = [[u for tok in w for u in token_pattern(tok, num_units)] for w in word_ids]
            frames, onsets = _render(pats, rng)
            s = len(agent)
            spoken = len(word_ids)
            if kind == "overlap" and rng.random() < 0.35:
                # Interruption: the user cuts in after a few words; the agent stops soon after.
                cut_word = int(rng.integers(1, max(2, len(onsets))))
                cut = onsets[cut_word] if cut_word < len(onsets) else len(frames)
                ufr, _ = _render([_user_pattern(int(w), num_units) for w in rng.integers(0, 40, 3)], rng)
                u0 = s + max(1, cut - 3)
                pad_to(u0)
                user.extend(ufr)
                user_turns.append((u0, len(user)))
                frames = frames[:cut]
                spoken = cut_word
            agent.extend(frames)
            agent_turns.append(AgentTurn(
                start=s, end=len(agent), word_onsets=[s + o for o in onsets[:spoken]],
                word_tokens=[len(w) for w in word_ids],
                token_ids=np.asarray([t for w in word_ids for t in w], dtype=np.int64),
            ))
            if kind == "overlap" and spoken == len(word_ids) and rng.random() < 0.5:
                # A backchannel ("mm-hm") from the user in the middle of the agent's turn.
                bc, _ = _render([_user_pattern(99, num_units)], rng)
                b0 = s + len(frames) // 2
                if b0 > len(user):
                    pad_to_user = b0 - len(user)
                    user.extend([SILENCE] * pad_to_user)
                    user.extend(bc)
                    user_turns.append((b0, len(user)))
            pad_to(max(len(agent), len(user)) + int(rng.integers(2, 8)))
        pad_to(max(len(agent), len(user)))
        a, u = np.asarray(agent, dtype=np.int64), np.asarray(user, dtype=np.int64)
        out.append(UnitDialogue(name=f"synthetic-{kind}-{seed}-{i}", agent=a, user=u, agent_turns=agent_turns,
                                user_turns=sorted(user_turns), user_speech=u != SILENCE, kind=kind))
    return out
