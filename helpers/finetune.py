"""Fine-tuning plumbing: a LoRA adapter that teaches the LLM to triage tickets, and a
fully fine-tuned MiniLM ticket classifier (the teacher of the distillation notebook).

The notebooks show the key library calls (``peft.LoraConfig``, ``get_peft_model``,
``AutoModelForSequenceClassification``); this module holds the loops, the data
preparation, the answer parser and the on-disk cache of the classifier.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from . import config
from .data import LABELS, Ticket
from .labels import UNKNOWN, parse_label
from .models import save_trained

# --- the LLM triage task ---------------------------------------------------------------

TRIAGE_INSTRUCTION = (
    "You label Lumen Cloud support tickets. Reply with exactly one label from this list and "
    "nothing else: " + ", ".join(LABELS) + "."
)
LABEL_MAX_NEW_TOKENS = 8  # the longest label ("plan_upgrade") is 4 tokens, plus the end-of-turn token
TICKET_MAX_TOKENS = 96  # tickets are short (99 % under 60 tokens); longer ones are cut, never the answer
LORA_BATCH_SIZE = 4  # small batches: 60 steps x 4 tickets fit the quick profile's CPU budget
# adapters start at zero and train few weights, so they take a larger step than full fine-tuning
LORA_LEARNING_RATE = 1e-3


def triage_messages(ticket_text: str, label: str | None = None) -> list[dict]:
    """The chat for one ticket: the instruction as system turn, the ticket as user turn.

    With ``label`` the assistant's answer is appended (a training example);
    without it the chat ends where the model must answer (an evaluation prompt).
    """
    if not isinstance(ticket_text, str) or not ticket_text.strip():
        raise ValueError("ticket_text must be a non-empty string.")
    messages = [{"role": "system", "content": TRIAGE_INSTRUCTION},
                {"role": "user", "content": f"Ticket: {ticket_text.strip()}"}]
    if label is not None:
        if label not in LABELS:
            raise ValueError(f"Unknown label {label!r}; use one of {', '.join(LABELS)}.")
        messages.append({"role": "assistant", "content": label})
    return messages


def triage_prompt(tokenizer, ticket_text: str) -> str:
    """The prompt text (chat template applied) that asks the model for the ticket's label."""
    return tokenizer.apply_chat_template(triage_messages(_cut_ticket(tokenizer, ticket_text)), tokenize=False,
                                         add_generation_prompt=True)


def _cut_ticket(tokenizer, ticket_text: str, max_tokens: int = TICKET_MAX_TOKENS) -> str:
    ids = tokenizer(ticket_text, add_special_tokens=False).input_ids
    return ticket_text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def score_answers(answers: Sequence[str], gold_labels: Sequence[str]) -> dict:
    """Accuracy and format-valid rate of raw model answers under the strict rule of
    :func:`helpers.labels.parse_label` (the answer must be exactly one label), plus
    ``accuracy_lenient``: the accuracy under the lenient rule notebook 01 uses, for comparison."""
    if len(answers) != len(gold_labels):
        raise ValueError(f"{len(answers)} answers but {len(gold_labels)} gold labels.")
    if not answers:
        raise ValueError("Score at least one answer.")
    parsed = [parse_label(answer, strict=True) for answer in answers]
    lenient = [parse_label(answer) for answer in answers]
    return {
        "accuracy": sum(p == gold for p, gold in zip(parsed, gold_labels)) / len(answers),
        "accuracy_lenient": sum(p == gold for p, gold in zip(lenient, gold_labels)) / len(answers),
        "format_valid_rate": sum(p != UNKNOWN for p in parsed) / len(answers),
        "n": len(answers),
        "parsed": parsed,
    }


def triage_prompts(tokenizer, ticket_texts: Sequence[str]) -> list[str]:
    """:func:`triage_prompt` for each ticket: pass them to :func:`helpers.generation.generate`
    with ``max_new_tokens=LABEL_MAX_NEW_TOKENS``."""
    return [triage_prompt(tokenizer, text) for text in ticket_texts]


def build_lora_examples(tokenizer, tickets: Sequence[Ticket]) -> list[dict]:
    """Token ids and labels for causal-LM training, with the loss on the answer only.

    The prompt tokens get label -100 (ignored by the loss), so the adapter learns to
    *answer*, not to reproduce system prompts and tickets. The answer is the label
    followed by the end-of-turn token, which teaches the model to stop.
    """
    examples = []
    for ticket in tickets:
        prompt = triage_prompt(tokenizer, ticket.text)
        full = tokenizer.apply_chat_template(triage_messages(_cut_ticket(tokenizer, ticket.text), ticket.label),
                                             tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("The chat template does not extend the prompt with the answer; "
                             "use a tokenizer whose template appends the assistant turn.")
        answer = full[len(prompt):].rstrip("\n")
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        examples.append({"input_ids": prompt_ids + answer_ids,
                         "labels": [-100] * len(prompt_ids) + answer_ids})
    return examples


def collate_causal(examples: Sequence[dict], pad_token_id: int):
    """Right-pad a list of examples into ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    import torch

    width = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example["input_ids"])
        input_ids[row, :length] = torch.tensor(example["input_ids"])
        labels[row, :length] = torch.tensor(example["labels"])
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def answer_loss(model, input_ids, attention_mask, labels):
    """Next-token cross-entropy on the labelled (answer) positions only.

    Same value as ``model(..., labels=labels).loss``, but the output layer (576 x 49,152
    for SmolLM2, a fifth of the model's compute per token) runs only where a label is
    scored instead of on every prompt token.
    """
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != -100
    if not scored.any():
        raise ValueError("No answer tokens to score: every label is -100.")
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][scored])
    return torch.nn.functional.cross_entropy(logits.float(), targets[scored])


def train_lora(model, tokenizer, tickets: Sequence[Ticket], steps: int, batch_size: int = LORA_BATCH_SIZE,
               learning_rate: float = LORA_LEARNING_RATE, warmup_steps: int = 5, seed: int = 0,
               progress: bool = True) -> list[float]:
    """Train the trainable parameters of ``model`` (a peft model) on the triage task.

    A plain AdamW loop: ``steps`` batches drawn in a seeded shuffled order (reshuffled
    every pass over the data), linear warm-up then linear decay. Returns the loss of
    every step.
    """
    import torch

    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be at least 1.")
    if not tickets:
        raise ValueError("Pass at least one training ticket.")
    config.seed_everything(seed)
    examples = build_lora_examples(tokenizer, tickets)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not trainable:
        raise ValueError("The model has no trainable parameters; wrap it with peft.get_peft_model first.")
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / max(warmup_steps, 1),
                                    max(0.0, (steps - step) / max(steps - warmup_steps, 1))))
    order_rng = random.Random(seed)
    order: list[int] = []
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="LoRA steps", disable=not progress):
        if len(order) < batch_size:
            refill = list(range(len(examples)))
            order_rng.shuffle(refill)
            order += refill
        batch_indices, order = order[:batch_size], order[batch_size:]
        batch = collate_causal([examples[i] for i in batch_indices], tokenizer.pad_token_id)
        loss = answer_loss(model, **{key: value.to(device) for key, value in batch.items()})
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def trainable_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (tied weights counted once)."""
    seen, trainable, total = set(), 0, 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total


def folder_bytes(path: Path | str) -> dict[str, int]:
    """Size in bytes of every file under ``path``, keyed by relative path."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder.")
    return {str(file.relative_to(root)): file.stat().st_size for file in sorted(root.rglob("*")) if file.is_file()}


def saved_adapter_files(peft_model) -> dict[str, int]:
    """Save the adapter with ``save_pretrained`` into a temporary folder; return its file sizes."""
    with tempfile.TemporaryDirectory() as folder:
        peft_model.save_pretrained(folder)
        return folder_bytes(folder)


# --- the MiniLM ticket classifier ------------------------------------------------------

CLASSIFIER_CACHE_NAME = "ticket-classifier-minilm"
CLASSIFIER_MAX_TOKENS = 128
CLASSIFIER_BATCH_SIZE = 16
CLASSIFIER_LEARNING_RATE = 3e-4  # a small encoder tolerates a larger step than BERT-base's usual 2e-5..5e-5
_CLASSIFIER_FORMAT = 1  # bump when the training recipe changes, so cached models are retrained


def label_maps() -> tuple[dict[int, str], dict[str, int]]:
    """``(id2label, label2id)`` for the 12 ticket labels, in :data:`helpers.data.LABELS` order."""
    id2label = dict(enumerate(LABELS))
    return id2label, {label: index for index, label in id2label.items()}


def classifier_cache_dir() -> Path:
    """Where :func:`load_or_train_ticket_classifier` keeps the trained classifier."""
    return config.cache_dir() / CLASSIFIER_CACHE_NAME


def train_sequence_classifier(model, tokenizer, tickets: Sequence[Ticket], epochs: int,
                              batch_size: int = CLASSIFIER_BATCH_SIZE, learning_rate: float = CLASSIFIER_LEARNING_RATE,
                              seed: int = 0, loss_fn=None, teacher_logits=None, progress: bool = True,
                              desc: str = "epoch") -> list[float]:
    """Fine-tune every weight of a sequence classifier on tickets; return the loss per step.

    AdamW with linear warm-up (first 10 % of steps) and linear decay; batches in a
    seeded shuffled order. ``loss_fn(logits, labels, teacher_logits)`` replaces the
    cross-entropy when given (the distillation notebook passes its soft-target loss
    and the teacher's logits, one row per ticket).
    """
    import torch

    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1.")
    if not tickets:
        raise ValueError("Pass at least one training ticket.")
    if teacher_logits is not None and len(teacher_logits) != len(tickets):
        raise ValueError(f"{len(teacher_logits)} teacher rows for {len(tickets)} tickets.")
    config.seed_everything(seed)
    _, label2id = label_maps()
    encoded = tokenizer([ticket.text for ticket in tickets], truncation=True, max_length=CLASSIFIER_MAX_TOKENS)
    label_ids = torch.tensor([label2id[ticket.label] for ticket in tickets])
    lengths = [len(ids) for ids in encoded["input_ids"]]
    steps_per_epoch = -(-len(tickets) // batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, total_steps // 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(total_steps - warmup, 1))))
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    losses = []
    model.train()
    with tqdm(total=total_steps, desc=desc, disable=not progress) as bar:
        for epoch in range(epochs):
            for batch_indices in _length_grouped_batches(lengths, batch_size, generator):
                rows = batch_indices.tolist()
                batch = _pad_batch([encoded["input_ids"][i] for i in rows], tokenizer.pad_token_id, device)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                labels = label_ids[batch_indices].to(device)
                if loss_fn is None:
                    loss = torch.nn.functional.cross_entropy(logits, labels)
                else:
                    loss = loss_fn(logits, labels, None if teacher_logits is None
                                   else teacher_logits[batch_indices].to(device))
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                bar.update()
    model.eval()
    return losses


def _length_grouped_batches(lengths: Sequence[int], batch_size: int, generator, group_batches: int = 8):
    """Seeded batches of indices in which tickets of similar length sit together.

    Shuffle, cut into groups of ``group_batches`` batches, sort each group by length,
    split it into batches and shuffle the batch order: batches stay random, but far
    less of each batch is padding (a third of the compute on these short tickets).
    """
    import torch

    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for group in order.split(batch_size * group_batches):
        ranked = sorted(group.tolist(), key=lambda index: lengths[index])
        batches += [torch.tensor(ranked[i:i + batch_size]) for i in range(0, len(ranked), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _pad_batch(sequences: Sequence[Sequence[int]], pad_token_id: int, device) -> dict:
    """Right-pad token id lists into ``input_ids`` and ``attention_mask`` tensors."""
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def _quiet_transformers():
    """A context manager that silences transformers' load reports (we print our own summary)."""
    import contextlib

    from transformers.utils import logging as transformers_logging

    @contextlib.contextmanager
    def quiet():
        previous = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            yield
        finally:
            transformers_logging.set_verbosity(previous)
    return quiet()


def classifier_logits(model, tokenizer, texts: Sequence[str], batch_size: int = 64, progress: bool = False):
    """Logits of a sequence classifier for ``texts`` (a float tensor, one row per text)."""
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    device = next(model.parameters()).device
    rows = []
    model.eval()
    for start in tqdm(range(0, len(texts), batch_size), desc="classify", disable=not progress, leave=False):
        batch = tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=CLASSIFIER_MAX_TOKENS,
                          padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            rows.append(model(**batch).logits.float().cpu())
    if not rows:
        raise ValueError("Pass at least one text.")
    return torch.cat(rows)


def classify(model, tokenizer, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> list[str]:
    """Predicted label for each text."""
    id2label, _ = label_maps()
    return [id2label[index] for index in
            classifier_logits(model, tokenizer, texts, batch_size, progress).argmax(dim=-1).tolist()]


def new_ticket_classifier(source: str | None = None, seed: int = 0):
    """MiniLM (or ``source``) with a fresh 12-way classification head: ``(model, tokenizer)``.

    ``BertForSequenceClassification`` classifies from the [CLS] position through
    BERT's pooler (dense + tanh) and a linear layer; the head is initialised from ``seed``.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from . import models

    source = source or models.embedder_source()
    id2label, label2id = label_maps()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    with _quiet_transformers():  # the new head is reported as "missing from the checkpoint", as expected
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(LABELS), id2label=id2label, label2id=label2id, use_safetensors=True)
    return model.to(config.device()), tokenizer


def _classifier_recipe(source: str, epochs: int, seed: int, train_size: int) -> dict:
    return {"format": _CLASSIFIER_FORMAT, "source": str(source), "epochs": epochs, "seed": seed,
            "train_tickets": train_size, "batch_size": CLASSIFIER_BATCH_SIZE,
            "learning_rate": CLASSIFIER_LEARNING_RATE}


def load_or_train_ticket_classifier(epochs: int | None = None, seed: int = 0, retrain: bool = False,
                                    cache_path: Path | str | None = None, source: str | None = None,
                                    progress: bool = True):
    """The fine-tuned MiniLM ticket classifier: ``(model, tokenizer)``, in eval mode.

    Loads it from ``cache_path`` (default :func:`classifier_cache_dir`) when a model
    trained with the same recipe (source, epochs, seed, training set size) is there;
    otherwise (or with ``retrain=True``) fine-tunes every weight on the train split for
    ``epochs`` (default ``profile().classifier_epochs``) and saves it. Training is
    seeded, so the same recipe on the same machine gives the same weights.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from . import data, models

    epochs = epochs or config.profile().classifier_epochs
    source = source or models.embedder_source()
    cache_path = Path(cache_path) if cache_path else classifier_cache_dir()
    train_tickets = data.load_tickets("train")
    recipe = _classifier_recipe(source, epochs, seed, len(train_tickets))
    recipe_file = cache_path / "workbook_recipe.json"
    if not retrain and recipe_file.exists() and json.loads(recipe_file.read_text(encoding="utf-8")) == recipe:
        tokenizer = AutoTokenizer.from_pretrained(cache_path)
        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(cache_path, use_safetensors=True)
        print(f"Loaded the ticket classifier from {cache_path} ({epochs} epochs, seed {seed}).")
        return model.to(config.device()).eval(), tokenizer
    model, tokenizer = new_ticket_classifier(source, seed=seed)
    losses = train_sequence_classifier(model, tokenizer, train_tickets, epochs=epochs, seed=seed,
                                       progress=progress, desc="fine-tune MiniLM")
    save_trained(model, tokenizer, cache_path, {"training_losses.json": losses, "workbook_recipe.json": recipe})
    print(f"Trained the ticket classifier ({epochs} epochs on {len(train_tickets)} tickets) "
          f"and saved it to {cache_path}.")
    return model.eval(), tokenizer


def classifier_training_losses(cache_path: Path | str | None = None) -> list[float]:
    """Per-step training losses saved beside the cached classifier (empty if none)."""
    path = Path(cache_path or classifier_cache_dir()) / "training_losses.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


# --- the classical baseline ------------------------------------------------------------

def tfidf_baseline(train_tickets: Sequence[Ticket], C: float = 1.0):
    """A fitted TF-IDF + logistic-regression ticket classifier (scikit-learn pipeline).

    Features: word 1-2-grams and character 2-5-grams inside words (robust to typos),
    both with sublinear term frequency. Call ``.predict(texts)`` on the result.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    if not train_tickets:
        raise ValueError("Pass at least one training ticket.")
    features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    pipeline = make_pipeline(features, LogisticRegression(C=C, max_iter=2000))
    return pipeline.fit([ticket.text for ticket in train_tickets], [ticket.label for ticket in train_tickets])


# --- choosing a technique --------------------------------------------------------------

def _measured(results: dict, key: str, as_percent: bool = True) -> str | None:
    entry = results.get(key)
    if not entry or not isinstance(entry.get("value"), (int, float)):
        return None
    value = entry["value"]
    return f"{value:.0%}" if as_percent else f"{value:,.0f}"


def technique_table(prompting: dict, rag: dict, fine_tuning: dict) -> str:
    """A Markdown table: what prompting, RAG and fine-tuning change, cost and achieved here.

    Each argument is a notebook's recorded results (``helpers.results.load_results``);
    an empty dict means that notebook has not run yet, and the table says so.
    """
    def pick(results: dict, notebook: str, parts: list[tuple[str, str, bool]]) -> str:
        shown = [f"{label} {value}" for label, key, percent in parts
                 if (value := _measured(results, key, percent)) is not None]
        return "; ".join(shown) if shown else f"run notebook {notebook} first"

    rows = [
        ("Prompt engineering", "how the model is asked (instructions, examples, output format)",
         "no training; every call pays for the longer prompt",
         pick(prompting, "01", [("zero-shot", "accuracy_zero_shot", True),
                                ("best prompt", "accuracy_best_prompt", True),
                                ("best prompt tokens", "prompt_tokens_best", False)])),
        ("RAG", "what the model knows at answer time (retrieved documents)",
         "an index to build and keep fresh; longer prompts; retrieval latency",
         pick(rag, "02", [("recall@5", "recall_at_5", True), ("closed-book", "answer_accuracy_closed_book", True),
                          ("with RAG", "answer_accuracy_rag", True)])),
        ("Fine-tuning (LoRA / full)", "how the model behaves (task, format, style) — stored in weights",
         "labelled examples and a training run; retrain when the task changes",
         pick(fine_tuning, "03", [("LLM before", "llm_accuracy_before_lora", True),
                                  ("after LoRA", "llm_accuracy_after_lora", True),
                                  ("MiniLM classifier", "classifier_accuracy", True)])),
    ]
    lines = ["| technique | changes | costs | measured in this workbook |", "|---|---|---|---|"]
    lines += [f"| {name} | {changes} | {costs} | {measured} |" for name, changes, costs, measured in rows]
    return "\n".join(lines)
