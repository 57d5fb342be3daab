"""Acme's production LLM logs: 30 days, five use cases, deterministic (seeded), generated on demand.

Acme (a fictional online retailer) runs four workhorse jobs on gpt-4o-mini and one frontier
agent on gpt-4o. The prompts are real short texts with the answer a careful incumbent gives
(about 4 % of the incumbent's labels are wrong, as in life), because later steps build golden
sets from these logs and score a real small model on them.

Two formats, as a platform team would have them:
  logs/app_usage.jsonl           the app's own canonical log (ticket routing, call summaries, agent)
  logs/litellm_spendlogs.csv     the LiteLLM proxy's LiteLLM_SpendLogs export (sentiment, invoices)
plus, like any real export, two retries logged twice and one truncated JSON line: the audit
quarantines them and says why.

    python examples/acme/generate.py [OUT_DIR] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

START = datetime(2025, 6, 1, tzinfo=timezone.utc)
DAYS = 30
SEED = 20250601
PRICES = {"gpt-4o-mini": (0.15e-6, 0.60e-6), "gpt-4o": (2.5e-6, 10e-6)}  # only for the proxy's logged spend
VOLUME = {
    "ticket-routing": 1200,
    "review-sentiment": 800,
    "invoice-extraction": 450,
    "call-summaries": 400,
    "research-agent": 60,
}

# --------------------------------------------------------------------------- texts

TICKETS = {
    "billing": [
        "I was charged twice for order {order}. Please refund the duplicate payment of ${amount}.",
        "My invoice for {month} shows ${amount} but my plan is ${small}. Why the difference?",
        "The refund for order {order} still hasn't reached my card after {days} days.",
        "Can I switch from monthly to yearly billing and get the discount applied now?",
        "Your checkout took my gift card balance but then charged the full ${amount} to my Visa.",
    ],
    "technical": [
        "The app crashes every time I open the order history on my {device}.",
        "I can't upload a photo of the damaged item, the page just spins forever.",
        "Your website shows error 502 when I try to check out with {count} items in the cart.",
        "Push notifications stopped working after the last update on {device}.",
        "The barcode scanner in the app doesn't recognise any product since yesterday.",
    ],
    "account": [
        "I forgot my password and the reset email never arrives at my {domain} address.",
        "Please change the email on my account, I no longer use my {domain} mailbox.",
        "How do I delete my account and all my personal data?",
        "My account got locked after {count} login attempts, can you unlock it?",
        "I want to merge my two accounts, one of them was created with my {domain} email.",
    ],
    "shipping": [
        "Order {order} was marked delivered but nothing arrived at my door.",
        "The tracking for order {order} hasn't moved for {days} days. Where is my parcel?",
        "Can you ship order {order} to my office instead? I won't be home on {weekday}.",
        "My package arrived with the box crushed and the {product} inside is broken.",
        "Do you deliver to {city}? The checkout says the address is not serviceable.",
    ],
}
REVIEWS = {
    "positive": [
        "The {product} arrived early and works perfectly, great value for the price.",
        "Absolutely love this {product}, my whole family uses it every day.",
        "Solid build quality and the {product} is even better than described. Five stars.",
        "Fast delivery, easy setup, the {product} does exactly what I needed.",
    ],
    "negative": [
        "The {product} stopped working after {days} days and support never answered.",
        "Cheap plastic, the {product} broke the first time I used it. Want my money back.",
        "Arrived late and the {product} was missing parts. Very disappointed.",
        "Worst purchase this year, the {product} is loud and gets hot.",
    ],
    "neutral": [
        "The {product} is okay. Does the job, nothing special.",
        "Delivery took {days} days, the {product} is as described, neither great nor bad.",
        "It's an average {product}. Fine for the price, I might buy a better one later.",
        "The {product} works, but the manual is confusing. Medium overall.",
    ],
}
PRODUCTS = [
    "blender",
    "kettle",
    "desk lamp",
    "backpack",
    "air fryer",
    "phone case",
    "headphones",
    "coffee grinder",
    "yoga mat",
    "toaster",
    "rain jacket",
    "office chair",
]
VENDORS = [
    "Northwind Traders",
    "Contoso Supplies",
    "Fabrikam Packaging",
    "Globex Logistics",
    "Initech Office",
    "Umbrella Print Co",
    "Wayne Hardware",
    "Stark Components",
]
CITIES = ["Leeds", "Porto", "Lyon", "Graz", "Utrecht", "Cork", "Gdansk", "Malmo"]
DEVICES = ["iPhone 13", "Pixel 7", "Galaxy S22", "iPad", "Android tablet"]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "proton.me"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
CALL_TOPICS = [
    ("a late delivery", "the courier lost the parcel", "a replacement shipped with express delivery"),
    (
        "a double charge",
        "a payment retry charged the card twice",
        "a refund of the duplicate charge within 5 days",
    ),
    ("a broken {product}", "the item was damaged in transit", "a free return label and a replacement"),
    ("a locked account", "too many failed logins", "the account was unlocked and two-factor login enabled"),
    ("changing a delivery address", "the customer moved", "the address was updated before dispatch"),
]
INVOICE_SCHEMA = {
    "type": "object",
    "required": ["invoice_number", "vendor", "date", "currency", "total"],
    "properties": {
        "invoice_number": {"type": "string"},
        "vendor": {"type": "string"},
        "date": {"type": "string"},
        "currency": {"type": "string"},
        "total": {"type": "number"},
    },
}

SYSTEM = {
    "ticket-routing": (
        "Route the customer ticket to one team. "
        "Answer with one word: billing, technical, account or shipping."
    ),
    "review-sentiment": (
        "Classify the sentiment of the product review. Answer with one word: positive, negative or neutral."
    ),
    "invoice-extraction": (
        "Extract invoice_number, vendor, date (YYYY-MM-DD), currency and total (number) from the invoice. "
        "Answer with JSON only."
    ),
    "call-summaries": (
        "Summarise the support call in two sentences: the customer's problem and the resolution."
    ),
    "research-agent": (
        "You are Acme's market research agent. Use the tools to gather facts, then write a sourced brief."
    ),
}


def fill(rng: random.Random, template: str) -> str:
    """A template with plausible values in its slots."""
    return template.format(
        order=f"A{rng.randint(100000, 999999)}",
        amount=f"{rng.randint(20, 400)}.{rng.randint(0, 99):02d}",
        small=f"{rng.choice([9, 19, 29])}.99",
        month=rng.choice(["April", "May", "June"]),
        days=rng.randint(3, 21),
        device=rng.choice(DEVICES),
        count=rng.randint(3, 12),
        domain=rng.choice(DOMAINS),
        weekday=rng.choice(WEEKDAYS),
        product=rng.choice(PRODUCTS),
        city=rng.choice(CITIES),
    )


def noisy(rng: random.Random, truth: str, labels: list[str], error_rate: float = 0.04) -> str:
    """The incumbent's answer: right most of the time, like a real gpt-4o-mini."""
    return rng.choice([l for l in labels if l != truth]) if rng.random() < error_rate else truth


def ticket(rng: random.Random) -> tuple[str, str]:
    truth = rng.choice(list(TICKETS))
    return fill(rng, rng.choice(TICKETS[truth])), noisy(rng, truth, list(TICKETS))


def review(rng: random.Random) -> tuple[str, str]:
    truth = rng.choices(list(REVIEWS), weights=[5, 3, 2])[0]
    return fill(rng, rng.choice(REVIEWS[truth])), noisy(rng, truth, list(REVIEWS))


def invoice(rng: random.Random, day: datetime) -> tuple[str, str]:
    number, vendor = f"INV-{day:%Y}-{rng.randint(1000, 9999)}", rng.choice(VENDORS)
    currency, lines = rng.choice(["EUR", "USD", "GBP"]), rng.randint(1, 4)
    items = [(rng.choice(PRODUCTS), rng.randint(1, 40), rng.randint(5, 120)) for _ in range(lines)]
    total = round(sum(q * p for _, q, p in items) * 1.2, 2)
    body = "\n".join(f"  {q} x {name} @ {p:.2f}" for name, q, p in items)
    text = (
        f"INVOICE {number}\nFrom: {vendor}\nIssued: {day:%d %B %Y}\n"
        f"Bill to: Acme Retail Ltd\nItems:\n{body}\n"
        f"VAT 20%\nTotal due: {currency} {total:,.2f}\nPayment terms: Net 30"
    )
    answer = {
        "invoice_number": number,
        "vendor": vendor,
        "date": f"{day:%Y-%m-%d}",
        "currency": currency,
        "total": total,
    }
    return text, json.dumps(answer)


def call(rng: random.Random) -> tuple[str, str]:
    topic, cause, fix = (fill(rng, part) for part in rng.choice(CALL_TOPICS))
    name = rng.choice(["Maria", "Tom", "Aisha", "Lukas", "Chen", "Sofia"])
    transcript = (
        f"Agent: Thanks for calling Acme, this is {name}. How can I help?\n"
        f"Customer: Hi, I'm calling about {topic}. It's been a frustrating week.\n"
        f"Agent: I'm sorry to hear that. Let me check your order... I see that {cause}.\n"
        f"Customer: So what can you do about it?\nAgent: I've arranged {fix}.\n"
        "Customer: Okay, that works for me. Thanks.\nAgent: You're welcome, have a good day."
    )
    summary = f"The customer called about {topic}; {cause}. The agent resolved it with {fix}."
    return transcript, summary


def agent_trace(rng: random.Random) -> tuple[list[dict], str]:
    """A multi-turn research trace with tool calls; the final answer is long and sourced."""
    market, city = (
        rng.choice(["smart kettles", "air fryers", "ergonomic chairs", "rain jackets"]),
        rng.choice(CITIES),
    )
    question = (
        f"Compare the top three competitors for {market} in {city} and recommend a pricing strategy for Q3."
    )
    messages = [
        {"role": "system", "content": SYSTEM["research-agent"]},
        {"role": "user", "content": question},
    ]
    for step, tool in enumerate(["web_search", "fetch_page", "price_tracker"][: rng.randint(2, 3)]):
        call_id = f"call_{rng.getrandbits(48):012x}"
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": tool,
                            "arguments": json.dumps({"query": f"{market} {city} step {step}"}),
                        },
                    }
                ],
            }
        )
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call_id,
                "content": f"{tool} results: {rng.randint(3, 9)} sources about {market} pricing in {city}.",
            }
        )
    answer = (
        f"Brief: {market} in {city}. The three leading competitors price between {rng.randint(30, 60)} and "
        f"{rng.randint(61, 140)} EUR, with promotions concentrated around payday weekends. "
        * 6
        + "Recommendation: hold list prices, add a bundle at a 12% discount, "
        "and review weekly with the price tracker."
    )
    return messages, answer


# --------------------------------------------------------------------------- rows


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


def when(rng: random.Random, use_case: str) -> datetime:
    """Realtime work follows office hours; the nightly batch jobs run between 01:00 and 04:00 UTC."""
    day = START + timedelta(days=rng.randrange(DAYS))
    hour = (
        rng.randint(1, 3)
        if use_case in ("review-sentiment", "invoice-extraction")
        else int(min(21, max(6, rng.gauss(13, 3.5))))
    )
    return day + timedelta(
        hours=hour, minutes=rng.randrange(60), seconds=rng.randrange(60), milliseconds=rng.randrange(1000)
    )


def make_row(rng: random.Random, use_case: str, index: int) -> dict:
    ts = when(rng, use_case)
    if use_case == "research-agent":
        messages, answer = agent_trace(rng)
        model, latency = "gpt-4o", rng.uniform(8000, 30000)
    else:
        text, answer = {
            "ticket-routing": lambda: ticket(rng),
            "review-sentiment": lambda: review(rng),
            "invoice-extraction": lambda: invoice(rng, ts),
            "call-summaries": lambda: call(rng),
        }[use_case]()
        messages = [{"role": "system", "content": SYSTEM[use_case]}, {"role": "user", "content": text}]
        model, latency = "gpt-4o-mini", rng.uniform(250, 900) * (1 + len(answer) / 200)
    failed = rng.random() < 0.01
    prompt = sum(tokens(m.get("content") or json.dumps(m.get("tool_calls"))) + 4 for m in messages)
    digest = hashlib.sha1(f"{SEED}-{use_case}-{index}".encode()).hexdigest()
    return {
        "request_id": f"chatcmpl-{digest[:24]}",
        "ts": ts,
        "use_case": use_case,
        "model": model,
        "provider": "openai",
        "prompt_tokens": prompt,
        "completion_tokens": 0 if failed else tokens(answer),
        "latency_ms": round(latency, 1),
        "status": "error" if failed else "ok",
        "error_type": "RateLimitError" if failed else None,
        "messages": messages,
        "response": None if failed else answer,
    }


def generate_rows(scale: float = 1.0, seed: int = SEED) -> list[dict]:
    """All rows of the 30 days, in time order; the same seed gives the same logs."""
    rng = random.Random(seed)
    rows = [make_row(rng, uc, i) for uc, n in VOLUME.items() for i in range(max(1, int(n * scale)))]
    return sorted(rows, key=lambda r: r["ts"])


# --------------------------------------------------------------------------- writers


def canonical_record(row: dict) -> dict:
    metadata = {"app": "acme-web", "env": "prod", "tags": [f"use_case:{row['use_case']}"]}
    return {
        "request_id": row["request_id"],
        "ts": row["ts"].isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "use_case": row["use_case"],
        "model": row["model"],
        "provider": row["provider"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "latency_ms": row["latency_ms"],
        "status": row["status"],
        "error_type": row["error_type"],
        "cost_usd": None,
        "request": json.dumps(row["messages"]),
        "response": row["response"],
        "metadata": json.dumps(metadata),
    }


SPENDLOG_COLUMNS = [
    "request_id",
    "call_type",
    "api_key",
    "spend",
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
    "startTime",
    "endTime",
    "model",
    "model_group",
    "custom_llm_provider",
    "api_base",
    "user",
    "metadata",
    "cache_hit",
    "request_tags",
    "team_id",
    "end_user",
    "messages",
    "response",
    "status",
]


def spendlog_record(row: dict, rng: random.Random) -> dict:
    """One LiteLLM_SpendLogs row; its metadata carries the key alias and a header a careless proxy logged."""
    price_in, price_out = PRICES[row["model"]]
    end = row["ts"] + timedelta(milliseconds=row["latency_ms"])
    tags = [f"use_case:{row['use_case']}", "team:data-ops"]
    metadata = {
        "tags": tags,
        "user_api_key_alias": "batch-jobs",
        "user_api_key": f"sk-acme{rng.getrandbits(64):016x}",
        "headers": {"authorization": f"Bearer sk-acme-{rng.getrandbits(64):016x}"},
        "error_information": {"error_class": row["error_type"]} if row["error_type"] else {},
    }
    response = {
        "id": row["request_id"],
        "object": "chat.completion",
        "model": row["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": row["response"]}}],
    }
    return {
        "request_id": row["request_id"],
        "call_type": "acompletion",
        "api_key": hashlib.sha256(b"acme").hexdigest(),
        "spend": round(row["prompt_tokens"] * price_in + row["completion_tokens"] * price_out, 10),
        "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "startTime": row["ts"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "endTime": end.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "model": row["model"],
        "model_group": row["model"],
        "custom_llm_provider": "openai",
        "api_base": "https://api.openai.com/v1",
        "user": "",
        "metadata": json.dumps(metadata),
        "cache_hit": "False",
        "request_tags": json.dumps(tags),
        "team_id": "",
        "end_user": "",
        "messages": json.dumps(row["messages"]),
        "response": json.dumps(response) if row["response"] else "",
        "status": "failure" if row["status"] == "error" else "success",
    }


PROXY_USE_CASES = ("review-sentiment", "invoice-extraction")


def write_logs(out_dir: Path, scale: float = 1.0, seed: int = SEED) -> dict[str, Path]:
    """Write both log files (and their small imperfections); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, rng = generate_rows(scale, seed), random.Random(seed + 1)
    app = [canonical_record(r) for r in rows if r["use_case"] not in PROXY_USE_CASES]
    proxy = [spendlog_record(r, rng) for r in rows if r["use_case"] in PROXY_USE_CASES]
    app_path, proxy_path = out_dir / "app_usage.jsonl", out_dir / "litellm_spendlogs.csv"
    lines = [json.dumps(record) for record in app]
    lines.insert(len(lines) // 2, lines[len(lines) // 3])  # a retry the app logged twice
    lines.insert(len(lines) // 4, lines[len(lines) // 4][:70])  # a line cut off when a pod was killed
    app_path.write_text("\n".join(lines) + "\n")
    with proxy_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SPENDLOG_COLUMNS)
        writer.writeheader()
        writer.writerows(proxy + proxy[5:6])  # the proxy exported one row twice
    return {"app": app_path, "proxy": proxy_path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=".workhorse/logs", type=Path)
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply every use case's volume.")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    for name, path in write_logs(args.out_dir, args.scale, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
