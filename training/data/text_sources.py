"""Text for the synthetic data: dialogues, questions, and the small closed sets of spoken cues.

* ``chatterbot-corpus`` (BSD-3-Clause) English conversations: dialogue turns, single sentences,
  and questions (its lines that end in "?").
* Questions are answered by the frozen LLM itself (``FrozenLLM.answer``) in the synth job, so the
  spoken-QA target is what the LLM says to the typed question (Freeze-Omni's self-distillation).
* Written here (ours, Apache-2.0 with the project): backchannels, fillers, lines addressed to
  someone else, barge-in openers, and sentence templates with a natural mid-sentence pause point.

Splits are by text, decided by a hash of the text's id so they never change with the seed or
the amount generated: a conversation, question or template sentence is train, val or test for
good (test = held-out text).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

# Spoken cues. Each is (label text, text given to the voice): the synthesisers read "mm hmm"
# better than "mm-hm".
BACKCHANNELS = (
    ("mm-hm", "mm hmm"), ("yeah", "yeah"), ("right", "right"), ("uh-huh", "uh huh"), ("okay", "okay"),
    ("I see", "I see"), ("sure", "sure"), ("yeah yeah", "yeah yeah"), ("mm", "mmm"), ("right right", "right, right"),
)
FILLERS = ("um", "uh", "well", "so", "you know", "I mean", "like", "hmm")
# Openers of a real barge-in: the state head must tell them from a backchannel within 160-320 ms,
# so none of them starts like a backchannel or a side-talk line.
BARGEIN_OPENERS = (
    "wait", "wait, wait", "hold on", "no, actually", "sorry, but", "stop, stop", "excuse me, but",
    "no no", "actually, wait", "sorry to interrupt, but",
)
# Lines addressed to someone else in the room or on the phone.
SIDE_TALK = (
    "hang on, I'm on a call", "just a second, honey", "I'll be right there", "can you close the door please",
    "honey, can you turn that down", "not now, I'm busy", "mom, I'll be down in a minute",
    "tell him I'll call back later", "thanks, just put it on the table", "yes, I'm coming",
    "can you grab the mail", "the keys are in the kitchen", "give me five minutes",
    "who is at the door", "dinner is in the oven", "I'm talking to the computer",
    "let the dog out please", "put your shoes on, we're leaving soon", "did you feed the cat",
    "one moment, I'm on the phone",
)
# Sentences with a point where a speaker naturally stops to think: a pause inserted after word
# ``cut`` leaves a syntactically incomplete sentence ("I was thinking about ... going to the park").
_PAUSE_TEMPLATES = (
    ("I was thinking about", "{activity_ing}"),
    ("Can you tell me how to", "{task}"),
    ("I would really like to", "{activity} this weekend"),
    ("My {relative} asked me to", "{task}"),
    ("Do you know if I should", "{task} {time}"),
    ("I need to remember to", "{task} {time}"),
    ("What do you think about", "{activity_ing} with my {relative}"),
    ("Could you help me find a way to", "{task}"),
    ("Yesterday my {relative} and I were", "{activity_ing} for hours"),
    ("I'm not sure whether I want to", "{activity} or stay home"),
    ("The best thing about", "{activity_ing} is the quiet"),
    ("Is it a good idea to", "{task} {time}"),
    ("I have been trying to", "{task} all week"),
    ("Tell me more about the", "history of {place}"),
    ("I wonder what the weather will be like in", "{place} {time}"),
    ("How long does it take to", "{task}"),
)
_SLOTS = {
    "activity": ("go to the park", "visit the museum", "learn to play the guitar", "take a cooking class",
                 "go hiking in the mountains", "watch a movie", "read a good book", "go swimming",
                 "plant some tomatoes", "ride my bike to work"),
    "activity_ing": ("going to the park", "visiting the museum", "learning to play the guitar",
                     "taking a cooking class", "hiking in the mountains", "walking by the river", "cooking dinner",
                     "painting the fence", "cleaning the garage", "playing chess"),
    "task": ("fix a leaking tap", "bake fresh bread", "change a flat tyre", "write a thank you letter",
             "renew my passport", "book a table for dinner", "pay the electricity bill", "call the doctor",
             "clean the windows", "pack for a long trip"),
    "relative": ("sister", "brother", "mother", "father", "neighbour", "friend", "cousin", "uncle"),
    "time": ("tomorrow morning", "next week", "on Friday", "tonight", "this afternoon", "before the holidays"),
    "place": ("Paris", "the city centre", "London", "the old town", "Chicago", "the mountains"),
}
_SPLIT_BUCKETS = 1000


def text_split(key: str, val_fraction: float, test_fraction: float) -> str:
    """``train``/``val``/``test`` from a stable hash of ``key`` (never from the seed)."""
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:4], "big") % _SPLIT_BUCKETS
    if h < test_fraction * _SPLIT_BUCKETS:
        return "test"
    if h < (test_fraction + val_fraction) * _SPLIT_BUCKETS:
        return "val"
    return "train"


def stable_hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha1("\x1f".join(map(str, parts)).encode("utf-8")).digest()[:8], "big")


_OK_LINE = re.compile(r"^[A-Za-z0-9 ,.'?!;:\-]+$")


def clean_line(text: object) -> str | None:
    """A corpus line fit to be spoken, or None (markup, code, odd symbols, too long)."""
    if not isinstance(text, str):
        return None
    t = re.sub(r"\s+", " ", text).strip()
    t = t.replace("\u2019", "'")
    if not t or not _OK_LINE.match(t) or not re.search(r"[A-Za-z]", t):
        return None
    if len(t.split()) > 30 or len(t) < 2:
        return None
    return t


@dataclass(frozen=True)
class Conversation:
    id: str
    lines: tuple[str, ...]


@lru_cache(maxsize=1)
def chatterbot_conversations() -> tuple[Conversation, ...]:
    """English chatterbot-corpus conversations whose lines are all speakable."""
    from importlib import resources

    import yaml

    try:
        root = resources.files("chatterbot_corpus").joinpath("data", "english")
    except ModuleNotFoundError as exc:
        raise FileNotFoundError("chatterbot-corpus is not installed; run ./install.sh (pip install chatterbot-corpus)") from exc
    out: list[Conversation] = []
    for res in sorted(root.iterdir(), key=lambda r: r.name):
        if not res.name.endswith(".yml"):
            continue
        data = yaml.safe_load(res.read_text(encoding="utf-8")) or {}
        for i, conv in enumerate(data.get("conversations") or []):
            lines = [clean_line(x) for x in conv]
            if len(lines) < 2 or any(x is None for x in lines):
                continue
            out.append(Conversation(id=f"chatterbot:{res.name[:-4]}/{i}", lines=tuple(lines)))  # type: ignore[arg-type]
    return tuple(out)


@lru_cache(maxsize=1)
def chatterbot_questions() -> tuple[tuple[str, str], ...]:
    """(source id, question) for unique corpus lines that are questions, in corpus order."""
    seen: set[str] = set()
    out = []
    for conv in chatterbot_conversations():
        for j, line in enumerate(conv.lines):
            key = line.lower().rstrip("?!. ")
            if line.endswith("?") and len(line.split()) >= 3 and key not in seen:
                seen.add(key)
                out.append((f"{conv.id}#{j}", line))
    return tuple(out)


@lru_cache(maxsize=1)
def pause_sentences() -> tuple[tuple[str, str, int], ...]:
    """(id, sentence, cut) where a pause after word ``cut`` (1-based count) leaves it incomplete."""
    out = []
    for ti, (head, tail) in enumerate(_PAUSE_TEMPLATES):
        slots_in = re.findall(r"{(\w+)}", head + " " + tail)
        combos: list[dict[str, str]] = [{}]
        for slot in dict.fromkeys(slots_in):
            combos = [dict(c, **{slot: v}) for c in combos for v in _SLOTS[slot]][:60]
        for ci, combo in enumerate(combos):
            h, t = head.format(**combo), tail.format(**combo)
            end = "?" if h.split()[0] in ("Can", "Do", "What", "Could", "Is", "How") else "."
            out.append((f"pause:{ti}/{ci}", f"{h} {t}{end}", len(h.split())))
    return tuple(out)


_INCOMPLETE_AFTER = {
    "the", "a", "an", "to", "about", "of", "for", "with", "my", "your", "his", "her", "our", "their",
    "and", "but", "or", "is", "was", "are", "were", "i", "i'm", "think", "want", "because", "if",
    "that", "in", "on", "at", "some", "this", "like", "how", "what", "when", "where", "would", "could",
    "should", "can", "will", "be", "been", "have", "has", "do", "does", "did", "very", "really", "more",
}


def incomplete_cut_points(text: str) -> list[int]:
    """Word counts after which a pause leaves the sentence unfinished (>= 2 words on each side).

    A cut right after a function word ("about", "the", "to", "my", ...) cannot end an English
    sentence, so a listener (and the state head) can hear that the speaker has not finished.
    """
    words = text.split()
    cuts = []
    for k in range(2, len(words) - 1):
        w = re.sub(r"[^\w']", "", words[k - 1]).lower()
        if w in _INCOMPLETE_AFTER and not re.search(r"[,.;:?!]$", words[k - 1]):
            cuts.append(k)
    return cuts


QUESTION_TEMPLATES = (
    "What is the capital of {country}?", "How do I {task}?", "Can you tell me something about {place}?",
    "What should I cook for dinner {time}?", "Why is the sky blue?", "How far away is the moon?",
    "What is a good way to {activity}?", "Is it healthy to {activity} every day?",
)
_COUNTRIES = ("France", "Germany", "Japan", "Italy", "Spain", "Canada", "Brazil", "Egypt", "Kenya", "India",
              "Mexico", "Norway", "Peru", "Greece", "Australia")


@lru_cache(maxsize=1)
def template_questions() -> tuple[tuple[str, str], ...]:
    out = []
    for ti, tpl in enumerate(QUESTION_TEMPLATES):
        slots_in = list(dict.fromkeys(re.findall(r"{(\w+)}", tpl)))
        combos: list[dict[str, str]] = [{}]
        for slot in slots_in:
            values = _COUNTRIES if slot == "country" else _SLOTS[slot]
            combos = [dict(c, **{slot: v}) for c in combos for v in values][:40]
        for ci, combo in enumerate(combos):
            out.append((f"template-q:{ti}/{ci}", tpl.format(**combo)))
    return tuple(out)


def all_questions() -> tuple[tuple[str, str], ...]:
    """Corpus questions first, then template questions; the synth plan takes a seeded sample."""
    return chatterbot_questions() + template_questions()


_MARKUP = re.compile(r"[*_#`>\[\]{}|~]")


def spoken_answer(text: str) -> tuple[str, bool]:
    """(text fit to speak, truncated?) from an LLM reply: no markup or list numbers, whole sentences.

    The LLM's answers are capped in tokens, so the last sentence is often cut; the spoken form
    keeps whole sentences only (the raw reply stays the QA target).
    """
    t = _MARKUP.sub(" ", text)
    t = re.sub(r"(^|\n)\s*(\d+[.)]|[-\u2022])\s+", r"\1", t)
    t = re.sub(r"[^\x20-\x7e\n]", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    if not t:
        return "", False
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", t)]
    if ends and ends[-1] == len(t):
        return t, False
    if ends and ends[-1] >= 12:
        return t[: ends[-1]], True
    return (t.rstrip(",;: ") + "."), True
