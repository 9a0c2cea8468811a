import json

import pytest
import torch

from helpers import generation, labels, plots, prompting
from helpers import structured_output as so
from helpers.data import LABELS, Ticket


# --- parse_label -----------------------------------------------------------------------------

@pytest.mark.parametrize("answer, label, rule", [
    ("billing", "billing", "exact"),
    ("  Password_Reset.", "password_reset", "exact"),
    ('"sync issue"', "sync_issue", "exact"),
    ("Label: feature-request", "feature_request", "mention"),
    ("This is a refund request about billing", "refund", "mention"),
    ("The customer forgot password and cannot log in", "password_reset", "keyword"),
    ("The user cannot sign in after the update", "login", "keyword"),
    ("They want their money back.", "refund", "keyword"),
    ("Files are not syncing on the laptop", "sync_issue", "keyword"),
    ("biling", "billing", "fuzzy"),
    ("This support ticket is related to the issue of a", "unknown", "none"),
    ("", "unknown", "none"),
])
def test_parse_label_rules(answer, label, rule):
    assert labels.parse_label(answer, with_rule=True) == (label, rule)
    assert labels.parse_label(answer) == label


def test_parse_label_prefers_earliest_mention_and_needs_a_word_boundary():
    assert labels.parse_label("cancel, then refund") == "cancel"
    # "plan" inside "explanation" must not count as a keyword for plan_upgrade.
    assert labels.parse_label("no explanation given") == "unknown"


def test_parse_label_rejects_non_strings():
    with pytest.raises(ValueError, match="string"):
        labels.parse_label(None)


def test_every_label_has_a_description_and_keywords():
    assert set(prompting.LABEL_DESCRIPTIONS) == set(LABELS) == set(labels.LABEL_KEYWORDS)
    for label in LABELS:
        assert labels.parse_label(label) == label


# --- prompts ---------------------------------------------------------------------------------

def test_prompts_carry_the_ticket_and_the_labels():
    ticket = "I was charged twice"
    assert ticket in prompting.bare_prompt(ticket) and "billing" not in prompting.bare_prompt(ticket)
    full = prompting.instruction_prompt(ticket)
    assert ticket in full and all(f"- {label}:" in full for label in LABELS)
    short = prompting.instruction_prompt(ticket, descriptions=False)
    assert all(f"- {label}\n" in short + "\n" for label in LABELS) and len(short) < len(full)


def test_few_shot_messages_alternate_roles():
    examples = [Ticket("a", "billing"), Ticket("b", "refund")]
    messages = prompting.few_shot_messages("c", examples)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "billing" and messages[-1]["content"].endswith("c")


def test_render_chat_ends_at_the_assistant_turn(llm_tokenizer):
    text = generation.render_chat(llm_tokenizer, "hello")
    assert "hello" in text and text.rstrip().endswith("assistant")
    assert generation.count_tokens(llm_tokenizer, text) > 3
    with pytest.raises(ValueError):
        generation.render_chat(llm_tokenizer, [])


# --- example selection -----------------------------------------------------------------------

class _KeywordEmbedder:
    """Embeds a text by counting three marker words: enough to test nearest-neighbour picking."""

    def encode(self, texts, normalize_embeddings=True, convert_to_tensor=True, **_):
        rows = torch.tensor([[t.count("apple"), t.count("pear"), t.count("plum")] for t in texts], dtype=torch.float)
        return torch.nn.functional.normalize(rows + 1e-6, dim=1)


def test_similar_examples_pick_nearest_and_put_the_closest_last():
    pool = [Ticket("apple apple", "billing"), Ticket("pear", "refund"), Ticket("plum", "cancel"),
            Ticket("apple pear", "login")]
    selector = prompting.SimilarExamples(pool, _KeywordEmbedder(), progress=False)
    nearest = selector.nearest(["apple"], k=2)[0]
    assert [example.label for example in nearest] == ["login", "billing"]
    with pytest.raises(ValueError):
        selector.nearest(["apple"], k=5)
    with pytest.raises(ValueError, match="empty"):
        prompting.SimilarExamples([], _KeywordEmbedder())


def test_random_examples_are_seeded_and_sized():
    pool = [Ticket(str(i), LABELS[i % 12]) for i in range(30)]
    first = prompting.random_examples(pool, count=3, k=4, seed=1)
    assert first == prompting.random_examples(pool, count=3, k=4, seed=1)
    assert [len(s) for s in first] == [4, 4, 4] and first[0] != first[1]
    with pytest.raises(ValueError):
        prompting.random_examples(pool, count=1, k=31)


def test_majority_label_breaks_ties_towards_the_most_similar():
    examples = [Ticket("x", "refund"), Ticket("y", "billing"), Ticket("z", "billing")]
    assert prompting.majority_label(examples) == "billing"
    assert prompting.majority_label([Ticket("x", "refund"), Ticket("y", "billing")]) == "billing"


# --- label scoring ---------------------------------------------------------------------------

def _full_sequence_log_likelihood(model, tokenizer, prompt, candidate):
    """Reference: score the candidate by one plain forward pass over prompt + candidate."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    candidate_ids = tokenizer(candidate, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + candidate_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return sum(log_probs[len(prompt_ids) - 1 + i, token].item() for i, token in enumerate(candidate_ids))


def test_score_candidates_matches_a_plain_forward_pass(tiny_llama, llm_tokenizer):
    prompt = generation.render_chat(llm_tokenizer, prompting.instruction_prompt("I was charged twice"))
    candidates = ["billing", "password_reset", "sharing_permissions"]
    scores = prompting.score_candidates(tiny_llama, llm_tokenizer, prompt, candidates)
    expected = [_full_sequence_log_likelihood(tiny_llama, llm_tokenizer, prompt, c) for c in candidates]
    assert scores.log_likelihood == pytest.approx(expected, abs=1e-4)
    assert scores.token_counts == tuple(len(llm_tokenizer(c, add_special_tokens=False).input_ids) for c in candidates)
    assert all(value < 0 for value in scores.log_likelihood)


def test_score_candidates_rejects_bad_input(tiny_llama, llm_tokenizer):
    with pytest.raises(ValueError):
        prompting.score_candidates(tiny_llama, llm_tokenizer, "x", [])
    with pytest.raises(ValueError, match="non-empty"):
        prompting.score_candidates(tiny_llama, llm_tokenizer, "x", ["billing", ""])


def test_pick_label_sum_mean_and_calibration():
    scores = prompting.LabelScores(("a", "b"), (-2.0, -3.0), (1, 3))
    assert prompting.pick_label(scores, labels=("a", "b")) == "a"
    assert prompting.pick_label(scores, labels=("a", "b"), normalise="mean") == "b"  # -2 vs -1 per token
    baseline = prompting.LabelScores(("a", "b"), (-0.5, -4.0), (1, 3))
    assert prompting.pick_label(scores, labels=("a", "b"), baseline=baseline) == "b"  # -1.5 vs +1
    with pytest.raises(ValueError):
        prompting.pick_label(scores, labels=("a", "b"), normalise="max")
    with pytest.raises(ValueError):
        prompting.pick_label(scores, labels=("a",))


def test_generate_keeps_input_order(tiny_llama, llm_tokenizer):
    prompts = [generation.render_chat(llm_tokenizer, text) for text in ["a much longer prompt than the other", "hi"]]
    answers = generation.generate(tiny_llama, llm_tokenizer, prompts, max_new_tokens=2, batch_size=1,
                                  progress=False)
    single = [generation.generate(tiny_llama, llm_tokenizer, [p], max_new_tokens=2, progress=False)[0]
              for p in prompts]
    assert answers == single and len(answers) == 2
    # chat messages are rendered with the chat template, so they give the same answers as rendered text
    chats = [[{"role": "user", "content": text}] for text in ["a much longer prompt than the other", "hi"]]
    assert generation.generate(tiny_llama, llm_tokenizer, chats, max_new_tokens=2, progress=False) == answers


# --- JSON ------------------------------------------------------------------------------------

def test_validate_triage_json():
    good = so.validate_triage_json(' {"label": "refund", "priority": "high"}\n')
    assert good.valid and good.record == {"label": "refund", "priority": "high"} and good.error == ""
    cases = {
        'Sure! {"label": "refund", "priority": "high"}': "not valid JSON",
        '["refund"]': "JSON object",
        '{"label": "refund"}': "missing",
        '{"label": "refund", "priority": "high", "reason": "x"}': "unexpected",
        '{"label": "money", "priority": "high"}': "allowed labels",
        '{"label": "refund", "priority": "urgent"}': "priority",
    }
    for text, reason in cases.items():
        check = so.validate_triage_json(text)
        assert not check.valid and check.record is None and reason in check.error, text
    with pytest.raises(ValueError):
        so.validate_triage_json(None)


@pytest.mark.parametrize("broken", [
    '```json\n{"label": "refund", "priority": "high"}\n```',
    "Here you go: {'label': 'refund', 'priority': 'high'} Hope it helps!",
    '{"label": "Refund", "priority": "High",}',
    '{"label": "refund", "priority": "high"',
    '{"Label": "refund", "priority": "hi',  # cut off by the token limit: closed, but the value is wrong
])
def test_repair_json_fixes_form_not_content(broken):
    repaired = so.repair_json(broken)
    check = so.validate_triage_json(repaired)
    if broken.endswith('"hi'):
        assert not check.valid and "priority" in check.error
    else:
        assert check.valid and check.record == {"label": "refund", "priority": "high"}, repaired


def test_repair_json_never_invents_keys_and_keeps_text_without_braces():
    assert not so.validate_triage_json(so.repair_json('{"label": "refund"}')).valid
    assert so.repair_json("refund, high") == "refund, high"
    assert so.validate_triage_json(so.repair_json('{"label": "password reset", "priority": "low"}')).valid


def test_json_prompts_and_retry():
    examples = [Ticket("charged twice", "refund")]
    messages = so.json_messages("t", examples)
    assert json.loads(messages[2]["content"]) == {"label": "refund", "priority": so.PRIORITY_BY_LABEL["refund"]}
    priorities = so.PRIORITY_BY_LABEL
    assert set(priorities) == set(LABELS) and set(priorities.values()) <= set(so.PRIORITIES)
    assert "priority" in so.json_bare_prompt("t") and "billing" not in so.json_bare_prompt("t")
    retry = so.retry_messages(messages, "oops", "not valid JSON")
    assert retry[:len(messages)] == messages and retry[-2] == {"role": "assistant", "content": "oops"}
    assert "not valid JSON" in retry[-1]["content"]
    assert so.retry_messages("plain", "oops", "e")[0] == {"role": "user", "content": "plain"}


def test_json_validity_rates():
    answers = ['{"label": "refund", "priority": "high"}', "{'label': 'refund', 'priority': 'high'}",
               '{"label": "refund"}', "no json here"]
    rates = so.json_validity(answers)
    assert rates == {"count": 4, "json_object": 0.5, "valid": 0.25, "valid_after_repair": 0.5}
    with pytest.raises(ValueError):
        so.json_validity([])


# --- comparing variants ----------------------------------------------------------------------

def test_evaluate_and_rescore_variants(tiny_llama, llm_tokenizer):
    tickets = [Ticket("charged twice", "billing"), Ticket("cannot sign in", "login")]
    render = lambda ticket: generation.render_chat(llm_tokenizer, prompting.bare_prompt(ticket.text))  # noqa: E731
    generated = prompting.evaluate_generation(tiny_llama, llm_tokenizer, "bare", render, tickets, max_new_tokens=2,
                                              progress=False)
    assert generated.method == "generate" and len(generated.answers) == 2
    assert generated.accuracy == sum(p == t.label for p, t in zip(generated.predictions, tickets)) / 2
    assert generated.prompt_tokens == pytest.approx(
        sum(generation.count_tokens(llm_tokenizer, render(t)) for t in tickets) / 2)

    scored, scores = prompting.evaluate_scoring(tiny_llama, llm_tokenizer, "scored", render, tickets, progress=False)
    assert scored.method == "score" and all(p in LABELS for p in scored.predictions) and len(scores) == 2
    assert scored.predictions == [prompting.pick_label(s) for s in scores]
    # Calibrating against the ticket's own scores leaves all labels tied at 0: the first label wins.
    calibrated = prompting.rescore(scored, "calibrated", scores[:1], tickets[:1], baseline=scores[0])
    assert calibrated.predictions == [LABELS[0]] and calibrated.prompt_tokens == scored.prompt_tokens

    classify = prompting.scoring_classifier(tiny_llama, llm_tokenizer, render)
    assert classify(tickets[0]) == scored.predictions[0]
    assert prompting.generation_classifier(tiny_llama, llm_tokenizer, render, 2)(tickets[1]) == generated.predictions[1]


def test_measure_latency_cycles_through_tickets():
    seen = []
    seconds = prompting.measure_latency(seen.append, ["a", "b"], repeats=3)
    assert seen == ["a", "b", "a", "b"] and seconds >= 0
    with pytest.raises(ValueError):
        prompting.measure_latency(seen.append, [])


def test_variants_table_and_plot(tmp_path):
    rows = [prompting.VariantResult("bare", "generate", ["x"], 0.25, 60.0, 0.5, latency_s=0.4),
            prompting.VariantResult("scored", "score", ["y"], 0.75, 300.0, 0.2)]
    table = prompting.variants_table(rows, sample_size=48)
    assert "| bare | generate | 25.0% | 60 | 0.50 | 0.40 |" in table and "| — |" in table and "2.1%" in table
    assert "48 test tickets" in table
    assert "24 validation tickets" in prompting.variants_table(rows, sample_size=24, split="validation")
    figure = plots.plot_variants(rows, goal=0.4, goal_label="goal", path=tmp_path / "v.png")
    assert (tmp_path / "v.png").stat().st_size > 0 and len(figure.axes) == 3


def test_repair_and_retry_only_re_asks_what_repair_cannot_fix(monkeypatch, llm_tokenizer):
    asked = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size=16, desc="", progress=True):
        asked.extend(prompts)
        return ['refund", "priority": "high"}'] * len(prompts)

    monkeypatch.setattr(so, "generate", fake_generate)
    answers = ["{'label': 'billing', 'priority': 'low'}", "I think it is a refund."]
    conversations = ["first ticket", [{"role": "user", "content": "second ticket"}]]
    final, retried = so.repair_and_retry(None, llm_tokenizer, answers, conversations,
                                                prefill=so.JSON_PREFILL)
    assert retried == 1 and len(asked) == 1
    assert "second ticket" in asked[0] and "not valid JSON" in asked[0] and asked[0].endswith(so.JSON_PREFILL)
    assert [so.validate_triage_json(a).record["label"] for a in final] == ["billing", "refund"]
    with pytest.raises(ValueError):
        so.repair_and_retry(None, llm_tokenizer, answers, conversations[:1])

    tickets = [Ticket("a", "billing"), Ticket("b", "cancel")]
    outcome = so.json_outcome(answers, final, tickets, prompt_tokens=12.0, retried=retried)
    assert outcome["valid"] == 0.0 and outcome["valid_after_repair"] == 0.5 and outcome["valid_after_retry"] == 1.0
    assert outcome["label_accuracy"] == 0.5 and outcome["retried"] == 1
    table = so.json_table({"bare": outcome})
    assert "| bare | 12 | 0% | 0% | 50% | 100% | 1 | 50% |" in table
