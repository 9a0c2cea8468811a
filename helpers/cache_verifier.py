"""Rule-based checks for what sentence embeddings miss, as a second stage of a semantic cache.

Two support questions can be almost identical in wording and need different answers:
"turn on" vs "turn off", "the Plus plan" vs "the Pro plan", "error LC-4012" vs "LC-4018",
"move from Windows to Mac" vs "from Mac to Windows". An embedding scores such pairs
close to 1.0, so a cache that trusts similarity alone serves the wrong answer. Production
caches verify a candidate before serving it; :func:`verify` is the cheap, transparent part
of such a verifier: it *vetoes* a candidate when the two questions disagree on

- **negation** — one is negated ("can't", "not", "unable", "without", ...) and the other is not;
- **opposite actions** — both name an action on the same axis, on opposite poles and none in common
  (enable/disable, on/off, import/export, upload/download, upgrade/downgrade, share/unshare,
  add/remove, lock/unlock, ...); a question that names no pole on an axis is not vetoed;
- **numbers** — the numbers (digits or words, "10 GB" = "10GB", "1,000" = "1000") differ;
- **plan names** — the Lumen Cloud plans (Free, Plus, Pro, Business) named differ;
- **error codes** — codes such as ``LC-4012`` differ;
- **entities and direction** — different platforms / roles, or the same ones in swapped order
  ("from Windows to Mac" vs "from Mac to Windows").

Otherwise it returns ``same=True``: the rules found no reason to refuse, which is not proof
of equal meaning (the embedding threshold, or a trained cross-encoder, decides the rest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NEGATIONS = frozenset({"not", "no", "never", "cannot", "cant", "can't", "unable", "without", "nothing", "none",
                       "nobody", "nowhere", "neither", "nor", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt",
                       "werent", "wont", "shouldnt", "couldnt", "wouldnt", "havent", "hasnt", "hadnt"})

# Each axis: (name, phrases of one pole, phrases of the opposite pole); phrases are matched as whole words.
ANTONYM_AXES = (
    ("on/off", ("turn on", "switch on", "toggle on", "enable", "enabled", "activate", "activated", "set up",
                "start", "resume", "allow", "opt in", "on"),
               ("turn off", "switch off", "toggle off", "disable", "disabled", "deactivate", "deactivated",
                "pause", "stop", "block", "opt out", "off")),
    ("import/export", ("import", "imports", "importing", "bring in"),
                      ("export", "exports", "exporting", "take out")),
    ("upload/download", ("upload", "uploads", "uploading"), ("download", "downloads", "downloading")),
    ("upgrade/downgrade", ("upgrade", "upgrading", "move up"), ("downgrade", "downgrading", "move down")),
    ("share/unshare", ("share", "sharing", "shared"), ("unshare", "unsharing", "stop sharing", "revoke")),
    ("add/remove", ("add", "adding", "invite"), ("remove", "removing", "delete", "deleting", "kick out")),
    ("lock/unlock", ("lock", "encrypt"), ("unlock", "decrypt")),  # actions only: "locked" is a state
    ("install/uninstall", ("install", "installing", "reinstall"), ("uninstall", "uninstalling", "remove the app")),
    ("link/unlink", ("link my", "connect"), ("unlink", "disconnect")),
    ("monthly/annual", ("monthly", "per month", "a month", "each month"),
                       ("annual", "annually", "yearly", "per year", "a year", "each year")),
    ("view/edit", ("view-only", "view only", "read-only", "read only", "can view"),
                  ("editable", "can edit", "edit access", "edit rights")),
    ("inside/outside", ("inside", "internal", "in my team"), ("outside", "external")),
    ("before/after", ("before", "within"), ("after",)),
    ("restore/purge", ("restore", "recover", "undelete", "get back"),
                      ("permanently delete", "delete forever", "purge", "erase")),
    ("increase/decrease", ("increase", "raise", "more", "higher", "extend"),
                          ("decrease", "lower", "less", "fewer", "reduce", "shorten")),
    ("archive/restore", ("archive", "trash", "move to trash"), ("restore", "recover", "unarchive", "undelete")),
    ("sign in/out", ("sign in", "log in", "login", "signin"), ("sign out", "log out", "logout", "signout")),
)
# "on" as a preposition ("on my phone") would flip the on/off axis: only count it right after these verbs.
_ON_OFF_VERBS = ("turn", "turned", "turning", "switch", "switched", "toggle", "toggled", "put", "keep", "leave")

PLANS = ("free", "plus", "pro", "business")
PLATFORMS = {"windows": "windows", "mac": "mac", "macos": "mac", "linux": "linux", "ios": "ios", "iphone": "ios",
             "ipad": "ios", "android": "android", "web": "web", "browser": "web", "chromebook": "chromeos"}
ROLES = {"owner": "owner", "owners": "owner", "admin": "admin", "admins": "admin", "administrator": "admin",
         "editor": "editor", "editors": "editor", "viewer": "viewer", "viewers": "viewer", "member": "member",
         "members": "member", "guest": "guest", "guests": "guest"}
# "one" and "single" are left out: mostly pronouns ("from one folder to another"), not quantities.
NUMBER_WORDS = {"zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
                "fifty": 50, "hundred": 100, "thousand": 1000, "twice": 2, "double": 2}
_ROUTE = re.compile(r"\bfrom (?:the |a |an |my )?([\w-]+)(?: \w+)? (?:to|into) (?:the |a |an |my )?([\w-]+)")
NEGATION_OVERLAP = 0.5  # content-word Jaccard overlap above which a one-sided negation vetoes
_ERROR_CODE = re.compile(r"\b([a-z]{2,4})-?(\d{3,5})\b")
_PLAN = re.compile(r"\b(plus|pro|business)\b|\b(free)(?= (?:plan|tier|account|subscription|version|users?)\b)")


@dataclass(frozen=True)
class Verdict:
    """Whether a cached answer for one question may be served for the other, and why not."""

    same: bool
    reasons: tuple[str, ...] = ()
    score: float | None = None  # the trained model's probability of "same", where the model was asked

    def __bool__(self) -> bool:
        return self.same


def _normalise(text: str) -> str:
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"(\d)\s*(gb|tb|mb|kb|gib|tib)\b", r"\1 \2", text)  # 10GB -> 10 gb
    text = re.sub(r"\b(two|2)[- ]?(factor|step)\b", "2fa", text)  # a name, not a number
    return re.sub(r"\s+", " ", text).strip()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text)


def _has_phrase(text: str, phrase: str) -> bool:
    if phrase == "on":
        return re.search(rf"\b(?:{'|'.join(_ON_OFF_VERBS)})\b(?: \w+){{0,3}} on\b", text) is not None
    if phrase == "off":
        return re.search(r"\boff\b", text) is not None
    return re.search(rf"\b{re.escape(phrase)}\b", text) is not None


_STOP_WORDS = frozenset("a an the i my me we our you your it its is are am be to of in on for with and or do does did "
                        "how what why when where which who can could should would will there this that have has "
                        "get any some all".split())


def content_words(text: str) -> set[str]:
    """Words of the question without stop words and negation markers (for the overlap test of negation)."""
    return {word for word in _words(_normalise(text)) if word not in _STOP_WORDS and word not in NEGATIONS
            and not word.endswith("n't")}


def negated(text: str) -> bool:
    """True when the question contains a negation marker."""
    words = _words(_normalise(text))
    return any(word in NEGATIONS or word.endswith("n't") for word in words)


def poles(text: str) -> dict[str, set[int]]:
    """For every antonym axis the question touches, which pole(s) it names: 0, 1 or both."""
    normal = _normalise(text)
    found: dict[str, set[int]] = {}
    for name, first, second in ANTONYM_AXES:
        rest = normal
        # longest phrase first, removed once matched: "stop sharing" must not also count as "sharing"
        for phrase, pole in sorted([(p, 0) for p in first] + [(p, 1) for p in second], key=lambda x: -len(x[0])):
            if _has_phrase(rest, phrase):
                found.setdefault(name, set()).add(pole)
                rest = re.sub(rf"\b{re.escape(phrase)}\b", " ", rest)
    return found


def numbers(text: str) -> list[float]:
    """Numbers in the question (digits and common number words), sorted; error codes excluded."""
    normal = _ERROR_CODE.sub(" ", _normalise(text))
    values = [float(value) for value in re.findall(r"\b\d+(?:\.\d+)?\b", normal)]
    values += [float(NUMBER_WORDS[word]) for word in _words(normal) if word in NUMBER_WORDS]
    return sorted(values)


def error_codes(text: str) -> set[str]:
    """Error codes such as LC-4012 (also written lc 4012 or LC4012), upper-cased with a hyphen."""
    return {f"{prefix.upper()}-{digits}" for prefix, digits in _ERROR_CODE.findall(_normalise(text))
            if prefix not in {"gb", "tb", "mb", "kb", "gib", "tib", "to", "of", "for", "and", "in", "at", "by"}}


def plans(text: str) -> set[str]:
    """Lumen Cloud plan names in the question. "free" counts only as a plan ("Free plan", "the free tier")."""
    found = {match.group(1) or match.group(2) for match in _PLAN.finditer(_normalise(text))}
    if re.search(r"(?<![.?!]) (?<!^)Free\b", text.strip()):  # capitalised mid-sentence: the plan ("On Free, ...")
        found.add("free")
    return found


def entities(text: str) -> list[str]:
    """Platforms and roles in order of appearance (synonyms mapped to one name)."""
    words = _words(_normalise(text))
    return [PLATFORMS.get(word) or ROLES[word] for word in words if word in PLATFORMS or word in ROLES]


def verify(question: str, candidate: str) -> Verdict:
    """May the cached answer of ``candidate`` be served for ``question``? ``same=False`` names the rules that refuse."""
    reasons = []
    # negation vetoes when the rest of the wording is shared ("can I ..." / "can't I ..."); paraphrases that
    # negate in other words ("not syncing" / "stopped syncing") overlap less and are left to the embedding
    words_a, words_b = content_words(question), content_words(candidate)
    overlap = len(words_a & words_b) / max(len(words_a | words_b), 1)
    if negated(question) != negated(candidate) and overlap >= NEGATION_OVERLAP:
        reasons.append("negation")
    first, second = poles(question), poles(candidate)
    for axis in first.keys() & second.keys():
        if first[axis].isdisjoint(second[axis]):  # opposite poles, none in common
            reasons.append(f"opposite actions ({axis})")
    if numbers(question) != numbers(candidate):
        reasons.append("numbers")
    if plans(question) != plans(candidate):
        reasons.append("plan names")
    if error_codes(question) != error_codes(candidate):
        reasons.append("error codes")
    routes_a, routes_b = _ROUTE.findall(_normalise(question)), _ROUTE.findall(_normalise(candidate))
    if any((b, a) in routes_b and a != b for a, b in routes_a):
        reasons.append("swapped direction")
    entities_a, entities_b = entities(question), entities(candidate)
    if entities_a and entities_b:
        if set(entities_a) != set(entities_b):
            reasons.append("entities")
        elif entities_a != entities_b and _directional(question) and _directional(candidate):
            reasons.append("swapped entities")
    return Verdict(not reasons, tuple(reasons))


def _directional(text: str) -> bool:
    return re.search(r"\b(from|to|into|than|instead of|become|becomes|over)\b", _normalise(text)) is not None


# --- the trained verifier: a cross-encoder fine-tuned from MiniLM -------------------------
#
# The rules above catch the near misses someone thought of; a cross-encoder reads both questions at once
# (one input: "[CLS] question [SEP] candidate [SEP]") and learns "same question, same answer" from examples.
# Its training pairs: half of the calibration pairs (the other half chooses its decision threshold) and pairs
# generated from the QA questions in data/qa.jsonl: template rewordings (same) and one-word alterations or
# another question of the same article (different). Test and other_topics pairs are never seen.

VERIFIER_EPOCHS = 2
VERIFIER_BATCH_SIZE = 32
VERIFIER_LEARNING_RATE = 1e-4
VERIFIER_MAX_TOKENS = 64
VERIFIER_CACHE_NAME = "cache-verifier"
MAX_TUNE_FALSE_HIT_RATE = 0.05  # the decision threshold keeps false hits on the tuning half at or below this
_VERIFIER_FORMAT = 1  # bump when the recipe changes, so cached verifiers are retrained

# Meaning-preserving rewordings: (pattern at the start of a lower-cased question, replacements).
_STARTS = (
    ("how do i ", ("how can i ", "what's the way to ", "is there a way to ", "what do i do to ", "how should i ")),
    ("how can i ", ("how do i ", "what's the way to ", "is there a way to ", "how would i ")),
    ("can i ", ("is it possible to ", "am i able to ", "is there a way to ", "could i ")),
    ("what is ", ("what's ", "can you tell me what ", "tell me what ")),
    ("what's ", ("what is ", "tell me what ")),
    ("why ", ("any idea why ", "do you know why ", "can you explain why ")),
    ("where ", ("where exactly ", "can you tell me where ")),
)
_WRAPPERS = ("hi, {q}", "{q} thanks!", "quick question: {q}", "hello! {q}", "{q} please help", "hey {q}",
             "{q} I couldn't find it in the help center.", "sorry if this is obvious, {q}")
_SAFE_SYNONYMS = (("files", "documents"), ("phone", "mobile"), ("laptop", "computer"), ("app", "application"),
                  ("account", "Lumen account"), ("folder", "directory"), ("cost", "come to"), ("get", "receive"))
# Near misses by swapping one word or phrase for one that changes the answer (both directions are used).
_SWAPS = (("turn on", "turn off"), ("enable", "disable"), ("import", "export"), ("upload", "download"),
          ("upgrade", "downgrade"), ("share", "unshare"), ("add", "remove"), ("lock", "unlock"),
          ("install", "uninstall"), ("monthly", "annual"), ("inside", "outside"), ("before", "after"),
          ("restore", "permanently delete"), ("increase", "decrease"), ("sign in", "sign out"), ("log in", "log out"),
          ("view-only", "editable"), ("connect", "disconnect"), ("more", "fewer"), ("file", "folder"),
          ("photos", "videos"), ("desktop app", "mobile app"), ("password", "email address"), ("email", "SMS"),
          ("trash", "version history"), ("refund", "invoice"), ("SSO", "two-step verification"),
          ("storage", "bandwidth"), ("owner", "member"), ("team", "personal account"), ("link", "folder"),
          ("Windows", "Mac"), ("Mac", "Linux"), ("iPhone", "Android"), ("admin", "viewer"), ("editor", "viewer"),
          ("weekdays", "weekends"), ("webhook", "access token"), ("Slack", "Zapier"), ("EU", "US"))
_PLAN_NAMES = ("Free", "Plus", "Pro", "Business")


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


_KEYWORD_DROP = frozenset("how do does did i can could what what's is are the a an my me to of for in it "
                          "there way should would you your".split())


def keyword_form(question: str) -> str:
    """The question as a search-box query: lower case, no question words or articles ("reset password")."""
    words = re.findall(r"[\w$.'-]+", question.lower())
    kept = [word.strip(".") for word in words if word not in _KEYWORD_DROP]
    return " ".join(word for word in kept if word) or question.lower()


def reworded(question: str, rng) -> str:
    """A template rewording of ``question`` that keeps its meaning (new start, a greeting, casing, a synonym,
    or the bare keywords of a search-box query)."""
    text = question.strip()
    if rng.random() < 0.25:
        return keyword_form(text)
    lower = text[:1].lower() + text[1:]
    for start, replacements in _STARTS:
        if lower.lower().startswith(start) and rng.random() < 0.8:
            lower = rng.choice(replacements) + lower[len(start):]
            break
    for word, synonym in _SAFE_SYNONYMS:
        if re.search(rf"\b{word}\b", lower) and rng.random() < 0.3:
            lower = re.sub(rf"\b{word}\b", synonym, lower, count=1)
    if rng.random() < 0.5:
        lower = rng.choice(_WRAPPERS).format(q=lower)
    if rng.random() < 0.3:
        return lower.lower().rstrip("?")
    return _capitalise(lower)


def altered(question: str, rng) -> str | None:
    """A near miss of ``question``: one plan, number, error code or word swapped for one that changes the answer."""
    options = []
    for plan in _PLAN_NAMES:
        if re.search(rf"\b{plan}\b", question):
            options += [re.sub(rf"\b{plan}\b", other, question, count=1) for other in _PLAN_NAMES if other != plan]
    for match in re.finditer(r"(?<![\w-])(\d+)(?![\w-])", question):
        value = int(match.group(1))
        for other in {value * 2, value + 1, max(value // 2, 1) if value > 1 else 3}:
            if other != value:
                options.append(question[:match.start()] + str(other) + question[match.end():])
    for match in re.finditer(r"\bLC-(\d)(\d)(\d)(\d)\b", question):
        digits = match.group(1) + match.group(2) + match.group(4) + match.group(3)
        if digits != "".join(match.groups()):
            options.append(question[:match.start()] + f"LC-{digits}" + question[match.end():])
    for first, second in _SWAPS:
        for old, new in ((first, second), (second, first)):
            if re.search(rf"\b{re.escape(old)}\b", question, flags=re.IGNORECASE):
                options.append(re.sub(rf"\b{re.escape(old)}\b", new, question, count=1, flags=re.IGNORECASE))
    options = [option for option in options if option.lower() != question.lower()]
    return rng.choice(options) if options else None


def generated_pairs(questions: list[tuple[str, str]], seed: int = 0, rewordings: int = 2) -> list[dict]:
    """Labelled pairs generated from ``(question, article id)`` tuples (the QA questions).

    For each question: ``rewordings`` template rewordings (same), one alteration that changes the answer
    (different, where one applies) and another question of the same article (different).
    """
    import random

    rng = random.Random(seed)
    by_article: dict[str, list[str]] = {}
    for question, article in questions:
        by_article.setdefault(article, []).append(question)
    pairs = []
    for question, article in questions:
        for _ in range(rewordings):
            pairs.append({"a": question, "b": reworded(question, rng), "same": True, "kind": "rewording"})
        for near_miss in sorted({altered(question, rng) for _ in range(2)} - {None}):
            pairs.append({"a": question, "b": near_miss, "same": False, "kind": "alteration"})
        neighbours = [other for other in by_article[article] if other != question]
        if neighbours:
            pairs.append({"a": question, "b": rng.choice(neighbours), "same": False, "kind": "same_article"})
    return pairs


def split_calibration(pairs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Calibration pairs in two halves, alternating within each kind in id order: (to train on, to tune on)."""
    fit, tune = [], []
    for kind in sorted({pair["kind"] for pair in pairs}):
        for position, pair in enumerate(sorted((p for p in pairs if p["kind"] == kind), key=lambda p: p["id"])):
            (fit if position % 2 == 0 else tune).append(pair)
    return fit, tune


def verifier_training_data(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(training pairs, tuning pairs)``: generated QA pairs plus half the calibration pairs; the other half."""
    from . import data

    fit, tune = split_calibration(data.load_cache_pairs("calibration"))
    generated = generated_pairs([(item.question, item.doc_id) for item in data.load_qa()], seed=seed)
    # the written calibration pairs are rarer and harder than the generated ones: each is shown three times
    train = generated + 3 * [{"a": pair["a"], "b": pair["b"], "same": pair["same"], "kind": pair["kind"]}
                             for pair in fit]
    return train, tune


def verifier_recipe(train_pairs: list[dict], tune_pairs: list[dict], source: str, seed: int,
                    epochs: int = VERIFIER_EPOCHS) -> dict:
    """Everything the trained weights depend on; its hash names the cache folder."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([train_pairs, tune_pairs], sort_keys=True).encode()).hexdigest()
    return {"format": _VERIFIER_FORMAT, "source": str(source), "seed": seed, "epochs": epochs,
            "batch_size": VERIFIER_BATCH_SIZE, "learning_rate": VERIFIER_LEARNING_RATE,
            "max_tokens": VERIFIER_MAX_TOKENS, "data_sha256": digest}


def verifier_cache_key(recipe: dict) -> str:
    """A short hash of the recipe: a different recipe or different data gives a different folder."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def train_pair_classifier(model, tokenizer, pairs: list[dict], epochs: int = VERIFIER_EPOCHS,
                          batch_size: int = VERIFIER_BATCH_SIZE, learning_rate: float = VERIFIER_LEARNING_RATE,
                          seed: int = 0, progress: bool = True) -> list[float]:
    """Fine-tune a one-logit sequence classifier on ``(a, b, same)`` pairs; return the loss per step.

    Binary cross-entropy on the logit; each pair is shown in a random order (a, b) or (b, a), so the
    verifier does not learn which side is the cached one. The word embeddings stay frozen (fewer
    weights to update on a CPU, and rewordings keep the meaning the pre-trained vectors give words).
    """
    import random

    import torch
    from tqdm.auto import tqdm

    from . import config

    if not pairs or epochs < 1:
        raise ValueError("Pass at least one pair and one epoch.")
    config.seed_everything(seed)
    rng = random.Random(seed)
    for parameter in model.base_model.embeddings.word_embeddings.parameters():
        parameter.requires_grad_(False)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.01)
    total = epochs * -(-len(pairs) // batch_size)
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(total - warmup, 1))))
    device = next(model.parameters()).device
    losses = []
    model.train()
    with tqdm(total=total, desc="train verifier", disable=not progress) as bar:
        for _ in range(epochs):
            order = list(range(len(pairs)))
            rng.shuffle(order)
            for start in range(0, len(order), batch_size):
                rows = [pairs[i] for i in order[start:start + batch_size]]
                flipped = [rng.random() < 0.5 for _ in rows]
                first = [row["b"] if flip else row["a"] for row, flip in zip(rows, flipped)]
                second = [row["a"] if flip else row["b"] for row, flip in zip(rows, flipped)]
                batch = tokenizer(first, second, padding=True, truncation=True, max_length=VERIFIER_MAX_TOKENS,
                                  return_tensors="pt").to(device)
                logits = model(**batch).logits.squeeze(-1)
                labels = torch.tensor([float(row["same"]) for row in rows], device=device)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    model.eval()
    return losses


def choose_decision_threshold(scores, same, max_false_hit_rate: float = MAX_TUNE_FALSE_HIT_RATE) -> float:
    """The lowest threshold (steps of 0.05) whose false-hit rate on ``same=False`` pairs is within the bound."""
    import numpy as np

    scores, same = np.asarray(scores, dtype=float), np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        raise ValueError("Tuning needs both same-meaning and different-meaning pairs.")
    for threshold in np.round(np.arange(0.05, 1.0, 0.05), 2):
        if np.mean(scores[~same] >= threshold) <= max_false_hit_rate:
            return float(threshold)
    return 0.95


class RuleVerifier:
    """The rule checks alone, as a verifier a :class:`helpers.caching.SemanticCache` can use."""

    name = "rules"

    def verify_candidates(self, question: str, candidates: list[str]) -> list[Verdict]:
        """One :class:`Verdict` per candidate (the cache serves the first one that is ``same``)."""
        return [verify(question, candidate) for candidate in candidates]


class TrainedVerifier:
    """Rules veto; the fine-tuned cross-encoder decides the rest (``score >= threshold`` serves the answer).

    ``use_rules=False`` leaves every decision to the model (to measure what each stage adds).
    """

    def __init__(self, model, tokenizer, threshold: float, use_rules: bool = True, info: dict | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.threshold = float(threshold)
        self.use_rules = use_rules
        self.info = info or {}
        self.name = "rules + model" if use_rules else "model"

    def scores(self, questions: list[str], candidates: list[str], batch_size: int = 64):
        """The model's probability that each ``(question, candidate)`` pair asks the same thing."""
        import numpy as np
        import torch

        out = []
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(questions), batch_size):
                batch = self.tokenizer(list(questions[start:start + batch_size]),
                                       list(candidates[start:start + batch_size]), padding=True, truncation=True,
                                       max_length=VERIFIER_MAX_TOKENS, return_tensors="pt").to(device)
                out.append(torch.sigmoid(self.model(**batch).logits.squeeze(-1)).float().cpu().numpy().reshape(-1))
        return np.concatenate(out) if out else np.zeros(0)

    def with_rules(self, use_rules: bool) -> TrainedVerifier:
        """The same model and threshold, with the rule stage on or off."""
        return TrainedVerifier(self.model, self.tokenizer, self.threshold, use_rules, self.info)

    def verify_candidates(self, question: str, candidates: list[str]) -> list[Verdict]:
        """One :class:`Verdict` per candidate; the model only reads the candidates the rules let through."""
        verdicts: list[Verdict | None] = [None] * len(candidates)
        if self.use_rules:
            for position, candidate in enumerate(candidates):
                ruled = verify(question, candidate)
                if not ruled.same:
                    verdicts[position] = ruled
        remaining = [position for position, verdict in enumerate(verdicts) if verdict is None]
        if remaining:
            scores = self.scores([question] * len(remaining), [candidates[p] for p in remaining])
            for position, score in zip(remaining, scores):
                same = bool(score >= self.threshold)
                verdicts[position] = Verdict(same, () if same else ("model",), float(score))
        return verdicts


def verifier_cache_dir(recipe: dict) -> Path:
    """Where :func:`load_or_train_verifier` keeps the verifier trained with ``recipe``."""
    from . import config

    return config.cache_dir() / f"{VERIFIER_CACHE_NAME}-{verifier_cache_key(recipe)}"


def load_or_train_verifier(seed: int = 0, retrain: bool = False, source: str | None = None,
                           train_pairs: list[dict] | None = None, tune_pairs: list[dict] | None = None,
                           epochs: int = VERIFIER_EPOCHS, progress: bool = True) -> TrainedVerifier:
    """The trained verifier (rules + cross-encoder), loaded from the cache or trained and saved there.

    The cache folder is named by a hash of the recipe (source model, seed, settings and the training and
    tuning pairs), so changing any of them trains a new verifier. Training (~1,000 pairs, two epochs) takes
    well under a minute on two CPU cores; the decision threshold is then chosen on the tuning pairs
    (half of the calibration split) with :func:`choose_decision_threshold`.
    """
    import json

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from . import config, models

    if train_pairs is None or tune_pairs is None:
        default_train, default_tune = verifier_training_data(seed)
        train_pairs = default_train if train_pairs is None else train_pairs
        tune_pairs = default_tune if tune_pairs is None else tune_pairs
    source = source or models.embedder_source()
    recipe = verifier_recipe(train_pairs, tune_pairs, source, seed, epochs)
    path = verifier_cache_dir(recipe)
    info_file = path / "workbook_verifier.json"
    if not retrain and info_file.exists():
        info = json.loads(info_file.read_text(encoding="utf-8"))
        if info.get("recipe") == recipe:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
            return TrainedVerifier(model.to(config.device()).eval(), tokenizer, info["threshold"], info=info)
    import time

    import transformers

    config.seed_everything(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the new head is "missing from the checkpoint", as expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, use_safetensors=True)
    finally:
        transformers.logging.set_verbosity(verbosity)
    model = model.to(config.device())
    started = time.perf_counter()
    losses = train_pair_classifier(model, tokenizer, train_pairs, epochs=epochs, seed=seed, progress=progress)
    seconds = time.perf_counter() - started
    verifier = TrainedVerifier(model, tokenizer, threshold=0.5)
    tune_verdicts = [verifier.verify_candidates(pair["a"], [pair["b"]])[0] for pair in tune_pairs]
    tune_scores = [verdict.score if verdict.score is not None else 0.0 for verdict in tune_verdicts]
    threshold = choose_decision_threshold(tune_scores, [pair["same"] for pair in tune_pairs])
    info = {"recipe": recipe, "threshold": threshold, "train_pairs": len(train_pairs), "train_seconds": seconds,
            "losses": losses, "tune_scores": tune_scores, "tune_same": [pair["same"] for pair in tune_pairs]}
    models.save_trained(model, tokenizer, path, {"workbook_verifier.json": info})
    return TrainedVerifier(model.eval(), tokenizer, threshold, info=info)
