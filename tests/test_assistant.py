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
    assert outcomes[0].ms_per_request == 1000.0
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
