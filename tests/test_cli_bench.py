import json

from duplex.cli import main


def test_help_lists_commands(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("assets", "say", "ask", "transcribe", "bench"):
        assert cmd in out


def test_bench_llm_json_on_tiny_preset(capsys):
    assert main(["bench", "llm", "--json", "--preset", "tiny", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("prefill_tok_s", "decode_tok_s", "peak_rss_mb"):
        assert result[key] > 0
    assert result["bf16"]["decode_tok_s"] > 0 and result["bf16_int8"]["decode_tok_s"] > 0
    assert result["fp32_fp16"]["decode_tok_s"] > 0


def test_bench_voice_json(capsys):
    assert main(["bench", "voice", "--json", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 < result["rtf"] < 1.0 and result["first_audio_ms"] > 0


def test_config_show(capsys):
    assert main(["config", "show", "--preset", "tiny", "--set", "llm.max_new_tokens=5"]) == 0
    assert "max_new_tokens: 5" in capsys.readouterr().out


def test_bench_llm_weights_json_on_tiny_preset(capsys):
    assert main(["bench", "llm-weights", "--json", "--preset", "tiny", "--param", "questions=3",
                 "--param", "max_new_tokens=4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["questions"] == 3 and result["runtime_variant"] == {"dtype": "float32", "weights": "fp16"}
    assert set(result["answer_ppl"]) == {"fp32", "bf16", "bf16_int8", "runtime"}
    assert all(v > 1.0 for v in result["answer_ppl"].values())
    for pair in ("bf16_vs_fp32", "runtime_vs_bf16", "runtime_vs_fp32", "bf16_int8_vs_fp32"):
        d = result["drift"][pair]
        assert 0 <= d["identical"] <= d["token_f1_ge_0.6"] <= 3 and 0.0 <= d["mean_token_f1"] <= 1.0
