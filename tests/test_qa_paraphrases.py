import re

import pytest

from helpers import data


def _words(text):
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_every_test_question_has_one_reworded_paraphrase_that_keeps_its_facts():
    questions = {item.id: item for item in data.qa_split(data.load_qa(), "test")}
    paraphrases = data.load_qa_paraphrases()
    assert set(paraphrases) == set(questions)
    for qa_id, paraphrase in paraphrases.items():
        question = questions[qa_id].question
        assert _words(paraphrase) != _words(question), qa_id  # more than case, spaces and punctuation
        # the facts that decide the answer survive: numbers, error codes and plan names of the question
        for fact in re.findall(r"\b(?:[A-Z]{2}-\d{4}|\d+(?:\.\d+)?|Free|Plus|Pro|Business)\b", question):
            assert fact.lower() in paraphrase.lower(), (qa_id, fact)


def test_a_bad_paraphrase_file_names_the_line(tmp_path):
    (tmp_path / "qa_paraphrases.jsonl").write_text('{"id": "q1", "paraphrase": "a"}\n{"id": "q1", "text": "b"}\n')
    with pytest.raises(data.DataError, match=":2"):
        data.load_qa_paraphrases(tmp_path)
    (tmp_path / "qa_paraphrases.jsonl").write_text('{"id": "q1", "paraphrase": "a"}\n{"id": "q1", "paraphrase": "b"}\n')
    with pytest.raises(data.DataError, match="twice"):
        data.load_qa_paraphrases(tmp_path)
