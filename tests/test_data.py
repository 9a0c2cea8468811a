import json
from collections import Counter

import pytest

from helpers import data


@pytest.fixture(scope="module")
def kb():
    return data.load_kb()


def test_kb_has_enough_articles_with_unique_ids(kb):
    assert len(kb) >= 40
    ids = [doc.id for doc in kb]
    assert len(set(ids)) == len(ids)
    assert all(doc.title and len(doc.text.split()) > 80 for doc in kb)


def test_qa_points_at_real_articles_and_keywords_are_in_them(kb):
    qa = data.load_qa()
    assert len(qa) >= 150
    texts = {doc.id: doc.text.lower() for doc in kb}
    assert len({item.id for item in qa}) == len(qa)
    for item in qa:
        assert item.doc_id in texts, item.id
        assert item.keywords, item.id
        for keyword in item.keywords:
            assert keyword.lower() in texts[item.doc_id], (item.id, keyword)
            assert keyword.lower() in item.answer.lower(), (item.id, keyword)


def test_tickets_cover_the_twelve_labels_in_every_split():
    sizes = {}
    for split in data.SPLITS:
        tickets = data.load_tickets(split)
        sizes[split] = len(tickets)
        counts = Counter(ticket.label for ticket in tickets)
        assert set(counts) == set(data.LABELS), split
        assert max(counts.values()) - min(counts.values()) <= 2, split  # balanced
    assert sum(sizes.values()) >= 1500


def test_ticket_splits_share_no_text():
    texts = {split: {ticket.text.strip().lower() for ticket in data.load_tickets(split)} for split in data.SPLITS}
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]


def test_cache_pairs_have_both_kinds():
    pairs = data.load_cache_pairs()
    kinds = Counter(pair["kind"] for pair in pairs)
    assert kinds["paraphrase"] >= 60 and kinds["near_miss"] >= 60
    assert all(pair["same"] == (pair["kind"] == "paraphrase") for pair in pairs)


def test_cache_pair_splits_are_disjoint_and_ids_unique():
    pairs = data.load_cache_pairs()
    assert len({pair["id"] for pair in pairs}) == len(pairs)
    by_split = {split: data.load_cache_pairs(split) for split in data.CACHE_PAIR_SPLITS}
    assert sum(len(rows) for rows in by_split.values()) == len(pairs)  # every pair has a known split
    other = by_split["other_topics"]
    assert Counter(pair["kind"] for pair in other) == {"paraphrase": 40, "near_miss": 40}
    seen = {(pair["a"].lower(), pair["b"].lower()) for split in ("calibration", "test") for pair in by_split[split]}
    assert not any((pair["a"].lower(), pair["b"].lower()) in seen for pair in other)
    with pytest.raises(data.DataError, match="other_topics"):
        data.load_cache_pairs("validation")


def test_unknown_split_and_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(data.DataError, match="train, validation, test"):
        data.load_tickets("dev")
    with pytest.raises(data.DataError, match="complete clone"):
        data.load_qa(tmp_path)
    (tmp_path / "qa.jsonl").write_text('{"id": "q1"\n')
    with pytest.raises(data.DataError, match="qa.jsonl:1"):
        data.load_qa(tmp_path)
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "a.md").write_text("no front matter")
    with pytest.raises(data.DataError, match="front matter"):
        data.load_kb(tmp_path)


def test_stratified_sample_balances_labels():
    sample = data.stratified_sample(data.load_tickets("test"), 48, seed=0)
    counts = Counter(ticket.label for ticket in sample)
    assert len(sample) == 48 and set(counts.values()) == {4}
    assert sample == data.stratified_sample(data.load_tickets("test"), 48, seed=0)


def test_anchors_file_is_valid_json_with_sources():
    anchors = json.loads((data.DATA_DIR / "anchors.json").read_text())
    assert anchors["anchors"]["gpt3_fp32"]["value"] == 700e9


def test_a_bad_qa_or_ticket_row_names_the_key_file_and_line(tmp_path):
    good = {"id": "q1", "question": "Q?", "answer": "A.", "doc_id": "kb-001", "keywords": ["a"]}
    (tmp_path / "qa.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "questoin": "typo"}) + "\n")
    with pytest.raises(data.DataError, match=r"qa\.jsonl:2: unexpected key\(s\) \['questoin'\]"):
        data.load_qa(tmp_path)
    (tmp_path / "qa.jsonl").write_text(json.dumps({k: v for k, v in good.items() if k != "doc_id"}) + "\n")
    with pytest.raises(data.DataError, match=r"qa\.jsonl:1: missing key\(s\) \['doc_id'\]"):
        data.load_qa(tmp_path)
    (tmp_path / "tickets").mkdir()
    (tmp_path / "tickets" / "test.jsonl").write_text('{"text": "hi", "label": "billing"}\n{"text": "hi"}\n')
    with pytest.raises(data.DataError, match=r"test\.jsonl:2: missing key\(s\) \['label'\]"):
        data.load_tickets("test", tmp_path)
