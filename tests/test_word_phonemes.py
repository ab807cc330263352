"""Reply words -> phoneme ids for the unit generator (espeak-ng IPA, one word at a time)."""

from __future__ import annotations

from agent.word_phonemes import WordPhonemizer, _symbols, fit_inventory, word_key


def test_words_are_phonemized_alone_without_their_punctuation():
    ph = WordPhonemizer()
    assert word_key(' "Hello," ') == "Hello"
    hello = ph.symbols("hello")
    assert hello == ph.symbols(" Hello,") and "ˈ" in hello and "h" in hello
    assert ph.symbols("--") == [] and ph.symbols("") == []
    assert ph.symbols("cat") != ph.symbols("cut")


def test_one_call_for_many_words_gives_what_one_call_per_word_gives():
    words = ["weather", "tomorrow", "Paris", "twenty", "I'm", "three", "unbelievable"]
    batched = WordPhonemizer()
    batched.prime(words)
    single = WordPhonemizer()
    assert [batched.symbols(w) for w in words] == [single.symbols(w) for w in words]


def test_ids_follow_the_inventory_and_skip_unknown_symbols():
    ph = WordPhonemizer()
    inventory = fit_inventory(ph, ["sunny", "warm"])
    assert list(inventory) == sorted(set(inventory))
    index = {s: i for i, s in enumerate(inventory)}
    ids = ph.ids("sunny", index)
    assert [inventory[i] for i in ids] == ph.symbols("sunny")
    # "θ" (of "three") is not in this inventory: it is skipped, the rest is kept in order.
    three = ph.symbols("three")
    assert "θ" in three and "θ" not in index
    assert [inventory[i] for i in ph.ids("three", index)] == [s for s in three if s in index]


def test_the_long_running_process_answers_like_one_call_per_word_and_survives_close():
    words = ["'", "Mr", "3.5", "100,000", "e.g.", "naïve", "Mm-hm", "can't", "photosynthesis"]
    running = WordPhonemizer()
    answers = [running.symbols(w) for w in words]
    one_call = WordPhonemizer()
    expected = [_symbols(" ".join(one_call.engine._run([word_key(w)]))) for w in words[1:]]
    assert answers == [[], *expected]
    process = running._lines.proc
    running.close()
    assert process.poll() is not None  # stopped, not leaked
    assert running.symbols("weather") == one_call.symbols("weather")  # a fresh process on demand
    running.close()
