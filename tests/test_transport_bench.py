"""The transport benchmarks: a short real run of ``bench transport`` (default suite) and the
full 10-session, 60 s soak (slow)."""

import json

import pytest

from duplex.cli import main


def test_bench_transport_json_short_run(capsys):
    assert main(["bench", "transport", "--json", "--repeats", "1", "--param", "duration_s=3", "--param", "sessions=2"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("one_way_ms_p50", "one_way_ms_p90", "cpu_pct_per_session"):
        assert isinstance(result[key], float), key
    default, tuned = result["latency"]["aiortc_default"], result["latency"]["tuned"]
    # aiortc's audio jitter buffer holds 4 packets (80 ms); ours releases in-order packets at once.
    assert default["inbound_ms"]["p50"] > 70 and default["outbound_ms"]["p50"] > 70
    assert tuned["inbound_ms"]["p50"] < 20 and tuned["inbound_ms"]["p50"] < default["inbound_ms"]["p50"] - 50
    assert result["one_way_ms_p50"] == tuned["inbound_ms"]["p50"] <= result["one_way_ms_p90"]
    assert tuned["inbound_ms"]["n"] > 100 and result["cpu"]["server_errors"] == 0
    assert 0 < result["cpu_pct_per_session"] < 100


def test_bench_rejects_unknown_parameters(capsys):
    assert main(["bench", "transport", "--param", "sesions=2"]) == 2
    assert "has no parameter sesions" in capsys.readouterr().err


@pytest.mark.slow
def test_soak_ten_sessions_for_a_minute(capsys):
    assert main(["bench", "soak", "--json", "--param", "sessions=10", "--param", "duration_s=60"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["error_count"] == 0 and result["connected"] == 10
    assert result["max_frame_gap_ms_client"] <= 100 and result["max_frame_gap_ms_server"] <= 100
    assert result["rss_growth_mb"] < 50 and result["sessions_after_hangup"] == 0
    assert result["pass"]
