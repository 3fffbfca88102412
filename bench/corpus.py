"""A deterministic benchmark corpus: search queries and RAG-style chunks, no downloads.

About 30 % short search queries, 45 % chunks of 20-70 words and 25 % of 70-120 words,
across several topics, seeded so that every run embeds the same texts.
"""

from __future__ import annotations

import random
import re

# fmt: off
DOMAINS: dict[str, dict[str, list[str]]] = {
    "software": {
        "nouns": [
            "database", "deployment", "cache", "API gateway", "load balancer", "container",
            "service mesh", "message queue", "build pipeline", "release branch", "index",
            "connection pool", "configuration file", "access token", "background worker",
            "replica", "schema migration", "feature flag", "log stream", "unit test",
        ],
        "verbs": [
            "configure", "deploy", "monitor", "restart", "scale", "debug", "migrate",
            "rotate", "profile", "benchmark", "roll back", "upgrade", "cache", "validate",
        ],
        "adjectives": [
            "distributed", "stateless", "read-only", "asynchronous", "production",
            "misconfigured", "idle", "overloaded", "encrypted", "legacy", "containerized",
        ],
        "outcomes": [
            "p99 latency dropped by forty percent", "the error rate returned to normal",
            "memory usage stayed flat under load", "the nightly job finished an hour early",
            "requests were retried without duplicate writes", "cold starts disappeared",
        ],
    },
    "finance": {
        "nouns": [
            "invoice", "quarterly report", "cash flow statement", "interest rate", "budget",
            "tax return", "portfolio", "pension plan", "credit line", "balance sheet",
            "expense policy", "exchange rate", "dividend", "audit trail", "payment term",
        ],
        "verbs": [
            "reconcile", "forecast", "approve", "audit", "allocate", "refinance", "report",
            "hedge", "invoice", "review", "consolidate", "depreciate",
        ],
        "adjectives": [
            "overdue", "annual", "variable", "tax-deductible", "consolidated", "projected",
            "unaudited", "recurring", "short-term", "diversified",
        ],
        "outcomes": [
            "operating costs fell for the third consecutive quarter",
            "the auditors signed off without material findings",
            "late payments dropped after the new reminder schedule",
            "the team stayed within budget despite higher supplier prices",
        ],
    },
    "health": {
        "nouns": [
            "blood pressure", "vaccination schedule", "sleep pattern", "diet", "medication",
            "physical therapy", "heart rate", "clinical trial", "symptom", "dosage",
            "recovery plan", "allergy", "check-up", "prescription", "exercise routine",
        ],
        "verbs": [
            "track", "reduce", "prescribe", "monitor", "diagnose", "treat", "prevent",
            "measure", "adjust", "manage", "screen for",
        ],
        "adjectives": [
            "chronic", "mild", "seasonal", "preventive", "daily", "elevated", "recommended",
            "over-the-counter", "moderate", "long-term",
        ],
        "outcomes": [
            "most participants reported better sleep within two weeks",
            "symptoms improved after the dosage was adjusted",
            "patients who exercised regularly recovered faster",
            "the number of missed appointments fell noticeably",
        ],
    },
    "travel": {
        "nouns": [
            "flight", "hotel booking", "train ticket", "passport", "travel insurance",
            "itinerary", "layover", "rental car", "boarding pass", "museum pass", "visa",
            "carry-on bag", "city tour", "ferry connection", "hiking trail",
        ],
        "verbs": [
            "book", "cancel", "reschedule", "upgrade", "compare", "plan", "explore",
            "reserve", "refund", "check in for",
        ],
        "adjectives": [
            "refundable", "overnight", "scenic", "last-minute", "budget", "direct",
            "crowded", "family-friendly", "off-season", "guided",
        ],
        "outcomes": [
            "the whole trip cost less than a single week in high season",
            "travellers avoided the longest queues at the border",
            "the connection was tight but nobody missed the ferry",
            "the refund arrived within five working days",
        ],
    },
    "cooking": {
        "nouns": [
            "sourdough starter", "tomato sauce", "cast iron pan", "vegetable stock", "risotto",
            "spice blend", "marinade", "pie crust", "oven temperature", "olive oil",
            "lentil soup", "grilled chicken", "fresh pasta", "baking soda", "chocolate cake",
        ],
        "verbs": [
            "bake", "simmer", "season", "marinate", "roast", "whisk", "store", "reheat",
            "substitute", "knead", "caramelize",
        ],
        "adjectives": [
            "homemade", "gluten-free", "crispy", "slow-cooked", "leftover", "vegan",
            "spicy", "seasonal", "frozen", "golden",
        ],
        "outcomes": [
            "the bread rose evenly and kept its crust for two days",
            "the sauce thickened without burning at the bottom",
            "guests could not tell that the dessert was dairy-free",
            "the leftovers tasted even better the next day",
        ],
    },
    "support": {
        "nouns": [
            "password", "account", "subscription", "order", "refund request", "invoice",
            "shipping address", "two-factor code", "support ticket", "warranty claim",
            "mobile app", "router", "printer driver", "billing cycle", "delivery date",
        ],
        "verbs": [
            "reset", "update", "cancel", "track", "return", "replace", "activate", "verify",
            "transfer", "reinstall", "change",
        ],
        "adjectives": [
            "expired", "locked", "duplicate", "damaged", "pending", "premium", "missing",
            "annual", "incorrect", "delayed",
        ],
        "outcomes": [
            "the customer regained access within a few minutes",
            "the replacement shipped the same afternoon",
            "the duplicate charge was reversed on the next statement",
            "the ticket was closed after the first reply",
        ],
    },
    "science": {
        "nouns": [
            "experiment", "sample size", "climate model", "protein structure", "telescope",
            "data set", "control group", "sensor array", "reaction rate", "soil sample",
            "neural network", "measurement error", "hypothesis", "field study", "ice core",
        ],
        "verbs": [
            "measure", "replicate", "simulate", "observe", "calibrate", "analyse", "estimate",
            "publish", "sequence", "classify",
        ],
        "adjectives": [
            "statistically significant", "peer-reviewed", "long-term", "noisy", "controlled",
            "high-resolution", "preliminary", "independent", "large-scale", "reproducible",
        ],
        "outcomes": [
            "the effect held across three independent data sets",
            "the new method halved the measurement error",
            "results matched the model within the expected margin",
            "the team could replicate the finding with a larger sample",
        ],
    },
}

QUERY_TEMPLATES = [
    "how do I {verb} a {adj} {noun} without losing data or breaking existing {noun2}",
    "what is the best way to {verb} the {noun} when the {noun2} is {adj}",
    "why does my {noun} keep failing after I {verb} the {noun2} on a {adj} setup",
    "step by step guide to {verb} a {adj} {noun} for beginners with examples",
    "difference between a {adj} {noun} and a regular {noun2} and when to use each",
    "can I {verb} the {noun} myself or do I need help with the {adj} {noun2}",
    "{noun} vs {noun2} which one should I {verb} first if everything is {adj}",
    "common mistakes people make when they {verb} a {adj} {noun} and how to avoid them",
]

SENTENCE_TEMPLATES = [
    "The {adj} {noun} should be reviewed before you {verb} the {noun2}.",
    "When teams {verb} a {noun}, they often forget that the {noun2} is {adj}.",
    "In our experience, {outcome} once we started to {verb} the {noun} every week.",
    "A {adj} {noun} is easier to {verb} than a {noun2} that nobody owns.",
    "After we decided to {verb} the {noun}, {outcome}.",
    "Most guides recommend that you {verb} the {noun} first and only then touch the {noun2}.",
    "If the {noun} looks {adj}, check the {noun2} before anything else.",
    "The main reason to {verb} a {noun} is that a {adj} {noun2} tends to cause surprises.",
    "According to the latest review, {outcome}.",
    "Keep in mind that a {adj} {noun} can affect the {noun2} in ways that are hard to see.",
    "We measured the {noun} before and after the change, and {outcome}.",
    "Nobody expected the {noun2} to matter, but the {adj} {noun} turned out to be the cause.",
]

HEADINGS = [
    "Overview", "Background", "Troubleshooting", "Frequently asked questions", "Summary",
    "Best practices", "Known issues", "Next steps", "Notes", "Details",
]
# fmt: on


_ARTICLE_RE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU](?!ni))")


def _fill(template: str, rng: random.Random, domain: dict[str, list[str]]) -> str:
    noun, noun2 = rng.sample(domain["nouns"], 2)
    text = template.format(
        noun=noun,
        noun2=noun2,
        verb=rng.choice(domain["verbs"]),
        adj=rng.choice(domain["adjectives"]),
        outcome=rng.choice(domain["outcomes"]),
    )
    return _ARTICLE_RE.sub(r"\1n ", text)  # "a idle cache" -> "an idle cache"


def _query(rng: random.Random, domain: dict[str, list[str]], target_words: int) -> str:
    text = _fill(rng.choice(QUERY_TEMPLATES), rng, domain)
    while len(text.split()) < target_words:
        text += " " + _fill(rng.choice(QUERY_TEMPLATES), rng, domain)
    return text


def _passage(rng: random.Random, domain: dict[str, list[str]], target_words: int) -> str:
    parts: list[str] = []
    if rng.random() < 0.3:
        parts.append(rng.choice(HEADINGS) + ":")
    n_words = 0
    while n_words < target_words:
        sentence = _fill(rng.choice(SENTENCE_TEMPLATES), rng, domain)
        sentence = sentence[0].upper() + sentence[1:]
        parts.append(sentence)
        n_words += len(sentence.split())
    words = " ".join(parts).split()[: max(target_words, 1)]
    text = " ".join(words)
    return text if text.endswith(".") else text.rstrip(",;:") + "."


def build_corpus(n_texts: int, seed: int = 0) -> list[str]:
    """Return ``n_texts`` deterministic English texts of roughly 10-120 words each."""
    rng = random.Random(seed)
    domains = list(DOMAINS.values())
    texts: list[str] = []
    for _ in range(n_texts):
        domain = rng.choice(domains)
        kind = rng.random()
        if kind < 0.30:  # search traffic
            texts.append(_query(rng, domain, rng.randint(10, 22)))
        elif kind < 0.75:  # short to medium chunks
            texts.append(_passage(rng, domain, rng.randint(20, 70)))
        else:  # long RAG chunks
            texts.append(_passage(rng, domain, rng.randint(70, 120)))
    return texts
