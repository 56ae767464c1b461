"""Golden outputs: seeded books run through the engine give exactly the recorded results.

The golden file was written by the engine *before* its speed work, so any change in trades,
quantities, reasons, sentences, projected holdings/weights, drift, notices or summaries of
these accounts is caught. The cases are the benchmark's generated books (40 tactical SMAs,
10 strategic UMAs, a few with raise/invest-cash requests) plus seeded SMAs and UMAs that
exercise restrictions, equivalence sets, hold/replacement, freed-cash policies, share-based
models, minimums and fractional shares.

Regenerate (only when an output change is intended, and say why in the commit):

    uv run python libs/engine/tests/test_engine_golden.py
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from ballast_engine.builders import (
    reference,
    restriction,
    synthetic_sma_book,
    synthetic_uma_book,
)
from ballast_engine.builders import sleeve as make_sleeve
from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    FreedCashPolicy,
    Model,
    ModelEntry,
    RangeKind,
    RebalanceInput,
    RebalanceRange,
    Request,
    RequestKind,
    Security,
    Settings,
    Strategy,
    StrategyEntry,
)
from ballast_engine.rebalance import measure_drift, rebalance

GOLDEN = Path(__file__).parent / "golden" / "engine_golden.json"


def _varied_sma(rng: random.Random, i: int) -> RebalanceInput:
    """One SMA with a random mix of the settings, restrictions and model features."""
    n = rng.randint(4, 9)
    syms = [f"V{k}" for k in range(n)]
    sectors = ["Tech", "Energy", "Health"]
    secs = {
        s: Security(
            s,
            round(rng.uniform(1.0, 450.0), 2),
            rng.choice(["eq", "bond", "intl"]),
            rng.choice(sectors),
            rng.random() < 0.5,
        )
        for s in syms
    }
    chosen = rng.sample(syms, rng.randint(2, n - 1))
    others = [s for s in syms if s not in chosen]
    share_based = rng.random() < 0.15
    raw = [rng.uniform(0.05, 1.0) for _ in chosen]
    cash_w = rng.choice([0.0, 0.0, 0.02, 0.05])
    entries = []
    for s, r in zip(chosen, raw, strict=True):
        hold = not share_based and rng.random() < 0.12
        repl = rng.choice(others) if hold and others and rng.random() < 0.6 else None
        band = Band(BandKind.ABSOLUTE, 0.005) if rng.random() < 0.1 else None
        w = r / sum(raw) * (1 - cash_w)
        if share_based:
            entries.append(ModelEntry(s, shares=float(rng.randint(1, 50))))
        else:
            entries.append(ModelEntry(s, w, hold=hold, replacement=repl, band=band))
    model = (
        Model("M", tuple(entries), "shares", cash=float(rng.choice([0, 500])))
        if share_based
        else Model("M", tuple(entries), "weights", cash_w)
    )
    eq = [rng.sample(syms, rng.randint(2, 3))] if rng.random() < 0.4 else []
    ref = reference(secs, [model], lists={"screen": syms[:2]}, equivalence=eq)
    restr = []
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        kind = rng.choice(["do_not_buy", "do_not_sell", "do_not_hold"])
        u = rng.random()
        if u < 0.2:
            restr.append(restriction(kind, rng.choice(sectors), "sector", "firm"))
        elif u < 0.3:
            restr.append(restriction(kind, "screen", "list", "advisor"))
        else:
            restr.append(restriction(kind, rng.choice(syms)))
    settings = Settings(
        min_trade_value=rng.choice([0.0, 0.0, 50.0, 250.0]),
        min_trade_shares=rng.choice([0.0, 0.0, 1.0, 3.0]),
        min_opening_trade_value=rng.choice([0.0, 0.0, 500.0]),
        fractional=rng.random() < 0.5,
        share_decimals=rng.choice([0, 2, 3]),
        cash_target=rng.choice([0.0, 0.01, 0.03]),
        cash_reserve=rng.choice([0.0, 0.0, 100.0, 1500.0]),
        cash_band=Band(BandKind.ABSOLUTE, rng.choice([0.0, 0.005, 0.02])),
        security_band=rng.choice(
            [Band(), Band(BandKind.ABSOLUTE, 0.01), Band(BandKind.RELATIVE, 0.2)]
        ),
        freed_cash=rng.choice(list(FreedCashPolicy)),
    )
    big = rng.random() < 0.5
    held = {
        s: float(rng.randint(0, 40_000 if big else 400)) + rng.choice([0.0, 0.0, 0.25])
        for s in rng.sample(syms, rng.randint(0, n))
    }
    cash = round(rng.uniform(-500.0, 60_000.0), 2)
    sl = make_sleeve("main", "M", held, cash, settings, restr[:1])
    acct = Account(f"V{i:03d}", (sl,), restrictions=tuple(restr[1:]))
    kind = rng.choice(
        [RequestKind.REBALANCE] * 3 + [RequestKind.RAISE_CASH, RequestKind.INVEST_CASH]
    )
    amount = 0.0 if kind is RequestKind.REBALANCE else round(rng.uniform(0, 20_000), 2)
    return RebalanceInput(acct, ref, Request(kind, amount))


def _varied_uma(rng: random.Random, i: int) -> RebalanceInput:
    """A UMA of 2-3 sleeves with bands, a rebalance range, unallocated cash and a request."""
    k = rng.randint(2, 3)
    secs: dict[str, Security] = {}
    models = []
    for j in range(k):
        syms = [f"U{j}{x}" for x in range(rng.randint(3, 6))]
        for s in syms:
            secs[s] = Security(s, round(rng.uniform(5.0, 300.0), 2), f"c{j}", f"sec{j}", True)
        raw = [rng.uniform(0.2, 1.0) for _ in syms]
        models.append(
            Model(
                f"MOD{j}",
                tuple(ModelEntry(s, r / sum(raw) * 0.98) for s, r in zip(syms, raw, strict=True)),
                "weights",
                0.02,
            )
        )
    tw = [rng.uniform(0.5, 1.5) for _ in range(k)]
    tw = [w / sum(tw) for w in tw]
    tw[-1] = 1.0 - sum(tw[:-1])
    band_kind = rng.choice([BandKind.RELATIVE, BandKind.ABSOLUTE])
    width = 0.1 if band_kind is BandKind.RELATIVE else 0.03
    rr = rng.choice(
        [
            RebalanceRange(),
            RebalanceRange(RangeKind.BAND),
            RebalanceRange(RangeKind.INTERIOR, float(rng.choice([25, 50, 90]))),
        ]
    )
    strat = Strategy(
        "ST",
        tuple(
            StrategyEntry(f"MOD{j}", tw[j], Band(band_kind, min(width, tw[j] * 0.9)))
            for j in range(k)
        ),
        rr,
    )
    ref = reference(secs, models, [strat])
    settings = Settings(
        min_trade_value=rng.choice([0.0, 25.0, 100.0]),
        fractional=rng.random() < 0.5,
        cash_target=rng.choice([0.0, 0.01]),
        cash_reserve=rng.choice([0.0, 250.0]),
        security_band=Band(BandKind.ABSOLUTE, rng.choice([0.0, 0.005, 0.02])),
    )
    value = rng.uniform(50_000, 800_000)
    sleeves = []
    for j, m in enumerate(models):
        sv = value * tw[j] * rng.uniform(0.6, 1.4)
        held = {
            e.symbol: float(int(e.weight * sv / secs[e.symbol].price * rng.uniform(0.8, 1.2)))
            for e in m.entries
        }
        restr = [restriction("do_not_sell", m.entries[0].symbol)] if rng.random() < 0.3 else []
        sleeves.append(make_sleeve(f"s{j}", m.model_id, held, round(sv * 0.01, 2), settings, restr))
    acct = Account(
        f"W{i:03d}",
        tuple(sleeves),
        cash=round(rng.choice([0.0, 0.0, rng.uniform(0, 20_000)]), 2),
        strategy_id="ST",
    )
    kind = rng.choice(
        [RequestKind.REBALANCE] * 2 + [RequestKind.RAISE_CASH, RequestKind.INVEST_CASH]
    )
    amount = 0.0 if kind is RequestKind.REBALANCE else round(rng.uniform(0, 30_000), 2)
    return RebalanceInput(acct, ref, Request(kind, amount))


def cases() -> list[tuple[str, RebalanceInput]]:
    out: list[tuple[str, RebalanceInput]] = []
    sma = synthetic_sma_book(40, 20, seed=5)
    out += [(f"sma/{a.account_id}", RebalanceInput(a, sma.reference)) for a in sma.accounts]
    uma = synthetic_uma_book(10, 4, 25, seed=9)
    out += [(f"uma/{a.account_id}", RebalanceInput(a, uma.reference)) for a in uma.accounts]
    for a, kind, amount in (
        (sma.accounts[0], RequestKind.RAISE_CASH, 12_345.67),
        (sma.accounts[1], RequestKind.INVEST_CASH, 5_000.0),
        (uma.accounts[0], RequestKind.RAISE_CASH, 40_000.0),
        (uma.accounts[1], RequestKind.INVEST_CASH, 25_000.0),
    ):
        ref = sma.reference if a.account_id.startswith("A") else uma.reference
        out.append(
            (f"request/{a.account_id}/{kind.value}", RebalanceInput(a, ref, Request(kind, amount)))
        )
    rng = random.Random(20261122)
    out += [(f"varied-sma/{i}", _varied_sma(rng, i)) for i in range(60)]
    out += [(f"varied-uma/{i}", _varied_uma(rng, i)) for i in range(15)]
    return out


def snapshot(name: str, inp: RebalanceInput) -> dict[str, Any]:
    """The result as JSON, compacted to keep the file small: trades as rows, long lists
    (drift items; the generated books' repetitive sentences and 20-100-position projected
    holdings and weights; each sleeve's copy of its trades) as digests; plus a digest of
    the stand-alone drift measure."""
    try:
        d = rebalance(inp).to_dict()
    except Exception as exc:  # an invalid generated case: its error is part of the record
        return {"error": f"{type(exc).__name__}: {exc}"}
    trades = d.pop("trades")
    cols = ["sleeve_id", "symbol", "side", "quantity", "price", "estimated_value", "reason"]
    cols += ["opens_position", "closes_position"]
    d["trades"] = [[t[c] for c in cols] for t in trades]
    assert all(t["account_id"] == d["account_id"] for t in trades)
    sentences = [t["explanation"] for t in trades]
    if name.startswith("varied"):
        d["explanations"] = sentences
    else:
        d["explanations_sha256"] = _digest(sentences)
    for s in d["sleeves"]:
        s["trades_sha256"] = _digest(s.pop("trades"))
        if not name.startswith("varied"):  # 20-100 positions: a digest
            for k in ("projected_holdings", "projected_weights"):
                s[k + "_sha256"] = _digest(s.pop(k))
    for key in ("drift_before", "drift_after"):
        dd = d[key]
        items, oob = dd.pop("items"), dd.pop("out_of_band")
        dd["items_count"], dd["items_sha256"] = len(items), _digest(items)
        dd["out_of_band_count"], dd["out_of_band_sha256"] = len(oob), _digest(oob)
    d["measure_drift_sha256"] = _digest(measure_drift(inp.account, inp.reference).to_dict())
    return d


def _digest(x: Any) -> str:
    return hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()[:20]


def produce() -> dict[str, Any]:
    return {name: snapshot(name, inp) for name, inp in cases()}


def test_engine_outputs_match_golden() -> None:
    golden = json.loads(GOLDEN.read_text())
    now = json.loads(json.dumps(produce()))
    assert set(now) == set(golden)
    differ = [k for k in golden if now[k] != golden[k]]
    if differ:  # show the first difference in full
        k = differ[0]
        assert now[k] == golden[k], f"{len(differ)} cases differ from the golden file, first {k}"


def test_golden_covers_trades_and_features() -> None:
    """The golden cases are not trivial: they trade, with every reason and several notices."""
    golden = json.loads(GOLDEN.read_text())
    results = [v for v in golden.values() if "error" not in v]
    assert len(results) >= 100
    reasons = {t[6] for r in results for t in r["trades"]}
    assert reasons >= {"drift", "restriction", "not_in_model", "cash_need", "invest_cash"}
    notices = {n["code"] for r in results for n in r["notices"]}
    assert {"below_minimum", "kept_do_not_sell"} <= notices
    assert sum(len(r["trades"]) for r in results) > 1000
    assert any(r["cash_movements"] for r in results)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    data = produce()
    lines = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in data.items()]
    GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one case per line
    print(f"wrote {GOLDEN} ({len(data)} cases, {GOLDEN.stat().st_size:,} bytes)", file=sys.stderr)
