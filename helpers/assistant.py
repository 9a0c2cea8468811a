"""The Lumen Cloud support assistant of notebook 12: the earlier techniques stacked.

The assistant serves two kinds of request: **questions** about Lumen Cloud (answered by the
LLM, closed-book or with retrieval) and **tickets** to triage into one of the 12 labels (by
free generation, by few-shot prompting with similar examples, by label scoring, or by the
fine-tuned MiniLM classifier). A
:class:`Configuration` says which technique each part uses; :func:`evaluate` runs one
configuration over the same request stream and measures quality, per-request latency, throughput
and memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from tqdm.auto import tqdm

TICKET_METHODS = ("generate", "few_shot_similar", "label_scoring", "classifier")
FEW_SHOT_EXAMPLES = 4  # as in notebook 01: four similar training tickets per prompt
ANSWER_MAX_NEW_TOKENS = 32  # key facts come in the first sentence; longer answers only cost time
QA_METHODS = ("closed_book", "rag")
WEIGHTS = ("fp32", "nf4")
SCHEDULERS = ("static", "continuous")


@dataclass(frozen=True)
class Configuration:
    """One way to build the assistant."""

    name: str
    ticket_method: str = "generate"
    qa_method: str = "closed_book"
    weights: str = "fp32"
    semantic_cache: bool = False
    batch_size: int = 1
    scheduler: str = "static"  # how questions share batch slots: whole batches, or per decoding step (notebook 09)
    description: str = ""

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"Configuration name {self.name!r} must be an identifier (it becomes a result key).")
        for value, allowed, what in ((self.ticket_method, TICKET_METHODS, "ticket_method"),
                                     (self.qa_method, QA_METHODS, "qa_method"), (self.weights, WEIGHTS, "weights"),
                                     (self.scheduler, SCHEDULERS, "scheduler")):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r}.")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1.")


@dataclass
class Outcome:
    """What :func:`evaluate` measured for one configuration."""

    name: str
    ticket_accuracy: float
    qa_accuracy: float
    requests: int
    seconds: float
    bytes: int
    cache_hits: int = 0
    details: dict = field(default_factory=dict)
    latencies_s: list = field(default_factory=list)  # per request: seconds until its answer (its batch's time)
    ticket_correct: list = field(default_factory=list)  # per ticket: 1 if the label was right
    qa_correct: list = field(default_factory=list)  # per question request: 1 if the answer had every key fact

    @property
    def correct(self) -> list:
        """Per-request correctness, tickets first, then question requests (the same order for every configuration)."""
        return list(self.ticket_correct) + list(self.qa_correct)

    @property
    def accuracy(self) -> float:
        """Share of all requests handled correctly (tickets and question requests pooled).

        Without per-request flags (an Outcome built by hand) it is the mean of the two task accuracies.
        """
        if self.ticket_correct and self.qa_correct:
            return sum(self.correct) / len(self.correct)
        return (self.ticket_accuracy + self.qa_accuracy) / 2

    @property
    def throughput_rps(self) -> float:
        """Requests handled per second over the whole timed run."""
        return self.requests / self.seconds

    def latency_ms(self, q: float) -> float:
        """The ``q``-th percentile of the per-request latencies, in ms."""
        from .metrics import percentile

        if not self.latencies_s:
            raise ValueError(f"{self.name}: no per-request latencies were measured.")
        return 1000 * percentile(self.latencies_s, q)

    @property
    def latency_p50_ms(self) -> float:
        return self.latency_ms(50)

    @property
    def latency_p95_ms(self) -> float:
        return self.latency_ms(95)


def request_stream(questions: Sequence, repeat_fraction: float = 0.5, seed: int = 0) -> list:
    """Questions in arrival order, where ``repeat_fraction`` of the arrivals ask an earlier question again.

    Support traffic repeats itself (the same few questions every day); a response cache only
    pays off on such a stream, so we make the repetition explicit and configurable. Repeats
    vary case and punctuation, as users do.
    """
    import random

    if not 0 <= repeat_fraction < 1:
        raise ValueError("repeat_fraction must be in [0, 1).")
    rng = random.Random(seed)
    stream = list(questions)
    repeats = round(len(stream) * repeat_fraction / (1 - repeat_fraction))
    for _ in range(repeats):
        position = rng.randrange(1, len(stream) + 1)
        original = rng.choice(stream[:position])
        stream.insert(position, original)
    return stream


def vary(question: str, index: int) -> str:
    """The same question as a user might retype it (lower case, no question mark, extra spaces)."""
    variants = (question, question.lower(), question.rstrip("?") + " ?", "  " + question.rstrip("?"))
    return variants[index % len(variants)]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points (cost, quality) not beaten by another with lower-or-equal cost and higher-or-equal quality."""
    front = []
    for i, (cost, quality) in enumerate(points):
        dominated = any((other_cost <= cost and other_quality >= quality)
                        and (other_cost < cost or other_quality > quality)
                        for j, (other_cost, other_quality) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def best_configuration(outcomes: Sequence[Outcome]) -> str:
    """The most accurate configuration; among those within one point of it, the one with the highest throughput."""
    if not outcomes:
        raise ValueError("No outcomes to compare.")
    top = max(outcome.accuracy for outcome in outcomes)
    contenders = [outcome for outcome in outcomes if outcome.accuracy >= top - 0.01]
    return max(contenders, key=lambda outcome: outcome.throughput_rps).name


class Assistant:
    """Loads each component once and answers requests according to a :class:`Configuration`."""

    def __init__(self, progress: bool = True):
        self.progress = progress
        self._llms: dict[str, tuple] = {}
        self._embedder = None
        self._retriever = None
        self._classifier = None
        self._example_selector = None

    # -- components, loaded on first use ------------------------------------------------
    def llm(self, weights: str):
        """``(model, tokenizer)`` in fp32 or NF4 (bitsandbytes 4-bit, double quantization)."""
        if weights not in self._llms:
            import torch
            from transformers import BitsAndBytesConfig

            from .models import load_llm

            quantization = None
            if weights == "nf4":
                quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                  bnb_4bit_use_double_quant=True,
                                                  bnb_4bit_compute_dtype=torch.float32)
            self._llms[weights] = load_llm(quantization_config=quantization)
        return self._llms[weights]

    def embedder(self):
        if self._embedder is None:
            from .models import load_embedder

            self._embedder = load_embedder()
        return self._embedder

    def retriever(self):
        if self._retriever is None:
            from .data import load_kb
            from .rag import Retriever

            self._retriever = Retriever.from_documents(load_kb(), embedder=self.embedder())
        return self._retriever

    def example_selector(self):
        """Notebook 01's best prompt picks training tickets similar to the new one as examples."""
        if self._example_selector is None:
            from .data import load_tickets
            from .prompting import SimilarExamples

            self._example_selector = SimilarExamples(load_tickets("train"), self.embedder(), progress=False)
        return self._example_selector

    def classifier(self):
        if self._classifier is None:
            from .finetune import load_or_train_ticket_classifier

            self._classifier = load_or_train_ticket_classifier(progress=self.progress)
        return self._classifier

    def bytes_for(self, configuration: Configuration) -> int:
        """Memory of the weights this configuration keeps loaded."""
        from .metrics import model_bytes

        total = model_bytes(self.llm(configuration.weights)[0])
        uses_embedder = (configuration.qa_method == "rag" or configuration.semantic_cache
                         or configuration.ticket_method == "few_shot_similar")
        if uses_embedder:
            total += model_bytes(self.embedder())
        if configuration.ticket_method == "classifier":
            total += model_bytes(self.classifier()[0])
        if configuration.ticket_method == "few_shot_similar":
            self.example_selector()  # embeds the training tickets now, outside the timed region
        return total

    # -- the two tasks ------------------------------------------------------------------
    def triage(self, configuration: Configuration, ticket_texts: Sequence[str]) -> list[str]:
        """A label for each ticket, by the configuration's ticket method."""
        from . import prompting
        from .generation import generate, render_chat
        from .labels import parse_label

        if configuration.ticket_method == "classifier":
            from .finetune import classify

            model, tokenizer = self.classifier()
            return classify(model, tokenizer, list(ticket_texts), batch_size=configuration.batch_size)
        model, tokenizer = self.llm(configuration.weights)
        if configuration.ticket_method == "label_scoring":
            rendered = [render_chat(tokenizer, prompting.instruction_prompt(text)) for text in ticket_texts]
            scores, _ = prompting.score_tickets(model, tokenizer, rendered, progress=False)
            return [prompting.pick_label(score, normalise="mean") for score in scores]
        if configuration.ticket_method == "few_shot_similar":
            examples = self.example_selector().nearest(list(ticket_texts), k=FEW_SHOT_EXAMPLES)
            prompts = [prompting.few_shot_messages(text, chosen, descriptions=False)
                       for text, chosen in zip(ticket_texts, examples)]
        else:
            prompts = [prompting.bare_prompt(text) for text in ticket_texts]
        rendered = [render_chat(tokenizer, prompt) for prompt in prompts]
        answers = generate(model, tokenizer, rendered, max_new_tokens=8, batch_size=configuration.batch_size,
                           progress=False)
        return [parse_label(answer) for answer in answers]

    def answer(self, configuration: Configuration, questions: Sequence[str],
               max_new_tokens: int = ANSWER_MAX_NEW_TOKENS) -> list[str]:
        """Answers to ``questions``, closed-book or grounded in retrieved KB chunks."""
        from .generation import generate

        model, tokenizer = self.llm(configuration.weights)
        prompts = self.question_prompts(configuration, questions)
        return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=configuration.batch_size,
                        progress=False, strip=True)

    def question_prompts(self, configuration: Configuration, questions: Sequence[str]) -> list:
        """The chat prompts for ``questions``: closed-book, or grounded in the top-3 retrieved KB chunks."""
        from . import rag

        if configuration.qa_method == "rag":
            hits = self.retriever().search_documents_many(list(questions), k=3)
            return [rag.grounded_messages(question, found) for question, found in zip(questions, hits)]
        return [rag.closed_book_messages(question) for question in questions]

    def serve_questions(self, configuration: Configuration, questions: Sequence[str], cache=None,
                        max_new_tokens: int = ANSWER_MAX_NEW_TOKENS) -> tuple[list[str], list[float], int]:
        """Serve a question stream in arrival order; returns the answers, each request's latency and the cache hits.

        Every request is looked up in ``cache`` (a :class:`helpers.caching.SemanticCache`, or
        ``None``) when its turn comes, and every generated answer is stored as soon as it is
        finished, so a repeat hits only if its original has already been answered.

        - ``scheduler="static"``: misses are collected into batches of ``batch_size`` and each
          batch runs to its longest answer; a request's latency is its lookup plus its batch's time.
        - ``scheduler="continuous"``: misses take a batch slot as soon as one is free and leave
          when their answer ends (:func:`helpers.continuous_batching.continuous_batching`); a
          request's latency runs from taking its slot (or from its lookup, for a hit) to its answer.
        """
        if configuration.scheduler == "continuous":
            return self._serve_continuous(configuration, list(questions), cache, max_new_tokens)
        answers: list[str | None] = [None] * len(questions)
        latencies = [0.0] * len(questions)
        hits, pending = 0, []

        def run_batch():
            began = time.perf_counter()
            texts = self.answer(configuration, [questions[i] for i, _ in pending], max_new_tokens)
            seconds = time.perf_counter() - began
            for (index, lookup_s), text in zip(pending, texts):
                answers[index], latencies[index] = text, lookup_s + seconds
                if cache is not None:
                    cache.put(questions[index], text)
            pending.clear()

        for index, question in enumerate(questions):
            began = time.perf_counter()
            found = cache.get(question) if cache is not None else None
            if found is not None:
                answers[index], latencies[index], hits = found, time.perf_counter() - began, hits + 1
                continue
            pending.append((index, time.perf_counter() - began))
            if len(pending) == configuration.batch_size:
                run_batch()
        if pending:
            run_batch()
        return answers, latencies, hits

    def _serve_continuous(self, configuration, questions, cache, max_new_tokens):
        from .continuous_batching import Request, continuous_batching
        from .generation import render_chat

        model, tokenizer = self.llm(configuration.weights)
        prompts = self.question_prompts(configuration, questions)
        requests = [Request(index, 0.0, tuple(tokenizer(render_chat(tokenizer, prompt), add_special_tokens=False)
                                              .input_ids), max_new_tokens)
                    for index, prompt in enumerate(prompts)]
        answers: list[str | None] = [None] * len(questions)
        latencies = [0.0] * len(questions)
        admitted_at: dict[int, float] = {}
        hits = 0
        started = time.perf_counter()

        def admit(request, now_s):  # called when the request's turn comes: a hit never takes a slot
            nonlocal hits
            began = time.perf_counter()
            found = cache.get(questions[request.index]) if cache is not None else None
            if found is not None:
                answers[request.index], latencies[request.index], hits = found, time.perf_counter() - began, hits + 1
                return False
            admitted_at[request.index] = time.perf_counter() - started
            return True

        def finished(completed):
            text = tokenizer.decode(completed.tokens, skip_special_tokens=True).strip()
            answers[completed.index] = text
            latencies[completed.index] = time.perf_counter() - started - admitted_at[completed.index]
            if cache is not None:
                cache.put(questions[completed.index], text)

        continuous_batching(model, requests, configuration.batch_size, eos_token_id=tokenizer.eos_token_id,
                            admit=admit, on_finish=finished)
        return answers, latencies, hits


def request_texts(stream: Sequence, paraphrases: dict | None = None) -> list[str]:
    """What each request of ``stream`` says: a question's first ask in its own words; a repeat as
    its paraphrase (``paraphrases`` maps a QA id to another customer's wording) or, without one,
    retyped (:func:`vary`)."""
    seen: set = set()
    texts = []
    for index, item in enumerate(stream):
        if item.id not in seen:
            texts.append(item.question)
        elif paraphrases and item.id in paraphrases:
            texts.append(paraphrases[item.id])
        else:
            texts.append(vary(item.question, index))
        seen.add(item.id)
    return texts


def evaluate(assistant: Assistant, configuration: Configuration, tickets: Sequence, questions: Sequence,
             stream: Sequence | None = None, cache_threshold: float | None = None,
             paraphrases: dict | None = None) -> Outcome:
    """Run ``configuration`` on the tickets and the question stream; time everything but loading.

    ``questions`` are QA items (with ``id``, ``question`` and ``keywords``); ``stream`` lists the
    items in arrival order (default: each once), and :func:`request_texts` words each request.
    Components are loaded, and one ticket and one question run untimed (a warm-up), before the
    clock starts. Tickets are served in batches of ``configuration.batch_size``; questions go
    through :meth:`Assistant.serve_questions` (per-request cache lookup and insert, static or
    continuous batching). A configuration with a semantic cache needs ``cache_threshold`` (there
    is no silent default); its cache starts empty.
    """
    from .caching import SemanticCache
    from .metrics import accuracy
    from .rag import answer_contains_keywords, keyword_accuracy

    if configuration.semantic_cache and cache_threshold is None:
        raise ValueError(f"Configuration {configuration.name!r} uses a semantic cache but no cache_threshold was "
                         "given: pass the threshold chosen on calibration pairs, e.g. "
                         "results.read_value('08_caching', 'semantic_cache_threshold').")
    stream = list(stream or questions)
    assistant.bytes_for(configuration)  # loads every component outside the timed region
    if configuration.qa_method == "rag":
        assistant.retriever()
    texts = request_texts(stream, paraphrases)
    ticket_texts = [ticket.text for ticket in tickets]
    size = configuration.batch_size

    def new_cache():
        return SemanticCache(embedder=assistant.embedder(), threshold=cache_threshold) \
            if configuration.semantic_cache else None

    # warm-up, untimed: first calls pay one-off costs (kernel selection, loading the cache's verifier)
    assistant.triage(configuration, ticket_texts[:1])
    warm_cache = new_cache()
    assistant.serve_questions(configuration, texts[:1], warm_cache)
    if warm_cache is not None:
        warm_cache.get(texts[0])
    latencies: list[float] = []
    labels: list[str] = []
    start = time.perf_counter()
    for first in range(0, len(ticket_texts), size):
        began = time.perf_counter()
        labels.extend(assistant.triage(configuration, ticket_texts[first:first + size]))
        latencies.extend([time.perf_counter() - began] * len(ticket_texts[first:first + size]))
    answers, question_latencies, cache_hits = assistant.serve_questions(configuration, texts, new_cache())
    latencies.extend(question_latencies)
    seconds = time.perf_counter() - start
    keyword_lists = [item.keywords for item in stream]
    return Outcome(
        name=configuration.name,
        ticket_accuracy=accuracy(labels, [ticket.label for ticket in tickets]),
        qa_accuracy=keyword_accuracy(answers, keyword_lists),
        requests=len(tickets) + len(stream), seconds=seconds, bytes=assistant.bytes_for(configuration),
        cache_hits=cache_hits, details={"answers": answers, "labels": labels, "questions": texts},
        latencies_s=latencies,
        ticket_correct=[int(label == ticket.label) for label, ticket in zip(labels, tickets)],
        qa_correct=[int(answer_contains_keywords(answer, keywords))
                    for answer, keywords in zip(answers, keyword_lists)],
    )


def evaluate_all(assistant: Assistant, configurations: Sequence[Configuration], tickets: Sequence,
                 questions: Sequence, stream: Sequence | None = None,
                 cache_threshold: float | None = None, paraphrases: dict | None = None) -> list[Outcome]:
    """:func:`evaluate` for each configuration in turn, with a progress bar."""
    return [evaluate(assistant, configuration, tickets, questions, stream, cache_threshold, paraphrases)
            for configuration in tqdm(configurations, desc="configurations", disable=not assistant.progress)]
