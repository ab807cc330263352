import pytest

from configs import ConfigError, list_presets, load_config, parse_set_args


def test_presets_exist_and_differ():
    assert {"tiny", "default", "large"} <= set(list_presets())
    tiny, default, large = (load_config(p) for p in ("tiny", "default", "large"))
    assert (tiny.preset, default.preset, large.preset) == ("tiny", "default", "large")
    assert tiny.llm.card == "tiny-random-llama"
    assert default.llm.card == "smollm2-135m-instruct"
    assert large.llm.dtype == "bfloat16"


def test_cli_overrides_are_typed():
    cfg = load_config("default", ["llm.dtype=bfloat16", "llm.max_new_tokens=12", "voice.length_scale=1.1", "seed=7"])
    assert cfg.llm.dtype == "bfloat16"
    assert cfg.llm.max_new_tokens == 12 and isinstance(cfg.llm.max_new_tokens, int)
    assert cfg.voice.length_scale == pytest.approx(1.1)
    assert cfg.seed == 7


@pytest.mark.parametrize(
    "override, message",
    [
        (["llm.nope=1"], "unknown config key 'llm.nope'"),
        (["llm.max_new_tokens=many"], "llm.max_new_tokens: expected an integer"),
        (["voice=3"], "voice: expected a mapping"),
        (["novalue"], "must look like key.sub=value"),
        (["sim.network.loss=1.5"], "sim.network: loss must be in"),
        (["sim.network.jitter_dist=gauss"], "sim.network: jitter_dist must be one of"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config("default", override)


def test_yaml_file_with_base(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: tiny\nllm:\n  max_new_tokens: 3\n")
    cfg = load_config(str(f))
    assert cfg.preset == "mine"
    assert cfg.llm.card == "tiny-random-llama"  # from the base
    assert cfg.llm.max_new_tokens == 3


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("huge")


def test_parse_set_args_nests():
    assert parse_set_args(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
