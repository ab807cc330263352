import pytest

from agent.text_metrics import cer, normalize, number_to_words, token_f1, wer


def test_normalize_numbers_and_punctuation():
    assert normalize("It's 5 o'clock, Mr. Bean!") == "it is five oclock mr bean"
    assert normalize("1,200 apples cost 3.50") == "one thousand two hundred apples cost three point five zero"
    assert number_to_words(2024) == "two thousand twenty four"


def test_wer_counts_edits_over_reference_words():
    assert wer("the cat sat on the mat", "the cat sat on the mat") == 0.0
    assert wer("the cat sat on the mat", "the cat sat on mat") == pytest.approx(1 / 6)
    assert wer(["a b", "c d e"], ["a x", "c d e f"]) == pytest.approx(2 / 5)


def test_cer_and_token_f1():
    assert cer("abc", "abd") == pytest.approx(1 / 3)
    assert token_f1("paris is the capital", "the capital is paris") == 1.0
    assert token_f1("paris", "london") == 0.0
