"""Serve the workbook's LLM over HTTP with Ray Serve: replicas, threads, backpressure, autoscaling.

The same application runs in notebook 11 (on 127.0.0.1, inside one local Ray
instance) and in a cluster (``deploy/``: ``serve run deploy/serve_config.yaml``
in a container, a Kubernetes Deployment, or a KubeRay RayService).

Layers, from the inside out:

- :func:`parse_request` and :func:`handle_request` are plain functions: they
  validate a JSON body, call a generator, and build the JSON answer. They are
  unit-tested without Ray.
- :class:`LLMServer` is the Serve replica: it loads a generator once (the
  workbook LLM, or a fast fake for tests), pins its torch thread count, and
  answers ``POST /`` with ``{"prompt": ..., "max_new_tokens": ...}`` (one request
  at a time, or several generated together through ``@serve.batch``) and the
  OpenAI-compatible ``POST /v1/chat/completions`` (JSON, or a stream of
  server-sent events with ``"stream": true``). :func:`asgi_app` serves the same
  replica without Ray (unit tests).
- :class:`ServingConfig` holds every knob (replicas, threads per replica,
  ``max_ongoing_requests``, ``max_queued_requests``, autoscaling, the optional
  semantic cache); :func:`build_app` turns it into a Serve application and
  :func:`app_builder` does the same from ``serve run``'s ``key=value`` arguments.
- :func:`start_serve`, :func:`deploy` and :func:`stop_serve` start and stop a
  local Ray + Serve that listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from .ray_processes import stop_own_ray_processes, wait_for_no_ray_processes

# Names shared with deploy/ (tests/test_deploy.py checks that the manifests agree).
APP_NAME = "workbook-llm"
DEPLOYMENT_NAME = "LLMServer"
ROUTE_PREFIX = "/"
HTTP_PORT = 8000  # the port inside a container / pod; the notebook picks a free local port
HEALTH_PATH = "/healthz"  # answered by a running replica (readiness), unlike Serve's own /-/healthz
IMAGE = "llm-optimization-workbook/serve:0.1.0"
IMPORT_PATH = "helpers.serving:app_builder"

MAX_NEW_TOKENS_LIMIT = 128  # hard ceiling per request: bounds the work one request can cause
MAX_PROMPT_CHARS = 4000
BACKENDS = ("llm", "echo")
ALLOWED_FIELDS = ("prompt", "max_new_tokens")
CHAT_PATH = "/v1/chat/completions"
CHAT_FIELDS = ("model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options")
CHAT_ROLES = ("system", "user", "assistant")


def default_max_new_tokens() -> int:
    """Tokens generated per request when the client does not say: short in the quick profile."""
    from . import config

    return config.profile().serve_max_new_tokens


def default_request_timeout_s() -> float:
    """End-to-end HTTP timeout of the Serve proxy for the active profile."""
    from . import config

    return config.profile().serve_request_timeout_s


# --- configuration -----------------------------------------------------------------------

@dataclass
class ServingConfig:
    """Every knob of the served application.

    ``num_replicas`` copies of the model each use ``threads_per_replica`` torch
    threads (and reserve as many Ray CPUs). A replica holds at most
    ``max_ongoing_requests`` requests: it generates one at a time, the others
    wait in the replica, so it never idles while the router hands over the next
    request. Up to ``max_queued_requests`` more wait in the proxy (-1: no limit)
    and the rest are shed with HTTP 503.
    ``autoscaling`` (a Serve ``autoscaling_config`` dict) replaces the fixed
    ``num_replicas``. ``backend="echo"`` swaps the LLM for a fast fake.
    ``max_batch_size > 1`` batches ``POST /`` requests inside the replica with
    ``@serve.batch``: up to that many waiting requests (collected for at most
    ``batch_wait_timeout_s``) are generated together in one padded batch; the
    replica must then admit that many (``max_ongoing_requests >= max_batch_size``).
    """

    num_replicas: int = 1
    threads_per_replica: int = 1
    max_ongoing_requests: int = 2
    max_queued_requests: int = -1
    default_max_new_tokens: int = 16
    max_new_tokens_limit: int = MAX_NEW_TOKENS_LIMIT
    exact_length: bool = False
    autoscaling: dict | None = None
    semantic_cache: bool = False
    cache_threshold: float | None = None  # None: helpers.caching's own default
    cache_max_entries: int = 1024
    backend: str = "llm"
    echo_delay_s: float = 0.0
    llm_name: str | None = None
    max_batch_size: int = 1
    batch_wait_timeout_s: float = 0.05

    def __post_init__(self):
        self.validate()

    def validate(self) -> "ServingConfig":
        """Raise ValueError with a hint when a setting cannot work."""
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")

        for name in ("num_replicas", "threads_per_replica", "max_ongoing_requests", "default_max_new_tokens",
                     "max_new_tokens_limit", "cache_max_entries", "max_batch_size"):
            positive_int(name)
        if isinstance(self.max_queued_requests, bool) or not isinstance(self.max_queued_requests, int) \
                or (self.max_queued_requests < 0 and self.max_queued_requests != -1):
            raise ValueError(f"max_queued_requests must be -1 (no limit) or >= 0, got {self.max_queued_requests!r}.")
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(f"default_max_new_tokens ({self.default_max_new_tokens}) is above "
                             f"max_new_tokens_limit ({self.max_new_tokens_limit}); lower it or raise the limit.")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}.")
        if self.cache_threshold is not None and not 0.0 < self.cache_threshold <= 1.0:
            raise ValueError(f"cache_threshold is a cosine similarity in (0, 1], got {self.cache_threshold!r}.")
        if self.echo_delay_s < 0:
            raise ValueError("echo_delay_s must be >= 0.")
        if self.batch_wait_timeout_s < 0:
            raise ValueError("batch_wait_timeout_s must be >= 0.")
        if self.max_batch_size > self.max_ongoing_requests:
            raise ValueError(f"max_batch_size ({self.max_batch_size}) is above max_ongoing_requests "
                             f"({self.max_ongoing_requests}): a replica never holds enough requests to fill the batch; "
                             "raise max_ongoing_requests.")
        if self.autoscaling is not None:
            if not isinstance(self.autoscaling, dict):
                raise ValueError("autoscaling must be a dict such as {'min_replicas': 1, 'max_replicas': 2}.")
            low = self.autoscaling.get("min_replicas", 1)
            high = self.autoscaling.get("max_replicas", 1)
            if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high and high >= 1):
                raise ValueError(f"autoscaling needs 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                                 f"got min_replicas={low!r}, max_replicas={high!r}.")
        return self

    def to_settings(self) -> dict:
        """A plain dict (what the replicas receive; JSON-friendly)."""
        return asdict(self)

    @classmethod
    def from_args(cls, args: dict | None) -> "ServingConfig":
        """Build from ``serve run ... key=value`` or a Serve config file's ``args``.

        Values may arrive as strings (from the command line); they are converted
        to each field's type. Unknown keys raise ValueError naming the known ones.
        """
        args = dict(args or {})
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise ValueError(f"Unknown serving argument(s) {', '.join(unknown)}; known: {', '.join(known)}.")
        converted = {}
        for name, value in args.items():
            kind = str(known[name].type)
            if isinstance(value, str) and kind.endswith(" | None") and value.strip().lower() in ("", "none", "null"):
                value = None
            elif isinstance(value, str):
                kind = kind.removesuffix(" | None")
                if kind in ("int", "float"):
                    try:
                        value = int(value) if kind == "int" else float(value)
                    except ValueError:
                        raise ValueError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, "
                                         f"got {value!r}.") from None
                elif kind == "bool":
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(f"{name} must be true or false, got {value!r}.")
                    value = value.lower() in ("true", "1", "yes")
                elif kind == "dict":
                    value = json.loads(value)
            elif kind.removesuffix(" | None") == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            converted[name] = value
        if "default_max_new_tokens" not in converted:
            converted["default_max_new_tokens"] = min(default_max_new_tokens(),
                                                      converted.get("max_new_tokens_limit", MAX_NEW_TOKENS_LIMIT))
        return cls(**converted)


def deployment_options(config: ServingConfig) -> dict:
    """The options handed to ``serve.deployment(...).options(...)`` for ``config``.

    Fixed replicas use ``num_replicas``; autoscaling uses ``autoscaling_config``
    instead (Serve refuses both). Each replica reserves ``threads_per_replica``
    Ray CPUs so that Ray never packs more torch threads than cores.
    """
    options = {
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "ray_actor_options": {"num_cpus": config.threads_per_replica},
    }
    if config.autoscaling is not None:
        options["autoscaling_config"] = dict(config.autoscaling)
    else:
        options["num_replicas"] = config.num_replicas
    return options


# --- request validation and responses (plain functions, no Ray) -------------------------------

class RequestError(ValueError):
    """A request the server refuses; ``status`` is the HTTP code (4xx), the message says how to fix it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request."""

    prompt: str
    max_new_tokens: int


_EXAMPLE = '{"prompt": "How do I reset my password?", "max_new_tokens": 16}'


def parse_request(body, default_max_new_tokens: int, max_new_tokens_limit: int = MAX_NEW_TOKENS_LIMIT,
                  max_prompt_chars: int = MAX_PROMPT_CHARS) -> GenerationRequest:
    """Validate a request body (bytes, str or an already decoded dict).

    Malformed JSON or a body that is not an object -> ``RequestError(400)``;
    a missing, empty or mistyped field, an unknown field, or ``max_new_tokens``
    outside ``1..max_new_tokens_limit`` -> ``RequestError(422)``.
    """
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, f"Body is not UTF-8 text. Send JSON such as {_EXAMPLE}.") from None
    if isinstance(body, str):
        if not body.strip():
            raise RequestError(400, f"Body is empty. Send JSON such as {_EXAMPLE}.")
        try:
            body = json.loads(body)
        except json.JSONDecodeError as error:
            raise RequestError(400, f"Body is not valid JSON ({error.msg} at position {error.pos}). "
                                    f"Send JSON such as {_EXAMPLE}.") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"Body must be a JSON object, got a JSON {type(body).__name__}. "
                                f"Send JSON such as {_EXAMPLE}.")
    unknown = sorted(set(body) - set(ALLOWED_FIELDS))
    if unknown:
        raise RequestError(422, f"Unknown field(s): {', '.join(map(repr, unknown))}. "
                                f"Allowed fields: {', '.join(ALLOWED_FIELDS)}.")
    if "prompt" not in body:
        raise RequestError(422, f"Missing field 'prompt' (a non-empty string). Example: {_EXAMPLE}.")
    prompt = body["prompt"]
    if not isinstance(prompt, str):
        raise RequestError(422, f"Field 'prompt' must be a string, got {_json_type(prompt)}.")
    if not prompt.strip():
        raise RequestError(422, "Field 'prompt' is empty; send the text to answer.")
    if len(prompt) > max_prompt_chars:
        raise RequestError(422, f"Field 'prompt' has {len(prompt)} characters; the limit is {max_prompt_chars}.")
    max_new_tokens = body.get("max_new_tokens", default_max_new_tokens)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise RequestError(422, f"Field 'max_new_tokens' must be an integer from 1 to {max_new_tokens_limit}, "
                                f"got {_json_type(max_new_tokens)}.")
    if not 1 <= max_new_tokens <= max_new_tokens_limit:
        raise RequestError(422, f"Field 'max_new_tokens' must be between 1 and {max_new_tokens_limit}, "
                                f"got {max_new_tokens}.")
    return GenerationRequest(prompt=prompt, max_new_tokens=max_new_tokens)


def _json_type(value) -> str:
    """How a decoded JSON value is called in JSON terms, for error messages."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def build_response(text: str, new_tokens: int, seconds: float, replica: str, pid: int,
                   cached: bool = False, batch_size: int = 1) -> dict:
    """The JSON answer to a good request: the text plus who answered, how long it took and with how many
    other requests it was generated (``batch_size``: 1 without batching, 0 for a cache hit)."""
    return {"text": text, "new_tokens": int(new_tokens), "seconds": round(float(seconds), 4),
            "replica": replica, "pid": int(pid), "cached": bool(cached), "batch_size": int(batch_size)}


def error_response(status: int, message: str) -> dict:
    """The JSON body of a refused request."""
    return {"error": message, "status": int(status)}


def cache_namespace(max_new_tokens: int) -> str:
    """Cached answers are only reused for requests that asked for the same length."""
    return f"max_new_tokens={max_new_tokens}"


async def _inline(fn, *args):
    return fn(*args)


async def answer_request(body, generate, config: ServingConfig, replica: str, pid: int | None = None, cache=None,
                         clock: Callable[[], float] = time.perf_counter, offload=_inline) -> tuple[int, dict]:
    """Validate ``body``, answer it (from ``cache`` when it holds a close prompt) and return ``(status, json)``.

    ``generate`` is an async callable ``(prompt, max_new_tokens) -> (text, new_tokens)`` or
    ``(text, new_tokens, batch_size)``; ``offload(fn, *args)`` runs blocking cache calls
    (inline by default, on a worker thread in a replica). A generator error becomes a 500
    with its message; nothing is raised.
    """
    pid = os.getpid() if pid is None else pid
    start = clock()
    try:
        request = parse_request(body, config.default_max_new_tokens, config.max_new_tokens_limit)
    except RequestError as error:
        return error.status, error_response(error.status, error.message)
    namespace = cache_namespace(request.max_new_tokens)
    if cache is not None:
        hit = await offload(lambda: cache.get(request.prompt, namespace=namespace))
        if hit is not None:
            return 200, build_response(hit, 0, clock() - start, replica, pid, cached=True, batch_size=0)
    try:
        text, new_tokens, *batch = await generate(request.prompt, request.max_new_tokens)
    except Exception as error:  # the client gets a 500 with the reason, the replica stays up
        return 500, error_response(500, f"Generation failed: {type(error).__name__}: {error}")
    if cache is not None:
        await offload(lambda: cache.put(request.prompt, text, namespace=namespace))
    return 200, build_response(text, new_tokens, clock() - start, replica, pid, batch_size=batch[0] if batch else 1)


def handle_request(body, generate: Callable[[str, int], tuple[str, int]], config: ServingConfig, replica: str,
                   pid: int | None = None, cache=None, clock: Callable[[], float] = time.perf_counter
                   ) -> tuple[int, dict]:
    """:func:`answer_request` for a plain blocking ``generate(prompt, max_new_tokens) -> (text, new_tokens)``."""
    async def run(prompt, max_new_tokens):
        return generate(prompt, max_new_tokens)

    return asyncio.run(answer_request(body, run, config, replica, pid, cache, clock))


# --- the OpenAI-compatible chat API (plain functions, no Ray) -----------------------------------

@dataclass(frozen=True)
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    messages: tuple
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    model: str = APP_NAME


_CHAT_EXAMPLE = '{"model": "workbook-llm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}'


def parse_chat_request(body, default_max_new_tokens: int, max_new_tokens_limit: int = MAX_NEW_TOKENS_LIMIT,
                       max_prompt_chars: int = MAX_PROMPT_CHARS) -> ChatRequest:
    """Validate an OpenAI-style chat completion body (the subset this server implements).

    Accepted: ``model`` (any string, echoed back), ``messages`` (system / user /
    assistant messages with string content, the last one from the user),
    ``max_tokens`` or ``max_completion_tokens``, ``stream`` and
    ``stream_options.include_usage``. Decoding is always greedy, so sampling
    fields are refused rather than silently ignored. Errors raise ``RequestError``
    (400 for a body that is not a JSON object, 422 otherwise).
    """
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, f"Body is not valid JSON. Send JSON such as {_CHAT_EXAMPLE}.") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"Body must be a JSON object. Send JSON such as {_CHAT_EXAMPLE}.")
    unknown = sorted(set(body) - set(CHAT_FIELDS))
    if unknown:
        raise RequestError(422, f"Unsupported field(s): {', '.join(map(repr, unknown))} (this server decodes "
                                f"greedily). Supported fields: {', '.join(CHAT_FIELDS)}.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(422, f"Field 'messages' must be a non-empty list. Example: {_CHAT_EXAMPLE}.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES \
                or not isinstance(message.get("content"), str):
            raise RequestError(422, f"messages[{index}] must be {{'role': one of {', '.join(CHAT_ROLES)}, "
                                    "'content': a string}.")
    if messages[-1]["role"] != "user":
        raise RequestError(422, "The last message must come from the user.")
    if sum(len(message["content"]) for message in messages) > max_prompt_chars:
        raise RequestError(422, f"The messages have more than {max_prompt_chars} characters in all.")
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise RequestError(422, "Give max_tokens or max_completion_tokens, not both.")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", default_max_new_tokens))
    if max_tokens is None:
        max_tokens = default_max_new_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_new_tokens_limit:
        raise RequestError(422, f"max_tokens must be an integer from 1 to {max_new_tokens_limit}, "
                                f"got {max_tokens!r}.")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(422, f"Field 'stream' must be true or false, got {_json_type(stream)}.")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise RequestError(422, "stream_options supports only {'include_usage': true or false}.")
    model = body.get("model", APP_NAME)
    if not isinstance(model, str):
        raise RequestError(422, f"Field 'model' must be a string, got {_json_type(model)}.")
    return ChatRequest(tuple({"role": m["role"], "content": m["content"]} for m in messages), max_tokens,
                       stream, bool(options.get("include_usage", False)), model)


def openai_error(status: int, message: str) -> dict:
    """An error body in the OpenAI API's shape (what its client turns into ``openai.APIStatusError``)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def chat_completion(completion_id: str, created: int, model: str, text: str, prompt_tokens: int,
                    completion_tokens: int, max_tokens: int) -> dict:
    """A non-streamed ``chat.completion`` object."""
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason(completion_tokens, max_tokens)}],
            "usage": usage(prompt_tokens, completion_tokens)}


def chat_chunk(completion_id: str, created: int, model: str, delta: dict | None,
               finish: str | None = None, usage_block: dict | None = None) -> dict:
    """One ``chat.completion.chunk`` of a stream; the usage-only chunk has ``choices == []``."""
    chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage_block is not None:
        chunk["usage"] = usage_block
    return chunk


def finish_reason(completion_tokens: int, max_tokens: int) -> str:
    """``length`` when the answer was cut at ``max_tokens``, ``stop`` when the model ended it."""
    return "length" if completion_tokens >= max_tokens else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": int(prompt_tokens), "completion_tokens": int(completion_tokens),
            "total_tokens": int(prompt_tokens + completion_tokens)}


def sse(data) -> str:
    """One server-sent event: ``data: <json>`` and a blank line (``[DONE]`` is sent as it is)."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


# --- generators ------------------------------------------------------------------------------

class EchoGenerator:
    """A fast fake model for tests: echoes the prompt's words after an optional delay.

    ``batches`` lists the size of every batch it was asked to generate.
    """

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.batches: list[int] = []

    def __call__(self, prompt: str, max_new_tokens: int) -> tuple[str, int]:
        return self.generate_batch([prompt], max_new_tokens)[0]

    def generate_batch(self, prompts, max_new_tokens: int) -> list[tuple[str, int]]:
        """One answer per prompt, all after a single delay (a batch costs about as much as one request)."""
        self.batches.append(len(prompts))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [(" ".join(prompt.split()[:max_new_tokens]), len(prompt.split()[:max_new_tokens]))
                for prompt in prompts]

    def chat(self, messages, max_new_tokens: int, emit: Callable[[str], None] | None = None) -> tuple[str, int, int]:
        """Echo the last message word by word (``emit`` gets each word as it is "generated")."""
        prompt_tokens = sum(len(message["content"].split()) for message in messages)
        words = messages[-1]["content"].split()[:max_new_tokens]
        if self.delay_s:
            time.sleep(self.delay_s)
        for index, word in enumerate(words):
            if emit is not None:
                emit(word if index == 0 else " " + word)
        return " ".join(words), len(words), prompt_tokens


class LLMGenerator:
    """Greedy generation with the workbook LLM, at most ``max_new_tokens`` new tokens per request.

    ``exact_length=True`` always generates exactly ``max_new_tokens`` (every
    request costs the same work: fair for comparing configurations).
    """

    def __init__(self, threads: int, name: str | None = None, exact_length: bool = False):
        import torch

        from . import models

        torch.set_num_threads(threads)
        self.threads = threads
        self.exact_length = exact_length
        self.model, self.tokenizer = models.load_llm(name)

    def __call__(self, prompt: str, max_new_tokens: int) -> tuple[str, int]:
        return self.generate_batch([prompt], max_new_tokens)[0]

    def generate_batch(self, prompts, max_new_tokens: int) -> list[tuple[str, int]]:
        """Several prompts in one left-padded batch: one forward pass per token serves them all."""
        import torch

        from .generation import greedy_new_ids

        torch.set_num_threads(self.threads)  # per thread: keep the pool size in the worker thread too
        new_ids = greedy_new_ids(self.model, self.tokenizer, list(prompts), max_new_tokens,
                                 exact_length=self.exact_length)
        return [(self.tokenizer.decode(row, skip_special_tokens=True), _answer_length(row.tolist(), self.tokenizer))
                for row in new_ids]

    def chat(self, messages, max_new_tokens: int, emit: Callable[[str], None] | None = None) -> tuple[str, int, int]:
        """Answer a chat; ``emit(text_piece)`` is called as each new token is decoded (for streaming)."""
        import torch

        from .generation import encode_prompts, render_chat

        torch.set_num_threads(self.threads)
        inputs = encode_prompts(self.tokenizer, [render_chat(self.tokenizer, list(messages))], chat=False)
        options = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        if self.exact_length:
            options["min_new_tokens"] = max_new_tokens
        streamer = _PieceStreamer(self.tokenizer, emit)
        with torch.no_grad():
            # model.generate directly (not generation.greedy_new_ids): streaming needs its streamer hook
            self.model.generate(**inputs, **options, streamer=streamer)
        return streamer.text, len(streamer.ids), int(inputs["input_ids"].shape[1])


def _answer_length(ids: list, tokenizer) -> int:
    """New tokens of one batch row: up to and including the first end-of-sequence token (padding follows it)."""
    eos = tokenizer.eos_token_id
    return ids.index(eos) + 1 if eos is not None and eos in ids else len(ids)


class _PieceStreamer:
    """A transformers streamer (``put`` / ``end``) that turns each new token into the text it adds."""

    def __init__(self, tokenizer, emit: Callable[[str], None] | None):
        self.tokenizer, self.emit = tokenizer, emit
        self.ids: list[int] = []
        self.text = ""
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        self.ids.extend(int(token) for token in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the next token
            return
        piece, self.text = text[len(self.text):], text
        if piece and self.emit is not None:
            self.emit(piece)

    def end(self) -> None:
        pass


def make_generator(config: ServingConfig):
    """The generator ``config.backend`` names."""
    if config.backend == "echo":
        return EchoGenerator(config.echo_delay_s)
    return LLMGenerator(config.threads_per_replica, config.llm_name, config.exact_length)


def make_cache(config: ServingConfig):
    """A ``helpers.caching.SemanticCache`` for this replica, or None when the cache is off."""
    if not config.semantic_cache:
        return None
    try:
        from .caching import SemanticCache
    except ImportError as error:
        raise ValueError("semantic_cache=True needs helpers.caching.SemanticCache; "
                         f"it could not be imported ({error}). Turn the cache off or install the workbook.") from None
    options = {"max_entries": config.cache_max_entries}
    if config.cache_threshold is not None:
        options["threshold"] = config.cache_threshold
    return SemanticCache(**options)


# --- the Serve replica --------------------------------------------------------------------------

class LLMServer:
    """One Serve replica: a model (or fake), its torch threads, optionally a semantic cache.

    ``POST /`` generates; ``POST /v1/chat/completions`` speaks the OpenAI chat API
    (streamed as server-sent events with ``"stream": true``); ``GET /healthz`` says
    the replica is up. Generation runs on one worker thread so the replica's event
    loop stays free for health checks, streaming and the metrics Serve collects.
    With ``max_batch_size > 1``, ``POST /`` requests go through a ``@serve.batch``
    function that hands the worker up to that many prompts at once.
    """

    def __init__(self, settings: dict):
        from concurrent.futures import ThreadPoolExecutor

        self.config = ServingConfig(**settings)
        self.generate = make_generator(self.config)
        self.cache = make_cache(self.config)
        self.replica = _replica_name()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._generate_batched = self._make_batched() if self.config.max_batch_size > 1 else None

    def _make_batched(self):
        from ray import serve

        @serve.batch(max_batch_size=self.config.max_batch_size,
                     batch_wait_timeout_s=self.config.batch_wait_timeout_s)
        async def generate_batched(requests: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
            # Serve collected these requests; generate those asking for the same length together.
            loop = asyncio.get_running_loop()
            answers: dict[int, tuple] = {}
            for length in sorted({max_new_tokens for _, max_new_tokens in requests}):
                group = [index for index, (_, max_new_tokens) in enumerate(requests) if max_new_tokens == length]
                texts = await loop.run_in_executor(self._worker, self.generate.generate_batch,
                                                   [requests[index][0] for index in group], length)
                for index, (text, new_tokens) in zip(group, texts):
                    answers[index] = (text, new_tokens, len(group))
            return [answers[index] for index in range(len(requests))]

        return generate_batched

    async def _offload(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    async def _answer(self, body) -> tuple[int, dict]:
        if self._generate_batched is None:
            # The whole request on the worker: "seconds" counts generation, not the wait for the worker.
            return await self._offload(lambda: handle_request(body, self.generate, self.config, self.replica,
                                                              cache=self.cache))

        async def batched(prompt: str, max_new_tokens: int):
            return await self._generate_batched((prompt, max_new_tokens))

        # "seconds" here runs from arrival in the replica: it includes the wait while Serve fills the batch.
        return await answer_request(body, batched, self.config, self.replica, cache=self.cache,
                                    offload=self._offload)

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        path = request.url.path
        root = request.scope.get("root_path", "").rstrip("/")
        if root and path.startswith(root):  # an application mounted under a route prefix
            path = path[len(root):]
        path = path.rstrip("/") or "/"
        if request.method == "GET" and path == HEALTH_PATH:
            return JSONResponse({"status": "ok", "replica": self.replica, "pid": os.getpid()})
        if path == CHAT_PATH:
            if request.method != "POST":
                return JSONResponse(openai_error(405, f"Use POST with a JSON body such as {_CHAT_EXAMPLE}."),
                                    status_code=405)
            return await self._chat(await request.body())
        if path != "/":
            return JSONResponse(error_response(404, f"No route {path!r}: POST a JSON body to '/' or to "
                                                    f"'{CHAT_PATH}'."), status_code=404)
        if request.method != "POST":
            return JSONResponse(error_response(405, f"Use POST with a JSON body such as {_EXAMPLE}."),
                                status_code=405)
        status, payload = await self._answer(await request.body())
        return JSONResponse(payload, status_code=status)

    async def _chat(self, body):
        from starlette.responses import JSONResponse, StreamingResponse

        try:
            chat = parse_chat_request(body, self.config.default_max_new_tokens, self.config.max_new_tokens_limit)
        except RequestError as error:
            return JSONResponse(openai_error(error.status, error.message), status_code=error.status)
        completion_id, created = f"chatcmpl-{os.urandom(8).hex()}", int(time.time())
        if not chat.stream:
            try:
                text, new_tokens, prompt_tokens = await self._offload(
                    lambda: self.generate.chat(chat.messages, chat.max_tokens))
            except Exception as error:
                return JSONResponse(openai_error(500, f"Generation failed: {type(error).__name__}: {error}"),
                                    status_code=500)
            return JSONResponse(chat_completion(completion_id, created, chat.model, text, prompt_tokens, new_tokens,
                                                chat.max_tokens))
        return StreamingResponse(self._chat_events(chat, completion_id, created), media_type="text/event-stream")

    async def _chat_events(self, chat: ChatRequest, completion_id: str, created: int):
        """Server-sent events: a role chunk, one chunk per decoded piece, the finish chunk, usage, [DONE]."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(piece: str):  # called on the worker thread for every new token
            loop.call_soon_threadsafe(events.put_nowait, ("piece", piece))

        def work():
            try:
                result = self.generate.chat(chat.messages, chat.max_tokens, emit)
            except Exception as error:
                result = error
            loop.call_soon_threadsafe(events.put_nowait, ("done", result))

        job = loop.run_in_executor(self._worker, work)
        yield sse(chat_chunk(completion_id, created, chat.model, {"role": "assistant", "content": ""}))
        while True:
            kind, value = await events.get()
            if kind == "piece":
                yield sse(chat_chunk(completion_id, created, chat.model, {"content": value}))
                continue
            if isinstance(value, Exception):
                yield sse(openai_error(500, f"Generation failed: {type(value).__name__}: {value}"))
            else:
                _, new_tokens, prompt_tokens = value
                yield sse(chat_chunk(completion_id, created, chat.model, {},
                                     finish_reason(new_tokens, chat.max_tokens)))
                if chat.include_usage:
                    yield sse(chat_chunk(completion_id, created, chat.model, None,
                                         usage_block=usage(prompt_tokens, new_tokens)))
            break
        await job
        yield sse("[DONE]")


def asgi_app(settings: dict):
    """The replica as a plain ASGI application (no Ray): for tests, or ``uvicorn`` on one machine."""
    from starlette.requests import Request

    server = LLMServer(settings)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":  # nothing to set up or tear down
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        response = await server(Request(scope, receive))
        await response(scope, receive, send)

    app.server = server
    return app


def _replica_name() -> str:
    """Serve's id of the running replica (falls back to the process id outside Serve)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a replica (unit tests): the pid still tells processes apart
        return f"pid-{os.getpid()}"


def build_app(config: ServingConfig):
    """The Serve application for ``config`` (not started: pass it to ``serve.run``)."""
    from ray import serve

    deployment = serve.deployment(LLMServer, name=DEPLOYMENT_NAME)
    return deployment.options(**deployment_options(config)).bind(config.to_settings())


def app_builder(args: dict | None = None):
    """Entry point for ``serve run helpers.serving:app_builder key=value ...`` and Serve config files."""
    return build_app(ServingConfig.from_args(args))


# --- a local Ray + Serve on 127.0.0.1 -----------------------------------------------------------

_local = {"port": None, "started": False, "atexit": False}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (checked by binding it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def start_serve(port: int | None = None, num_cpus: int = 2, request_timeout_s: float | None = None,
                quiet: bool = True) -> str:
    """Start a private local Ray instance and Serve's HTTP proxy on 127.0.0.1; return the base URL.

    Ray gets ``num_cpus`` logical CPUs (replicas reserve ``threads_per_replica``
    each), no dashboard and a small object store; its internal services use
    Ray's token authentication (on by default). :func:`stop_serve` undoes it
    and is also registered to run at interpreter exit.
    """
    import logging

    import ray  # noqa: F401  (fails early with a clear ImportError when Ray is missing)
    from ray import serve

    if _local["started"]:
        raise RuntimeError("Serve is already running here; call serving.stop_serve() first.")
    port = port or free_port()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    level = logging.WARNING if quiet else logging.INFO
    if not _local["atexit"]:
        atexit.register(stop_serve)
        _local["atexit"] = True
    _local.update(port=port, started=True)
    try:
        # quiet: hide the start-up chatter (including the note that token authentication is on)
        ray_logger = logging.getLogger("ray")
        previous = ray_logger.level
        if quiet:
            ray_logger.setLevel(logging.ERROR)
        try:
            _init_ray(num_cpus, logging.ERROR if quiet else level, quiet)
        finally:
            ray_logger.setLevel(previous if not quiet else level)
        if quiet:
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
        serve.start(http_options={"host": "127.0.0.1", "port": port,
                                  "request_timeout_s": request_timeout_s or default_request_timeout_s()},
                    logging_config={"log_level": "WARNING" if quiet else "INFO"})
    except BaseException:
        stop_serve()
        raise
    return f"http://127.0.0.1:{port}"


def _init_ray(num_cpus: int, logging_level: int, quiet: bool, attempts: int = 3) -> None:
    """``ray.init`` for a private local instance, retried when a busy machine makes start-up time out.

    Ray's node manager gives its helper agents a fixed ~15 s to start; on a loaded
    laptop they can miss it and ``ray.init`` fails with "timed out during startup".
    A second attempt usually succeeds; leftovers of the failed one are stopped first.
    """
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=200 * 2**20,
                     logging_level=logging_level, log_to_driver=not quiet, configure_logging=True)
            return
        except Exception as error:
            if "timed out during startup" not in str(error) or attempt == attempts:
                raise
            print(f"Ray start-up timed out on a busy machine (attempt {attempt} of {attempts}); trying again.")
            ray.shutdown()
            stop_own_ray_processes()


def deploy(config: ServingConfig, name: str = APP_NAME, route_prefix: str = ROUTE_PREFIX):
    """Deploy (or replace) application ``name`` at ``route_prefix``; returns when every replica is up.

    A previous version is deleted first: a rolling update would start the new
    replicas before stopping the old ones, and on a small machine the old
    replicas hold the CPUs the new ones wait for. Applications with other names
    keep running (several can be compared side by side on different prefixes).
    """
    from ray import serve

    if not _local["started"]:
        raise RuntimeError("Start Serve first with serving.start_serve().")
    if name in serve.status().applications:
        serve.delete(name)
    return serve.run(build_app(config), name=name, route_prefix=route_prefix, blocking=False)


def undeploy(*names: str) -> None:
    """Delete the named applications (those not running are skipped)."""
    from ray import serve

    running = serve.status().applications
    for name in names:
        if name in running:
            serve.delete(name)


def stop_serve(timeout_s: float = 30.0, quiet: bool = True) -> None:
    """Shut down Serve and Ray (safe to call twice); wait until Ray's processes are gone."""
    import contextlib
    import io

    if not _local["started"]:
        return
    try:
        import ray
        from ray import serve

        # Ray reports the controller's own exit as a "task failed" line on stdout; it is expected.
        muffle = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
        with muffle:
            if ray.is_initialized():
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
    finally:
        _local["started"] = False
        if wait_for_no_ray_processes(timeout_s):
            stop_own_ray_processes()  # a straggler that ignored Ray's own shutdown


# --- watching replicas -------------------------------------------------------------------------

def running_replicas(app_name: str = APP_NAME, deployment_name: str = DEPLOYMENT_NAME) -> int:
    """How many replicas of the deployment Serve reports as RUNNING right now."""
    from ray import serve

    application = serve.status().applications.get(app_name)
    if application is None or deployment_name not in application.deployments:
        return 0
    states = application.deployments[deployment_name].replica_states
    return sum(count for state, count in states.items() if str(getattr(state, "value", state)) == "RUNNING")


@dataclass
class ReplicaWatcher:
    """Poll :func:`running_replicas` in a background thread while a load test runs.

    Use as a context manager; afterwards ``timeline`` holds ``(seconds, replicas)``
    pairs and ``max_seen`` the largest replica count observed.
    """

    interval_s: float = 0.5
    app_name: str = APP_NAME
    deployment_name: str = DEPLOYMENT_NAME
    timeline: list = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = None

    @property
    def max_seen(self) -> int:
        """The most RUNNING replicas seen at any poll (0 before the first poll)."""
        return max((count for _, count in self.timeline), default=0)

    def _poll(self):
        start = time.perf_counter()
        while True:
            try:
                count = running_replicas(self.app_name, self.deployment_name)
            except Exception:  # a status call can fail while Serve is busy; try again next tick
                count = None
            if count is not None:
                self.timeline.append((time.perf_counter() - start, count))
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, name="replica-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        return False
