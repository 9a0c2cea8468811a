import pytest

from helpers import assistant


def test_configuration_rejects_unknown_methods():
    with pytest.raises(ValueError, match="ticket_method"):
        assistant.Configuration("x", ticket_method="magic")
    with pytest.raises(ValueError, match="identifier"):
        assistant.Configuration("two words")
    with pytest.raises(ValueError, match="batch_size"):
        assistant.Configuration("x", batch_size=0)


def test_request_stream_repeats_the_asked_fraction_of_earlier_questions():
    questions = list(range(20))
    stream = assistant.request_stream(questions, repeat_fraction=0.5, seed=1)
    assert len(stream) == 40 and sorted(set(stream)) == questions
    assert stream[0] == questions[0]
    assert assistant.request_stream(questions, 0.0) == questions
    with pytest.raises(ValueError):
        assistant.request_stream(questions, 1.0)


def test_repeats_come_after_the_first_ask():
    stream = assistant.request_stream(list("abcdefgh"), repeat_fraction=0.6, seed=3)
    first_seen = {}
    for position, item in enumerate(stream):
        first_seen.setdefault(item, position)
    original_order = sorted(first_seen, key=first_seen.get)
    assert original_order == list("abcdefgh")


def test_pareto_front():
    # (ms, accuracy): b dominates a; c is slower but better; d is dominated by c
    points = [(100, 0.5), (80, 0.6), (300, 0.9), (400, 0.85)]
    assert assistant.pareto_front(points) == [1, 2]


def test_best_configuration_prefers_fast_among_near_ties():
    outcomes = [assistant.Outcome("slow", 0.9, 0.9, 10, 10.0, 1), assistant.Outcome("fast", 0.895, 0.9, 10, 1.0, 1),
                assistant.Outcome("bad", 0.1, 0.1, 10, 0.1, 1)]
    assert assistant.best_configuration(outcomes) == "fast"
    with pytest.raises(ValueError):
        assistant.best_configuration([])


def test_vary_keeps_the_question_recognisable():
    variants = {assistant.vary("How do I reset my password?", i) for i in range(4)}
    assert len(variants) == 4
    assert all("reset my password" in variant.lower() for variant in variants)


def test_few_shot_triage_puts_similar_examples_in_the_prompt(monkeypatch):
    from transformers import AutoTokenizer

    from helpers import generation, models
    from helpers.data import Ticket

    tokenizer = AutoTokenizer.from_pretrained(models.resolve_llm())
    examples = [Ticket(text="I was charged twice this month.", label="billing"),
                Ticket(text="Please give my money back.", label="refund")]

    class FixedSelector:
        def nearest(self, texts, k):
            assert k == assistant.FEW_SHOT_EXAMPLES
            return [examples for _ in texts]

    seen = {}

    def fake_generate(model, tokenizer, rendered, max_new_tokens, batch_size, progress):
        seen["prompts"] = rendered
        return ["refund"] * len(rendered)

    helper = assistant.Assistant(progress=False)
    monkeypatch.setattr(helper, "llm", lambda weights: ("model", tokenizer))
    monkeypatch.setattr(helper, "example_selector", lambda: FixedSelector())
    monkeypatch.setattr(generation, "generate", fake_generate)
    labels = helper.triage(assistant.Configuration("x", ticket_method="few_shot_similar"), ["Refund me, please."])
    assert labels == ["refund"]
    prompt = seen["prompts"][0]
    assert prompt.index("charged twice") < prompt.index("money back") < prompt.index("Refund me, please.")


class _FakeAssistant(assistant.Assistant):
    """Answers instantly without models; counts calls so the warm-up is visible."""

    def __init__(self):
        super().__init__(progress=False)
        self.calls = []

    def bytes_for(self, configuration):
        return 123

    def retriever(self):
        return None

    def triage(self, configuration, ticket_texts):
        self.calls.append(("triage", len(ticket_texts)))
        return ["billing" if "charged" in text else "other" for text in ticket_texts]

    def answer(self, configuration, questions, max_new_tokens=assistant.ANSWER_MAX_NEW_TOKENS):
        self.calls.append(("answer", len(questions)))
        return ["It costs 5 EUR per month." if "plus" in question.lower() else "I do not know."
                for question in questions]

    def embedder(self):
        class Exact:  # identical text -> identical vector, different text -> orthogonal-ish
            def encode(self, texts, batch_size=32, **_):
                import numpy as np

                return np.array([[hash(text.lower().strip(" ?")) % 97 + 1.0, 1.0] for text in texts])
        return Exact()


def _workload():
    from helpers.data import QAItem, Ticket

    tickets = [Ticket(text="I was charged twice.", label="billing"), Ticket(text="App crashes.", label="bug")]
    questions = [QAItem(id="q1", question="How much is Plus?", answer="5 EUR", doc_id="kb-1", keywords=["5 EUR"]),
                 QAItem(id="q2", question="Where is the trash?", answer="Settings", doc_id="kb-2",
                        keywords=["Settings"])]
    return tickets, questions


def test_evaluate_refuses_a_semantic_cache_without_a_threshold():
    tickets, questions = _workload()
    cached = assistant.Configuration("cached", semantic_cache=True)
    with pytest.raises(ValueError, match="cache_threshold"):
        assistant.evaluate(_FakeAssistant(), cached, tickets, questions)


def test_evaluate_warms_up_then_times_every_request():
    tickets, questions = _workload()
    helper = _FakeAssistant()
    outcome = assistant.evaluate(helper, assistant.Configuration("plain"), tickets, questions)
    # one untimed ticket and question first, then one call per request at batch size 1
    assert helper.calls == [("triage", 1), ("answer", 1), ("triage", 1), ("triage", 1), ("answer", 1), ("answer", 1)]
    assert len(outcome.latencies_s) == outcome.requests == 4
    assert outcome.ticket_correct == [1, 0] and outcome.qa_correct == [1, 0]
    assert outcome.accuracy == 0.5 and outcome.correct == [1, 0, 1, 0]
    assert outcome.throughput_rps == pytest.approx(4 / outcome.seconds)
    assert outcome.latency_p50_ms <= outcome.latency_p95_ms


def test_latency_percentiles_are_per_request_not_total_over_count():
    outcome = assistant.Outcome("x", 1.0, 1.0, requests=4, seconds=2.0, bytes=1,
                                latencies_s=[0.1, 0.1, 0.1, 1.7])
    assert outcome.throughput_rps == 2.0
    assert outcome.latency_p50_ms == pytest.approx(100.0)
    assert outcome.latency_p95_ms == pytest.approx(1000 * (0.1 + 0.85 * 1.6))
    with pytest.raises(ValueError, match="latencies"):
        assistant.Outcome("y", 1.0, 1.0, 1, 1.0, 1).latency_p95_ms


def test_batched_requests_share_their_batch_latency():
    tickets, questions = _workload()
    helper = _FakeAssistant()
    outcome = assistant.evaluate(helper, assistant.Configuration("b", batch_size=2), tickets, questions)
    assert helper.calls[2:] == [("triage", 2), ("answer", 2)]
    assert outcome.latencies_s[0] == outcome.latencies_s[1]
    assert outcome.latencies_s[2] == pytest.approx(outcome.latencies_s[3], abs=1e-3)  # lookups differ by microseconds


def test_configuration_rejects_an_unknown_scheduler():
    with pytest.raises(ValueError, match="scheduler"):
        assistant.Configuration("x", scheduler="magic")


def test_request_texts_word_repeats_as_paraphrases():
    _, questions = _workload()
    stream = [questions[0], questions[1], questions[0], questions[1]]
    texts = assistant.request_texts(stream, {"q1": "What does the Plus plan cost?"})
    assert texts[:2] == ["How much is Plus?", "Where is the trash?"]
    assert texts[2] == "What does the Plus plan cost?"
    assert texts[3] != "Where is the trash?" and "where is the trash" in texts[3].lower()  # no paraphrase: retyped


class _CountingCache:
    """Exact-match stand-in for SemanticCache: records the order of lookups and inserts."""

    def __init__(self):
        self.store, self.log = {}, []

    def get(self, question):
        self.log.append(("get", question))
        return self.store.get(question)

    def put(self, question, answer):
        self.log.append(("put", question))
        self.store[question] = answer


def test_static_serving_looks_up_each_request_and_stores_each_batch_when_done():
    helper = _FakeAssistant()
    cache = _CountingCache()
    questions = ["How much is Plus?", "Where is the trash?", "How much is Plus?", "How much is Plus?"]
    configuration = assistant.Configuration("b", batch_size=2)
    answers, latencies, hits = helper.serve_questions(configuration, questions, cache)
    # the first batch (requests 0 and 1) is stored before request 2 is looked up, so 2 and 3 hit
    assert hits == 2 and helper.calls == [("answer", 2)]
    assert answers[2] == answers[3] == answers[0] == "It costs 5 EUR per month."
    assert cache.log.index(("put", "How much is Plus?")) < 4 and len(latencies) == 4


def test_static_serving_misses_a_repeat_whose_original_is_still_in_its_batch():
    helper = _FakeAssistant()
    cache = _CountingCache()
    answers, _, hits = helper.serve_questions(assistant.Configuration("b", batch_size=4),
                                              ["How much is Plus?", "How much is Plus?"], cache)
    assert hits == 0 and helper.calls == [("answer", 2)] and answers[0] == answers[1]


def test_continuous_serving_answers_a_repeat_from_the_cache_once_its_original_is_done(monkeypatch):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from helpers import generation, models

    tokenizer = AutoTokenizer.from_pretrained(models.resolve_llm())
    torch.manual_seed(0)
    tiny = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1,
                                        vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)).eval()
    helper = _FakeAssistant()
    monkeypatch.setattr(helper, "llm", lambda weights: (tiny, tokenizer))
    cache = _CountingCache()
    questions = ["How much is Plus?", "Where is the trash?", "How much is Plus?"]
    configuration = assistant.Configuration("c", batch_size=2, scheduler="continuous")
    answers, latencies, hits = helper.serve_questions(configuration, questions, cache, max_new_tokens=4)
    # 0 and 1 take the two slots at once; 2's turn comes when a slot frees, after 0 (or 1) was stored
    assert hits == 1 and answers[2] == answers[0] and len(latencies) == 3
    expected = generation.generate_greedy(tiny, tokenizer, [generation.render_chat(
        tokenizer, helper.question_prompts(configuration, questions[:1])[0])], 4, chat=False)[0].strip()
    assert answers[0] == expected  # the scheduler's answer is the plain greedy answer
