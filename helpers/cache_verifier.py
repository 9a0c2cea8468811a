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
