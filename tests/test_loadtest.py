import asyncio
import time

import httpx
import numpy as np
import pytest

from helpers import loadtest
from helpers.loadtest import Outcome


@pytest.mark.parametrize("q", [0, 10, 50, 95, 99, 100])
def test_percentile_matches_numpy(q):
    values = [12.0, 3.0, 7.5, 100.0, 42.0, 8.0, 9.0]
    assert loadtest.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_rejects_empty_and_bad_q():
    with pytest.raises(ValueError, match="at least one"):
        loadtest.percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        loadtest.percentile([1.0], 101)


SERVE_BACKPRESSURE = "Request dropped due to backpressure (num_queued_requests=4, max_queued_requests=4)."
SERVE_UNAVAILABLE = "Deployment(name='LLMServer', app='workbook') is unavailable because it failed to deploy."


def test_classify_status_codes():
    assert loadtest.classify(200) == "answered"
    assert loadtest.classify(503, SERVE_BACKPRESSURE) == "shed"
    assert loadtest.classify(429, SERVE_BACKPRESSURE) == "shed"
    assert loadtest.classify(503, '{"error": "too busy", "shed": true}') == "shed"
    # A 503 that is not backpressure is an outage: it must count as failed, never as shed.
    assert loadtest.classify(503, SERVE_UNAVAILABLE) == "failed"
    assert loadtest.classify(503) == "failed"
    for status in (400, 422, 500, 408, None):
        assert loadtest.classify(status, SERVE_BACKPRESSURE) == "failed"


def test_a_deployment_that_goes_down_mid_run_counts_as_failed():
    """Serve answers 503 when a deployment is unavailable; those requests are failures, not shed load."""
    calls = {"n": 0}

    async def handler(request):
        calls["n"] += 1
        if calls["n"] <= 3:
            return httpx.Response(200, json={"text": "ok", "replica": "r1", "seconds": 0.001})
        if calls["n"] <= 5:
            return httpx.Response(503, text=SERVE_BACKPRESSURE)
        return httpx.Response(503, text=SERVE_UNAVAILABLE)  # the deployment died

    payloads = [{"prompt": "p"}] * 10
    report = loadtest.run_load("http://test/", payloads, concurrency=1, time_limit_s=10, progress=False,
                               transport=_mock(handler))
    assert (report.answered, report.shed, report.failed) == (3, 2, 5)
    assert any("unavailable" in example for example in report.failure_examples)


def test_summarize_counts_throughput_and_percentiles():
    outcomes = ([Outcome("answered", latency, 200, replica=replica, server_s=latency / 2, batch_size=size)
                 for latency, replica, size in [(0.1, "a", 1), (0.2, "b", 4), (0.3, "a", 4), (0.4, "b", 4),
                                                (1.0, "a", 2)]]
                + [Outcome("shed", 0.005, 503, "HTTP 503: busy")] * 3
                + [Outcome("failed", 2.0, None, "timeout after 2.0 s"), Outcome("failed", 0.1, 500, "HTTP 500: boom")])
    report = loadtest.summarize(outcomes, duration_s=2.5, unsent=1)
    assert (report.requests, report.answered, report.shed, report.failed, report.unsent) == (11, 5, 3, 2, 1)
    assert report.throughput_rps == pytest.approx(5 / 2.5)
    assert report.p50_ms == pytest.approx(300.0)
    assert report.p95_ms == pytest.approx(np.percentile([100, 200, 300, 400, 1000], 95))
    assert report.p99_ms == pytest.approx(np.percentile([100, 200, 300, 400, 1000], 99))
    assert report.mean_ms == pytest.approx(400.0)
    assert report.server_p50_ms == pytest.approx(150.0)
    assert report.mean_batch_size == pytest.approx(3.0)  # answered requests only
    assert report.shed_p50_ms == pytest.approx(5.0)  # shed latencies are kept apart from answered ones
    assert report.replica_counts == {"a": 3, "b": 2}
    assert report.status_counts == {"200": 5, "500": 1, "503": 3, "no response": 1}
    assert report.failure_examples == ("timeout after 2.0 s", "HTTP 500: boom")
    assert "5 answered, 3 shed, 2 failed, 1 unsent" in str(report)
    assert report.row("x")["answered/s"] == 2.0


def test_summarize_without_answers_has_no_percentiles():
    report = loadtest.summarize([Outcome("shed", 0.01, 503)], duration_s=0.01)
    assert report.p50_ms is None and report.p99_ms is None and report.throughput_rps == 0.0
    assert "latency" not in str(report)


def test_summarize_rejects_unknown_kind():
    with pytest.raises(ValueError, match="Unknown outcome"):
        loadtest.summarize([Outcome("lost", 0.1)], 1.0)


def test_make_payloads_cycles_prompts():
    payloads = loadtest.make_payloads(["a", "b"], 5, max_new_tokens=8)
    assert [p["prompt"] for p in payloads] == ["a", "b", "a", "b", "a"]
    assert all(p["max_new_tokens"] == 8 for p in payloads)
    with pytest.raises(ValueError):
        loadtest.make_payloads([], 3)


def _mock(handler):
    return httpx.MockTransport(handler)


def test_run_load_counts_answered_shed_and_failed():
    calls = {"n": 0}

    async def handler(request):
        calls["n"] += 1
        prompt = request.read().decode()
        if "shed" in prompt:
            return httpx.Response(503, text=SERVE_BACKPRESSURE)
        if "bad" in prompt:
            return httpx.Response(422, json={"error": "Missing field 'prompt'"})
        if "drop" in prompt:
            raise httpx.ConnectError("connection refused")
        await asyncio.sleep(0.01)
        return httpx.Response(200, json={"text": "ok", "replica": "r1" if calls["n"] % 2 else "r2", "seconds": 0.01})

    payloads = [{"prompt": p} for p in ["ok", "shed", "ok", "bad", "drop", "ok"]]
    report = loadtest.run_load("http://test/", payloads, concurrency=2, time_limit_s=10, progress=False,
                               transport=_mock(handler))
    assert (report.answered, report.shed, report.failed, report.unsent) == (3, 1, 2, 0)
    assert sum(report.replica_counts.values()) == 3
    assert report.server_p50_ms == pytest.approx(10.0)
    assert any("422" in example for example in report.failure_examples)
    assert any("ConnectError" in example for example in report.failure_examples)


def test_concurrency_caps_requests_in_flight():
    state = {"now": 0, "max": 0}

    async def handler(request):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return httpx.Response(200, json={"replica": "r"})

    report = loadtest.run_load("http://test/", [{"prompt": "x"}] * 12, concurrency=3, time_limit_s=10,
                               progress=False, transport=_mock(handler))
    assert report.answered == 12 and state["max"] == 3


def test_rate_mode_spaces_arrivals():
    sent = []

    async def handler(request):
        sent.append(time.perf_counter())
        return httpx.Response(200, json={})

    report = loadtest.run_load("http://test/", [{"prompt": "x"}] * 5, rate_per_s=20, time_limit_s=10,
                               progress=False, transport=_mock(handler))
    assert report.answered == 5
    assert sent[-1] - sent[0] == pytest.approx(4 / 20, abs=0.08)


def test_time_limit_stops_the_test_by_itself():
    async def handler(request):
        await asyncio.sleep(30)  # a server that never answers in time
        return httpx.Response(200, json={})

    start = time.perf_counter()
    report = loadtest.run_load("http://test/", [{"prompt": "x"}] * 6, concurrency=2, time_limit_s=0.5,
                               progress=False, transport=_mock(handler))
    assert time.perf_counter() - start < 3
    assert report.failed == 2 and report.unsent == 4 and report.answered == 0
    assert all("timeout" in example for example in report.failure_examples)


def test_run_load_argument_errors():
    with pytest.raises(ValueError, match="exactly one"):
        loadtest.run_load("http://test/", [{"prompt": "x"}], progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        loadtest.run_load("http://test/", [{"prompt": "x"}], concurrency=1, rate_per_s=1.0, progress=False)
    with pytest.raises(ValueError, match="payload"):
        loadtest.run_load("http://test/", [], concurrency=1, progress=False)


def test_run_load_works_inside_a_running_event_loop():
    async def handler(request):
        return httpx.Response(200, json={})

    async def inside_loop():  # as in Jupyter, where a loop is already running
        return loadtest.run_load("http://test/", [{"prompt": "x"}] * 2, concurrency=1, time_limit_s=5,
                                 progress=False, transport=_mock(handler))

    assert asyncio.run(inside_loop()).answered == 2


def test_requests_in_flight_at_the_limit_may_finish_within_the_grace_period():
    async def handler(request):
        await asyncio.sleep(0.3)
        return httpx.Response(200, json={})

    report = loadtest.run_load("http://test/", [{"prompt": "x"}] * 3, concurrency=1, time_limit_s=0.2, grace_s=1.0,
                               progress=False, transport=_mock(handler))
    assert (report.answered, report.failed, report.unsent) == (1, 0, 2)
    assert report.duration_s == pytest.approx(0.3, abs=0.15)


def test_table_aligns_rows():
    text = loadtest.table([{"run": "a", "n": 1}, {"run": "longer", "n": None}])
    assert text.splitlines() == ["run     n", "a       1", "longer  -"]
    assert loadtest.table([]) == ""


def test_cpu_meter_adds_up_blocks_by_role():
    from helpers import loadtest

    snapshots = iter([
        {1: ("load client", 10.0), 2: ("replicas", 100.0)},
        {1: ("load client", 10.5), 2: ("replicas", 101.5), 3: ("replicas", 0.25)},  # pid 3 started inside
        {1: ("load client", 11.0), 2: ("replicas", 102.0)},
        {1: ("load client", 11.5), 2: ("replicas", 103.0)},
    ])
    meter = loadtest.CpuMeter(snapshot=lambda: next(snapshots))
    with meter:
        pass
    with meter:
        pass
    assert meter.seconds["load client"] == 1.0
    assert meter.seconds["replicas"] == 1.5 + 0.25 + 1.0
    meter.wall_s = 2.0  # the blocks above took no real time; fix the wall time to check the share
    assert meter.share("load client", cores=2) == 0.25 and meter.share("nobody", cores=2) == 0.0


def test_process_roles_and_a_real_snapshot():
    from helpers import ray_processes

    assert ray_processes.process_role("ray::ServeReplica:workbook-llm:LLMServer") == "replicas"
    assert ray_processes.process_role("ray::ProxyActor") == "Serve proxy"
    assert ray_processes.process_role("ray::ServeController") == "Serve controller"
    assert ray_processes.process_role("/x/ray/core/src/ray/raylet/raylet --flag") == "other Ray processes"
    import os

    mine = ray_processes.cpu_seconds_by_process()[os.getpid()]
    assert mine[0] == "load client" and mine[1] > 0


def test_stream_outcome_per_token_latency():
    from helpers.loadtest import StreamOutcome, StreamReport

    outcome = StreamOutcome(True, 1.0, first_token_s=0.4, tokens=4, chunk_times_s=(0.4, 0.5, 0.6, 0.7))
    assert abs(outcome.per_token_s - 0.1) < 1e-12
    assert StreamOutcome(True, 1.0, 0.4, 1, (0.4,)).per_token_s is None
    report = StreamReport((outcome, StreamOutcome(False, 2.0, detail="timeout")), duration_s=2.0)
    assert report.failed == 1 and report.first_token_ms == [400.0]
    assert report.quartiles([]) is None and report.quartiles([1.0, 2.0, 3.0])[1] == 2.0
