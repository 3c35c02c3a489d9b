"""Generate the quickstart's bundled dataset: people's name, age and city, as JSON.

Each row asks the model to read one short sentence about a person and answer with compact
JSON in a fixed key order, e.g. `{"name": "Maria Silva", "age": 34, "city": "Lisbon"}`. The
sentences come from many phrasings, some with distractors (the city someone came from, how
many years they have lived somewhere) and some that leave out the age or the city, whose value
is then `null`. Exact match on the parsed JSON is therefore meaningful: copying the sentence
never scores.

The held-out test rows use first names, surnames and cities that never occur in training, and
a quarter of them use phrasings that never occur in training either.

Deterministic (seeded): rerunning it rewrites byte-identical files.

    python tools/make_quickstart_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20250
TRAIN_ROWS = 800
TEST_ROWS = 48
HELD_OUT_TEMPLATE_SHARE = 0.25
OUT = Path(__file__).resolve().parent.parent / "src" / "gemmaforge" / "datasets"


def words(text: str) -> list[str]:
    """The whitespace-separated words of `text`: keeps long word lists compact."""
    return text.split()


INSTRUCTION = "Extract the person's name, age and city as JSON."

FIRST_NAMES = words(
    """Maria Joao Ana Pedro Sofia Lucas Emma Noah Olivia Liam Mia Elias Hanna Jonas Lea Felix
    Clara Paul Marie Ben Laura Tom Julia David Sara Omar Aisha Yusuf Fatima Ali Chen Wei Mei
    Hiroshi Yuki Kenji Aiko Ravi Priya Arjun Anika Ivan Olga Dmitri Nadia Pablo Lucia Diego
    Carmen Mateo Elena Jakub Zofia Piotr Agnieszka Lars Ingrid Erik Astrid Kofi Amara"""
)
SURNAMES = words(
    """Silva Santos Costa Muller Schmidt Schneider Fischer Weber Meyer Wagner Becker Smith
    Johnson Brown Garcia Martinez Lopez Rossi Russo Ferrari Kowalski Nowak Novak Ivanova Petrov
    Tanaka Suzuki Sato Kim Lee Park Nguyen Tran Patel Sharma Khan Hansen Larsen Jensen Dubois"""
)
CITIES = words(
    """Lisbon Porto Madrid Seville Paris Lyon Berlin Munich Hamburg Vienna Zurich Geneva Rome
    Milan Naples Prague Warsaw Krakow Budapest Oslo Bergen Stockholm Copenhagen Helsinki Dublin
    London Leeds Glasgow Boston Chicago Denver Seattle Austin Toronto Montreal Vancouver Tokyo
    Osaka Kyoto Seoul Busan Mumbai Delhi Nairobi Accra Lagos Cairo Sydney Melbourne Auckland"""
)

# Sentence templates. {name}, {age} (or {age_words}: "thirty-four") and {city} are what the
# answer holds; {other} is a second city and {years} a second number, both distractors that must
# not end up in the answer. A template without an age or a city gives `null` for it.
TEMPLATES = [
    "{name}, {age}, lives in {city}.",
    "{name} is {age} years old and lives in {city}.",
    "Meet {name}: {age} years old, based in {city}.",
    "{name} ({age}) works in {city}.",
    "In {city}, {name} celebrated turning {age}.",
    "A {age}-year-old named {name} moved from {other} to {city} last year.",
    "{name} was born in {other} but has lived in {city} for {years} years and is {age} now.",
    "Our new tenant in {city} is {name}, aged {age}.",
    "{name} just turned {age}. Home: {city}.",
    "Name: {name}. Age: {age}. Residence: {city}.",
    "Hi, I'm {name}, I'm {age} and I live in {city}.",
    "{city} resident {name}, {age}, won the local chess cup.",
    "The {age}-year-old {name} runs a bakery in {city}.",
    "After {years} years in {other}, {name} ({age}) now calls {city} home.",
    "{name} is a {age}-year-old nurse from {city}.",
    "Applicant {name}, age {age}, currently resides in {city}.",
    "{name} celebrated turning {age} in {other}, but lives in {city}.",
    "Having left {other}, {name} settled in {city}; {name} is {age}.",
    "{name} lives in {city}.",
    "{name} moved to {city} {years} years ago.",
    "{name} is {age_words} years old and works in {city}.",
    "{name} from {city} is {age_words}.",
    "{name} is {age} and works from home.",
    "{name}, {age}, is still looking for a flat.",
]

HELD_OUT_TEMPLATES = [
    "Everyone in {city} knows {name}, who is {age}.",
    "{name}, now {age}, left {other} for {city}.",
    "At {age}, {name} teaches piano in {city}.",
    "{name} ({age_words} years old) lives in {city}.",
    "{name} has been living in {city} since childhood.",
    "Contact: {name} | {age} | {city}",
]


ONES = words("zero one two three four five six seven eight nine")
TENS = words("_ _ twenty thirty forty fifty sixty seventy eighty ninety")
TEENS = words("ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen")


def number_words(n: int) -> str:
    """English words for 10 <= n <= 99: 18 -> eighteen, 34 -> thirty-four, 40 -> forty."""
    tens, ones = divmod(n, 10)
    if tens == 1:
        return TEENS[ones]
    return TENS[tens] if ones == 0 else f"{TENS[tens]}-{ONES[ones]}"


def split(items: list[str], held_out: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """Shuffle a copy of `items` and cut off `held_out` of them for the test set."""
    shuffled = items[:]
    rng.shuffle(shuffled)
    return shuffled[held_out:], shuffled[:held_out]


def person(rng: random.Random, firsts: list[str], lasts: list[str], cities: list[str]) -> dict:
    name = rng.choice(firsts)
    if rng.random() < 0.5:
        name = f"{name} {rng.choice(lasts)}"
    city, other = rng.sample(cities, 2)
    age = rng.randint(18, 89)
    # Below every age (18+), so the age is never ambiguous.
    years = rng.randint(2, 15)
    return {
        "name": name,
        "age": age,
        "age_words": number_words(age),
        "city": city,
        "other": other,
        "years": years,
    }


def row(template: str, who: dict) -> dict:
    sentence = template.format(**who)
    answer = {
        "name": who["name"],
        "age": who["age"] if "{age" in template else None,
        "city": who["city"] if "{city}" in template else None,
    }
    return {
        "messages": [
            {"role": "user", "content": f"{INSTRUCTION}\n{sentence}"},
            {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
        ]
    }


def make(rows: int, templates: list[str], pools: tuple, rng: random.Random) -> list[dict]:
    return [row(rng.choice(templates), person(rng, *pools)) for _ in range(rows)]


def build() -> dict[str, list[dict]]:
    """The rows of each bundled file, by file name."""
    rng = random.Random(SEED)
    train_firsts, test_firsts = split(FIRST_NAMES, 12, rng)
    train_lasts, test_lasts = split(SURNAMES, 8, rng)
    train_cities, test_cities = split(CITIES, 12, rng)
    train = make(TRAIN_ROWS, TEMPLATES, (train_firsts, train_lasts, train_cities), rng)
    held_out = round(TEST_ROWS * HELD_OUT_TEMPLATE_SHARE)
    test_pools = (test_firsts, test_lasts, test_cities)
    test = make(TEST_ROWS - held_out, TEMPLATES, test_pools, rng)
    test += make(held_out, HELD_OUT_TEMPLATES, test_pools, rng)
    return {"quickstart_train.jsonl": train, "quickstart_test.jsonl": test}


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in build().items():
        (OUT / name).write_text(to_jsonl(rows), encoding="utf-8")
        print(f"wrote {len(rows)} rows to {OUT / name}")


if __name__ == "__main__":
    main()
