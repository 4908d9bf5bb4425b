"""The demo's input, seeded, and the ground truth computed from it (the oracle).

Web clicks (views, add-to-cart, purchases) of users in sessions over simulated event time,
delivered a little out of order; a few very late clicks; a few malformed records; one
super-active user (`user_123`, a hot key); a product catalog; and the purchases as their own
topic. The oracle computes every answer the pipeline must reproduce, by brute force over the
same events: sessions, spend per user, the top-k products per hopping window, the fraud
rule's alerts.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamkit.windows import top_items

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: event time starts here
CATEGORIES = ["books", "garden", "kitchen", "music", "toys"]
HOT_USER = "user_123"


@dataclass(frozen=True)
class Config:
    clicks: int = 6000  # clicks of the sessions (before late, malformed and flush records)
    users: int = 150
    products: int = 40
    span_s: int = 2400  # event time the sessions spread over
    gap_s: int = 30  # session gap
    jitter_s: int = 10  # delivery is out of order by up to this much event time
    late: int = 5  # clicks a day older than the rest, sent in the second half
    malformed: int = 7
    hot_share: float = 0.2  # the share of sessions that are user_123's
    window_s: int = 300  # trending: hopping windows of this size
    hop_s: int = 60  # ... starting every hop_s
    top: int = 5
    fraud: int = 4  # the fraud rule: this many purchases of a user within a minute
    seed: int = 7

    @classmethod
    def short(cls) -> Config:
        return cls(clicks=1500, users=60, span_s=600, late=3, malformed=5)


@dataclass
class Input:
    catalog: list[tuple[bytes, bytes]]
    clicks: list[tuple[bytes | None, bytes]]  # in delivery order (key, value)
    purchases: list[tuple[str, bytes, bytes]]  # (the purchase click's id, key, value)
    flush: list[bytes]  # one click per clicks partition at the end: closes every session
    valid: list[dict[str, Any]] = field(default_factory=list)  # every click that parses
    late_ids: set[str] = field(default_factory=set)


def catalog(cfg: Config) -> dict[str, dict[str, Any]]:
    rng = random.Random(cfg.seed * 31)
    return {
        f"p{i:03d}": {
            "name": f"{CATEGORIES[i % len(CATEGORIES)]} item {i}",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "price_cents": rng.randrange(199, 9999),
        }
        for i in range(cfg.products)
    }


def generate(cfg: Config) -> Input:
    rng = random.Random(cfg.seed)
    products = catalog(cfg)
    ids = sorted(products)
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(ids))]  # a few popular products
    users = [f"user_{i}" for i in range(1, cfg.users + 1) if f"user_{i}" != HOT_USER]
    gap_ms = cfg.gap_s * 1000
    clicks: list[dict[str, Any]] = []
    n = 0
    while len(clicks) < cfg.clicks:
        user = HOT_USER if rng.random() < cfg.hot_share else rng.choice(users)
        ts = T0_MS + rng.randrange(cfg.span_s * 1000 - 15 * gap_ms)
        for page in range(rng.randint(1, 12)):
            if page:
                ts += rng.randrange(1000, int(gap_ms * 0.8))
            product = rng.choices(ids, weights)[0]
            kind = rng.choices(["view", "cart", "purchase"], [0.8, 0.12, 0.08])[0]
            click = {"id": f"c{n}", "user_id": user, "kind": kind, "product_id": product, "ts": 0.0}
            click["ts"] = ts / 1000
            if kind == "purchase":
                click["cents"] = products[product]["price_cents"] * rng.randint(1, 3)
            clicks.append(click)
            n += 1
    # delivery order: by event time plus a random delay of up to jitter_s
    delay = {c["id"]: rng.uniform(0, cfg.jitter_s) for c in clicks}
    clicks.sort(key=lambda c: c["ts"] + delay[c["id"]])
    records: list[tuple[bytes | None, bytes]] = [
        (c["user_id"].encode(), orjson.dumps(c)) for c in clicks
    ]
    late: list[dict[str, Any]] = []
    for i in range(cfg.late):  # a day old: every window and session they belong to is closed
        user = rng.choice(users)
        click = {
            "id": f"late{i}",
            "user_id": user,
            "kind": "view",
            "product_id": rng.choice(ids),
            "ts": (T0_MS - 86_400_000 + i * 1000) / 1000,
        }
        late.append(click)
        at = rng.randrange(int(len(records) * 0.6), int(len(records) * 0.9))
        records.insert(at, (user.encode(), orjson.dumps(click)))
    bad = [b"{not json", b'{"user_id": 5}', b'{"kind": "view"}', b"\xff\xfe", b"[]", b"null"]
    for i in range(cfg.malformed):
        records.insert(rng.randrange(len(records)), (b"bad", bad[i % len(bad)]))
    purchases = [
        (
            c["id"],
            c["user_id"].encode(),
            orjson.dumps(
                {
                    "user_id": c["user_id"],
                    "product_id": c["product_id"],
                    "amount": c["cents"] / 100,
                    "ts": c["ts"],
                }
            ),
        )
        for c in clicks
        if c["kind"] == "purchase"
    ]
    end_ms = T0_MS + cfg.span_s * 1000 + 3600_000  # far past every session and window
    flush = [
        orjson.dumps(
            {"id": f"flush{p}", "user_id": f"_flush{p}", "kind": "view", "product_id": ids[0]}
            | {"ts": end_ms / 1000}
        )
        for p in range(16)
    ]
    out = Input(
        catalog=[(pid.encode(), orjson.dumps(row)) for pid, row in products.items()],
        clicks=records,
        purchases=purchases,
        flush=flush,
    )
    out.valid = clicks + late + [orjson.loads(f) for f in flush]
    out.late_ids = {c["id"] for c in late}
    return out


@dataclass
class Truth:
    sessions: list[tuple[str, int, int, int, int]]  # (user, start ms, end ms, pages, spend)
    spend: dict[str, int]  # cents per user
    trending: dict[tuple[int, int], list[list[Any]]]  # (start, end) → [[product, count], ...]
    clicks_valid: int
    malformed: int
    late: int
    events_per_user: collections.Counter[str]
    # conversion: (view id, bought) → outputs of the left join (one per purchase, or one)
    conversions: collections.Counter[tuple[str, bool]]
    # the fraud rule: (user, t, purchases in [t - 60 s, t]) for each purchase time t with
    # at least `fraud` of them
    alerts: list[tuple[str, int, int]] = field(default_factory=list)


def oracle(cfg: Config, data: Input) -> Truth:
    gap = cfg.gap_s * 1000
    on_time = [c for c in data.valid if c["id"] not in data.late_ids]
    real = [c for c in on_time if not c["id"].startswith("flush")]
    per_user: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for c in real:
        per_user[c["user_id"]].append(c)
    sessions = []
    for user, cs in per_user.items():
        cs.sort(key=lambda c: c["ts"])
        current: list[dict[str, Any]] = []
        for event in [*cs, None]:
            ts = None if event is None else round(event["ts"] * 1000)
            if current and (ts is None or ts >= round(current[-1]["ts"] * 1000) + gap):
                start = round(current[0]["ts"] * 1000)
                end = round(current[-1]["ts"] * 1000) + gap
                cents = sum(x.get("cents", 0) for x in current)
                sessions.append((user, start, end, len(current), cents))
                current = []
            if event is not None:
                current.append(event)
    spend: dict[str, int] = collections.Counter()
    for _, _, value in data.purchases:
        p = orjson.loads(value)
        spend[p["user_id"]] += round(p["amount"] * 100)
    # trending: the top k products of every hopping window, by brute force
    size, hop = cfg.window_s * 1000, cfg.hop_s * 1000
    counts: dict[tuple[int, int], collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for c in on_time:
        ts = round(c["ts"] * 1000)
        start = ts - ts % hop
        while start > ts - size:
            counts[(start, start + size)][c["product_id"]] += 1
            start -= hop
    trending = {window: top_items(dict(c), cfg.top) for window, c in counts.items()}
    bought: dict[str, list[int]] = collections.defaultdict(list)
    for c in real:
        if c.get("kind") == "purchase":
            bought[c["user_id"]].append(round(c["ts"] * 1000))
    alerts = []
    for user, times in bought.items():
        for t in sorted(set(times)):
            n = sum(1 for other in times if t - 60_000 <= other <= t)
            if n >= cfg.fraud:
                alerts.append((user, t, n))
    conversions = conversion_oracle(real, data)
    return Truth(
        sessions=sorted(sessions),
        spend=dict(spend),
        trending=trending,
        clicks_valid=len(data.valid),
        malformed=cfg.malformed,
        late=len(data.late_ids),
        events_per_user=collections.Counter(c["user_id"] for c in data.valid),
        alerts=sorted(alerts),
        conversions=conversions,
    )


def conversion_oracle(
    clicks: list[dict[str, Any]], data: Input, within_s: int = 1800
) -> collections.Counter[tuple[str, bool]]:
    """Every on-time view ⋈ every purchase of the same user and product at most `within_s`
    after it (both ends included): one output per pair, or the view alone."""
    bought: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for _, _, value in data.purchases:
        p = orjson.loads(value)
        bought[(p["user_id"], p["product_id"])].append(round(p["ts"] * 1000))
    out: collections.Counter[tuple[str, bool]] = collections.Counter()
    for c in clicks:
        if c.get("kind") != "view":
            continue
        tv = round(c["ts"] * 1000)
        pairs = sum(
            1 for tp in bought[(c["user_id"], c["product_id"])] if 0 <= tp - tv <= within_s * 1000
        )
        if pairs:
            out[(c["id"], True)] += pairs
        else:
            out[(c["id"], False)] += 1
    return out
