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


@dataclass(frozen=True)
class Configuration:
    """One way to build the assistant."""

    name: str
    ticket_method: str = "generate"
    qa_method: str = "closed_book"
    weights: str = "fp32"
    semantic_cache: bool = False
    batch_size: int = 1
    description: str = ""

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"Configuration name {self.name!r} must be an identifier (it becomes a result key).")
        for value, allowed, what in ((self.ticket_method, TICKET_METHODS, "ticket_method"),
                                     (self.qa_method, QA_METHODS, "qa_method"), (self.weights, WEIGHTS, "weights")):
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
    def ms_per_request(self) -> float:
        """Total time divided by requests: the inverse of throughput, *not* a per-request latency."""
        return 1000 * self.seconds / self.requests

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
    """The most accurate configuration; among those within one point of it, the fastest."""
    if not outcomes:
        raise ValueError("No outcomes to compare.")
    top = max(outcome.accuracy for outcome in outcomes)
    contenders = [outcome for outcome in outcomes if outcome.accuracy >= top - 0.01]
    return min(contenders, key=lambda outcome: outcome.ms_per_request).name


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
        from . import rag
        from .generation import generate

        model, tokenizer = self.llm(configuration.weights)
        if configuration.qa_method == "rag":
            hits = self.retriever().search_documents_many(list(questions), k=3)
            prompts = [rag.grounded_messages(question, found) for question, found in zip(questions, hits)]
        else:
            prompts = [rag.closed_book_messages(question) for question in questions]
        return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=configuration.batch_size,
                        progress=False, strip=True)

    def answer_with_cache(self, configuration: Configuration, questions: Sequence[str], threshold: float,
                          max_new_tokens: int = ANSWER_MAX_NEW_TOKENS,
                          latencies: list | None = None) -> tuple[list[str], int]:
        """Answer a stream through a semantic cache: look up each batch, generate only the misses.

        When ``latencies`` is a list, the seconds each batch took are appended once per request in it.
        """
        from .caching import SemanticCache

        if threshold is None:
            raise ValueError("A semantic cache needs a threshold: pass the one chosen on calibration pairs "
                             "(notebook 08's semantic_cache_threshold).")
        cache = SemanticCache(embedder=self.embedder(), threshold=threshold)
        answers: list[str] = []
        for start in range(0, len(questions), configuration.batch_size):
            began = time.perf_counter()
            batch = list(questions[start:start + configuration.batch_size])
            cached = [cache.get(question) for question in batch]
            misses = [question for question, hit in zip(batch, cached) if hit is None]
            fresh = iter(self.answer(configuration, misses, max_new_tokens) if misses else [])
            for question, hit in zip(batch, cached):
                if hit is None:
                    hit = next(fresh)
                    cache.put(question, hit)
                answers.append(hit)
            if latencies is not None:
                latencies.extend([time.perf_counter() - began] * len(batch))
        return answers, cache.hits


def evaluate(assistant: Assistant, configuration: Configuration, tickets: Sequence, questions: Sequence,
             stream: Sequence | None = None, cache_threshold: float | None = None) -> Outcome:
    """Run ``configuration`` on the tickets and the question stream; time everything but loading.

    ``questions`` are QA items (with ``question`` and ``keywords``); ``stream`` lists the items
    in arrival order (default: each once). Components are loaded, and one ticket and one
    question run untimed (a warm-up), before the clock starts. Requests are served in batches
    of ``configuration.batch_size`` (tickets first, then the question stream); every request's
    latency is the time its batch took. A configuration with a semantic cache needs
    ``cache_threshold`` (there is no silent default).
    """
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
    texts = [vary(item.question, index) for index, item in enumerate(stream)]
    ticket_texts = [ticket.text for ticket in tickets]
    size = configuration.batch_size
    # warm-up, untimed: first calls pay one-off costs (kernel selection, caches) that are not per-request work
    assistant.triage(configuration, ticket_texts[:1])
    if configuration.semantic_cache:
        assistant.answer_with_cache(configuration, texts[:1], threshold=cache_threshold)
    else:
        assistant.answer(configuration, texts[:1])
    latencies: list[float] = []
    labels: list[str] = []
    start = time.perf_counter()
    for first in range(0, len(ticket_texts), size):
        began = time.perf_counter()
        labels.extend(assistant.triage(configuration, ticket_texts[first:first + size]))
        latencies.extend([time.perf_counter() - began] * len(ticket_texts[first:first + size]))
    cache_hits = 0
    if configuration.semantic_cache:
        answers, cache_hits = assistant.answer_with_cache(configuration, texts, threshold=cache_threshold,
                                                          latencies=latencies)
    else:
        answers = []
        for first in range(0, len(texts), size):
            began = time.perf_counter()
            answers.extend(assistant.answer(configuration, texts[first:first + size]))
            latencies.extend([time.perf_counter() - began] * len(texts[first:first + size]))
    seconds = time.perf_counter() - start
    keyword_lists = [item.keywords for item in stream]
    return Outcome(
        name=configuration.name,
        ticket_accuracy=accuracy(labels, [ticket.label for ticket in tickets]),
        qa_accuracy=keyword_accuracy(answers, keyword_lists),
        requests=len(tickets) + len(stream), seconds=seconds, bytes=assistant.bytes_for(configuration),
        cache_hits=cache_hits, details={"answers": answers, "labels": labels},
        latencies_s=latencies,
        ticket_correct=[int(label == ticket.label) for label, ticket in zip(labels, tickets)],
        qa_correct=[int(answer_contains_keywords(answer, keywords))
                    for answer, keywords in zip(answers, keyword_lists)],
    )


def evaluate_all(assistant: Assistant, configurations: Sequence[Configuration], tickets: Sequence,
                 questions: Sequence, stream: Sequence | None = None,
                 cache_threshold: float | None = None) -> list[Outcome]:
    """:func:`evaluate` for each configuration in turn, with a progress bar."""
    return [evaluate(assistant, configuration, tickets, questions, stream, cache_threshold)
            for configuration in tqdm(configurations, desc="configurations", disable=not assistant.progress)]
