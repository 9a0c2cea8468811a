import asyncio
import json
import time

import pytest

from helpers import ray_processes, serving
from helpers.serving import RequestError, ServingConfig


def parse(body, default=16, limit=64):
    return serving.parse_request(body, default_max_new_tokens=default, max_new_tokens_limit=limit)


# --- request validation ----------------------------------------------------------------------

def test_good_request_from_bytes_str_and_dict():
    for body in (b'{"prompt": "Hi there", "max_new_tokens": 8}', '{"prompt": "Hi there", "max_new_tokens": 8}',
                 {"prompt": "Hi there", "max_new_tokens": 8}):
        assert parse(body) == serving.GenerationRequest("Hi there", 8)


def test_max_new_tokens_defaults_and_bounds_are_inclusive():
    assert parse({"prompt": "x"}).max_new_tokens == 16
    assert parse({"prompt": "x", "max_new_tokens": 1}).max_new_tokens == 1
    assert parse({"prompt": "x", "max_new_tokens": 64}).max_new_tokens == 64


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b"\xff\xfe", 400, "UTF-8"),
    (b'["a list"]', 400, "JSON object"),
    (b'{"max_new_tokens": 8}', 422, "Missing field 'prompt'"),
    (b'{"prompt": 42}', 422, "'prompt' must be a string, got a number"),
    (b'{"prompt": null}', 422, "got null"),
    (b'{"prompt": "   "}', 422, "'prompt' is empty"),
    (b'{"prompt": "x", "max_new_tokens": 65}', 422, "between 1 and 64, got 65"),
    (b'{"prompt": "x", "max_new_tokens": 0}', 422, "between 1 and 64, got 0"),
    (b'{"prompt": "x", "max_new_tokens": "16"}', 422, "must be an integer from 1 to 64, got a string"),
    (b'{"prompt": "x", "max_new_tokens": 2.5}', 422, "got a number"),
    (b'{"prompt": "x", "max_new_tokens": true}', 422, "got a boolean"),
    (b'{"prompt": "x", "max_tokens": 8}', 422, "Unknown field(s): 'max_tokens'"),
])
def test_bad_requests_get_a_4xx_with_a_clear_message(body, status, words):
    with pytest.raises(RequestError) as caught:
        parse(body)
    assert caught.value.status == status
    assert words in caught.value.message


def test_oversize_prompt_is_refused():
    with pytest.raises(RequestError, match="limit is 4000"):
        parse({"prompt": "x" * 4001})


# --- request handling without Ray --------------------------------------------------------------

class DictCache:
    """Exact-match stand-in with SemanticCache's get/put signature."""

    def __init__(self):
        self.store = {}

    def get(self, prompt, namespace="default"):
        return self.store.get((namespace, prompt))

    def put(self, prompt, response, namespace="default"):
        self.store[(namespace, prompt)] = response


def test_handle_request_answers_with_replica_and_timing():
    config = ServingConfig(backend="echo", default_max_new_tokens=4, max_new_tokens_limit=8)
    ticks = iter([10.0, 10.25])
    status, payload = serving.handle_request(b'{"prompt": "one two three four five six"}', serving.EchoGenerator(),
                                             config, replica="r1", pid=7, clock=lambda: next(ticks))
    assert status == 200
    assert payload == {"text": "one two three four", "new_tokens": 4, "seconds": 0.25, "replica": "r1", "pid": 7,
                       "cached": False, "batch_size": 1}


def test_handle_request_turns_bad_input_into_status_and_error_body():
    config = ServingConfig(backend="echo", default_max_new_tokens=4, max_new_tokens_limit=8)
    status, payload = serving.handle_request(b'{"prompt": "x", "max_new_tokens": 9}', serving.EchoGenerator(),
                                             config, replica="r1")
    assert status == 422 and payload["status"] == 422 and "between 1 and 8" in payload["error"]


def test_handle_request_reports_generator_errors_as_500():
    def broken(prompt, max_new_tokens):
        raise RuntimeError("out of memory")

    status, payload = serving.handle_request({"prompt": "x"}, broken, ServingConfig(backend="echo"), replica="r")
    assert status == 500 and "RuntimeError: out of memory" in payload["error"]


def test_cache_hit_skips_generation_and_is_keyed_by_length():
    calls = []

    def counting(prompt, max_new_tokens):
        calls.append(prompt)
        return f"answer to {prompt}", 3

    cache, config = DictCache(), ServingConfig(backend="echo")
    first = serving.handle_request({"prompt": "q", "max_new_tokens": 4}, counting, config, "r", cache=cache)[1]
    second = serving.handle_request({"prompt": "q", "max_new_tokens": 4}, counting, config, "r", cache=cache)[1]
    other_length = serving.handle_request({"prompt": "q", "max_new_tokens": 5}, counting, config, "r", cache=cache)[1]
    assert calls == ["q", "q"]
    assert (first["cached"], second["cached"], other_length["cached"]) == (False, True, False)
    assert second["text"] == first["text"] and second["new_tokens"] == 0


def test_cache_is_off_by_default():
    assert ServingConfig().semantic_cache is False
    assert serving.make_cache(ServingConfig()) is None


def test_make_cache_builds_the_workbook_semantic_cache():
    from helpers import caching
    default = serving.make_cache(ServingConfig(semantic_cache=True, cache_max_entries=10))
    assert isinstance(default, caching.SemanticCache) and default.max_entries == 10
    assert default.threshold == caching.DEFAULT_THRESHOLD
    assert serving.make_cache(ServingConfig(semantic_cache=True, cache_threshold=0.8)).threshold == 0.8


def test_handle_request_with_a_real_semantic_cache():
    import numpy as np

    from helpers import caching

    class LetterCounts:  # a tiny deterministic embedder: texts with the same letters are "similar"
        def encode(self, texts, **_options):
            return np.array([[text.lower().count(letter) + 1e-3 for letter in "abcdefghijklmnopqrstuvwxyz"]
                             for text in texts], dtype=np.float32)

    calls = []

    def counting(prompt, max_new_tokens):
        calls.append(prompt)
        return "Open Settings, then Security.", 5

    cache = caching.SemanticCache(embedder=LetterCounts(), threshold=0.99, verifier=None)  # embedding match only
    config = ServingConfig(backend="echo", semantic_cache=True)
    first = serving.handle_request({"prompt": "How do I reset my password?"}, counting, config, "r", cache=cache)[1]
    again = serving.handle_request({"prompt": "how do I reset my password"}, counting, config, "r", cache=cache)[1]
    other = serving.handle_request({"prompt": "Cancel plan"}, counting, config, "r", cache=cache)[1]
    assert (first["cached"], again["cached"], other["cached"]) == (False, True, False)
    assert len(calls) == 2 and again["text"] == first["text"]


# --- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"num_replicas": 0}, "num_replicas must be a positive integer"),
    ({"threads_per_replica": 1.5}, "threads_per_replica"),
    ({"max_queued_requests": -2}, "max_queued_requests"),
    ({"default_max_new_tokens": 200}, "above max_new_tokens_limit"),
    ({"backend": "gpt"}, "backend must be one of"),
    ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "min_replicas <= max_replicas"),
])
def test_bad_configs_say_what_to_fix(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ServingConfig(**kwargs)


def test_deployment_options_fixed_and_autoscaling():
    fixed = serving.deployment_options(ServingConfig(num_replicas=2, threads_per_replica=1, max_queued_requests=4))
    assert fixed == {"num_replicas": 2, "max_ongoing_requests": 2, "max_queued_requests": 4,
                     "ray_actor_options": {"num_cpus": 1}}
    scaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1}
    auto = serving.deployment_options(ServingConfig(threads_per_replica=2, autoscaling=scaling))
    assert "num_replicas" not in auto and auto["autoscaling_config"] == scaling
    assert auto["ray_actor_options"] == {"num_cpus": 2}


def test_from_args_converts_command_line_strings():
    config = ServingConfig.from_args({"num_replicas": "2", "exact_length": "true", "echo_delay_s": "0.5",
                                      "backend": "echo", "autoscaling": '{"min_replicas": 1, "max_replicas": 3}',
                                      "llm_name": "none", "cache_threshold": "0.8"})
    assert (config.num_replicas, config.exact_length, config.echo_delay_s) == (2, True, 0.5)
    assert config.autoscaling == {"min_replicas": 1, "max_replicas": 3} and config.llm_name is None
    assert config.cache_threshold == 0.8
    assert ServingConfig.from_args({"cache_threshold": "none"}).cache_threshold is None
    assert 1 <= config.default_max_new_tokens <= config.max_new_tokens_limit
    with pytest.raises(ValueError, match="Unknown serving argument"):
        ServingConfig.from_args({"replicas": 2})
    with pytest.raises(ValueError, match="num_replicas must be an integer"):
        ServingConfig.from_args({"num_replicas": "two"})


def test_echo_generator_respects_max_new_tokens():
    assert serving.EchoGenerator()("a b c d", 2) == ("a b", 2)


def test_llm_generator_with_a_tiny_model(monkeypatch, tiny_llama, llm_tokenizer):
    from helpers import models

    monkeypatch.setattr(models, "load_llm", lambda name=None: (tiny_llama, llm_tokenizer))
    generate = serving.LLMGenerator(threads=1, exact_length=True)
    text, new_tokens = generate("Where is my invoice?", 5)
    assert new_tokens == 5 and isinstance(text, str)


def test_free_port_is_free():
    assert serving.port_is_free(serving.free_port())


# --- a real Serve app on 127.0.0.1 (fake model) -------------------------------------------------

def test_real_serve_app_answers_refuses_and_shuts_down():
    pytest.importorskip("ray.serve")
    import httpx

    start = time.perf_counter()
    url = serving.start_serve(num_cpus=2)  # two applications side by side, one CPU each
    port = int(url.rsplit(":", 1)[1])
    try:
        assert url.startswith("http://127.0.0.1:")
        serving.deploy(ServingConfig(backend="echo", num_replicas=1, default_max_new_tokens=3,
                                     max_new_tokens_limit=8))
        good = httpx.post(url + "/", json={"prompt": "alpha beta gamma delta"}, timeout=30)
        assert good.status_code == 200
        assert good.json()["text"] == "alpha beta gamma" and good.json()["replica"]
        missing = httpx.post(url + "/", json={"max_new_tokens": 2}, timeout=30)
        assert missing.status_code == 422 and "Missing field 'prompt'" in missing.json()["error"]
        too_long = httpx.post(url + "/", json={"prompt": "x", "max_new_tokens": 9}, timeout=30)
        assert too_long.status_code == 422 and "between 1 and 8" in too_long.json()["error"]
        broken = httpx.post(url + "/", content=b"{oops", timeout=30)
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
        assert httpx.get(url + serving.HEALTH_PATH, timeout=30).status_code == 200
        assert httpx.get(url + "/", timeout=30).status_code == 405
        assert serving.running_replicas() == 1
        names = " ".join(" ".join(proc.cmdline()) for proc in ray_processes.ray_processes())
        assert "raylet" in names and "gcs_server" in names  # so "none left" below means something
        # Replacing the app must not wait forever for the CPU the old replica holds.
        serving.deploy(ServingConfig(backend="echo", num_replicas=1, default_max_new_tokens=1))
        again = httpx.post(url + "/", json={"prompt": "alpha beta"}, timeout=30)
        assert again.status_code == 200 and again.json()["text"] == "alpha"
        # A second application beside it, under its own route prefix, batching with @serve.batch.
        serving.deploy(ServingConfig(backend="echo", echo_delay_s=0.2, max_batch_size=4, max_ongoing_requests=4,
                                     batch_wait_timeout_s=1.0, default_max_new_tokens=3), name="batched",
                       route_prefix="/batched")

        async def four_at_once():
            async with httpx.AsyncClient() as client:
                return await asyncio.gather(*(client.post(url + "/batched/", json={"prompt": f"w{i} a b c"},
                                                          timeout=30) for i in range(4)))

        replies = asyncio.run(four_at_once())
        assert [reply.status_code for reply in replies] == [200] * 4
        assert sorted(reply.json()["text"] for reply in replies) == [f"w{i} a b" for i in range(4)]
        assert [reply.json()["batch_size"] for reply in replies] == [4] * 4
        assert httpx.post(url + "/", json={"prompt": "alpha beta"}, timeout=30).json()["batch_size"] == 1
        # The OpenAI chat API, streamed through Serve's proxy, with the official client.
        openai = pytest.importorskip("openai")
        client = openai.OpenAI(base_url=url + "/batched/v1", api_key="unused", max_retries=0, timeout=30)
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "p q r s"}],
                                                max_tokens=3, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "p q r"
        serving.undeploy("batched", "not-deployed")
        assert "batched" not in serve_status_applications()
    finally:
        serving.stop_serve()
    assert ray_processes.ray_processes() == []
    assert serving.port_is_free(port)
    assert time.perf_counter() - start < 120  # ~30 s on an idle 2-core machine
    serving.stop_serve()  # a second call is harmless
    with pytest.raises(RuntimeError, match="start_serve"):
        serving.deploy(ServingConfig(backend="echo"))


def serve_status_applications():
    from ray import serve

    return serve.status().applications


def test_json_bodies_round_trip():
    assert json.loads(json.dumps(serving.error_response(422, "x"))) == {"error": "x", "status": 422}


# --- batching, the OpenAI-compatible chat API, a real server on 127.0.0.1 without Ray ----------------

def test_batch_size_must_fit_in_the_replica():
    with pytest.raises(ValueError, match="raise max_ongoing_requests"):
        ServingConfig(max_batch_size=4, max_ongoing_requests=2)
    assert ServingConfig(max_batch_size=4, max_ongoing_requests=4).max_batch_size == 4


def test_answer_length_stops_at_the_first_end_of_sequence():
    class Tok:
        eos_token_id = 2

    assert serving._answer_length([5, 6, 2, 2, 2], Tok()) == 3
    assert serving._answer_length([5, 6, 7], Tok()) == 3


def test_echo_generator_batches_and_streams():
    echo = serving.EchoGenerator()
    assert echo.generate_batch(["a b c", "d"], 2) == [("a b", 2), ("d", 1)] and echo.batches == [2]
    pieces = []
    text, new_tokens, prompt_tokens = echo.chat([{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": "x y z"}], 2, pieces.append)
    assert (text, new_tokens, prompt_tokens) == ("x y", 2, 5) and "".join(pieces) == "x y"


def test_llm_generator_batch_and_stream_with_a_tiny_model(monkeypatch, tiny_llama, llm_tokenizer):
    from helpers import models

    monkeypatch.setattr(models, "load_llm", lambda name=None: (tiny_llama, llm_tokenizer))
    generate = serving.LLMGenerator(threads=1, exact_length=True)
    answers = generate.generate_batch(["Where is my invoice?", "Hi"], 4)
    assert [new_tokens for _, new_tokens in answers] == [4, 4]
    pieces = []
    text, new_tokens, prompt_tokens = generate.chat([{"role": "user", "content": "Where is my invoice?"}], 5,
                                                    pieces.append)
    assert new_tokens == 5 and prompt_tokens > 3 and "".join(pieces) == text


@pytest.mark.parametrize("body, status, words", [
    (b"{oops", 400, "not valid JSON"),
    ({"messages": []}, 422, "non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 422, "messages[0]"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, 422, "last message"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 65}, 422, "from 1 to 64"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 0.7}, 422, "'temperature'"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 422, "'stream' must be true or false"),
])
def test_bad_chat_requests(body, status, words):
    with pytest.raises(RequestError) as caught:
        serving.parse_chat_request(body, default_max_new_tokens=8, max_new_tokens_limit=64)
    assert caught.value.status == status and words in caught.value.message


def test_good_chat_request_and_response_shapes():
    chat = serving.parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                       "max_completion_tokens": 3, "stream": True,
                                       "stream_options": {"include_usage": True}}, 8)
    assert (chat.max_tokens, chat.stream, chat.include_usage, chat.model) == (3, True, True, "m")
    assert serving.parse_chat_request({"messages": [{"role": "user", "content": "hi"}]}, 8).max_tokens == 8
    done = serving.chat_completion("id", 1, "m", "hello", 4, 3, max_tokens=3)
    assert done["choices"][0]["finish_reason"] == "length" and done["usage"]["total_tokens"] == 7
    assert serving.finish_reason(2, 3) == "stop"
    assert serving.sse("[DONE]") == "data: [DONE]\n\n"
    assert json.loads(serving.sse({"a": 1})[len("data: "):]) == {"a": 1}


@pytest.fixture
def echo_server():
    """The replica as a plain ASGI app under uvicorn on 127.0.0.1 (no Ray); yields (base url, app)."""
    import threading

    uvicorn = pytest.importorskip("uvicorn")
    app = serving.asgi_app(ServingConfig(backend="echo", echo_delay_s=0.05, default_max_new_tokens=4,
                                         max_new_tokens_limit=16).to_settings())
    port = serving.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_openai_client_talks_to_the_chat_endpoint(echo_server):
    openai = pytest.importorskip("openai")
    url, _ = echo_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "one two three four five six"}]
    answer = client.chat.completions.create(model="workbook-llm", messages=messages, max_tokens=3)
    assert answer.choices[0].message.content == "one two three" and answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3 and answer.model == "workbook-llm"
    stream = client.chat.completions.create(model="workbook-llm", messages=messages, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert pieces == ["one", " two", " three", " four", " five"]
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].choices == []
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        client.chat.completions.create(model="workbook-llm", messages=messages, max_tokens=99)


def test_stream_chats_measures_first_token_and_per_token_latency(echo_server):
    pytest.importorskip("openai")
    from helpers import loadtest

    url, _ = echo_server
    report = loadtest.stream_chats(url + "/v1", ["a b c d", "e f g h", "i j k l"], concurrency=2, max_tokens=4,
                                   time_limit_s=30, progress=False)
    assert len(report.ok) == 3 and report.failed == 0 and report.unsent == 0
    assert all(outcome.tokens == 4 and len(outcome.chunk_times_s) == 4 for outcome in report.ok)
    assert min(report.first_token_ms) >= 50  # the echo model's 0.05 s "prefill" comes before the first token
    assert len(report.per_token_ms) == 3
    broken = loadtest.stream_chats(url + "/v1", ["a"], concurrency=1, max_tokens=99, time_limit_s=30, progress=False)
    assert broken.failed == 1 and "UnprocessableEntity" in broken.outcomes[0].detail


# --- exercise checks of notebook 11 ---------------------------------------------------------------

def test_exercise_checks(capsys):
    from helpers.exercises import check_11_1, check_11_2, check_11_3

    assert check_11_1(2 / 0.8, replicas=2, seconds_per_request=0.8) is True
    assert check_11_1(1 / 0.8, replicas=2, seconds_per_request=0.8) is False
    assert check_11_1(None, replicas=2, seconds_per_request=0.8) is False
    assert check_11_2(5, replicas=2, max_ongoing_requests=1, max_queued_requests=3) is True
    assert check_11_2(3, replicas=2, max_ongoing_requests=1, max_queued_requests=3) is False
    assert check_11_2(5.0, replicas=2, max_ongoing_requests=1, max_queued_requests=3) is False
    assert check_11_3(3, current_pods=2, current_cpu_percent=95, target_cpu_percent=70) is True
    assert check_11_3(2, current_pods=2, current_cpu_percent=95, target_cpu_percent=70) is False
    assert "Not yet" in capsys.readouterr().out
