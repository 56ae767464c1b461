"""The demo's direct index: ~300 generated stocks in 11 sectors with a small factor model
(market and three styles), a model that follows them, and accounts that hold it.

Seeded and deterministic. Symbols, prices and exposures are generated, not market data:
prices are lognormal around $80, each name's market beta is near 1 (its sector's beta plus
noise), style exposures are z-scores, and the factor covariance is a market volatility of
16% a year and style volatilities of 3-6% with small correlations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from ballast_demo.book import Account, OpeningLot

SECTORS = [
    ("Information Technology", 1.2),
    ("Health Care", 0.9),
    ("Financials", 1.1),
    ("Consumer Discretionary", 1.15),
    ("Communication Services", 1.05),
    ("Industrials", 1.0),
    ("Consumer Staples", 0.7),
    ("Energy", 1.1),
    ("Utilities", 0.6),
    ("Real Estate", 0.9),
    ("Materials", 1.05),
]
FACTORS = ["market", "value", "size", "momentum"]
# yearly volatilities and correlations of the factors
_VOLS = [0.16, 0.05, 0.04, 0.06]
_CORR = [
    [1.0, -0.1, 0.2, 0.0],
    [-0.1, 1.0, 0.1, -0.3],
    [0.2, 0.1, 1.0, 0.0],
    [0.0, -0.3, 0.0, 1.0],
]
SPECIFIC_VOLATILITY = "0.28"


@dataclass(frozen=True)
class IndexName:
    symbol: str
    sector: str
    price: Decimal
    weight: Decimal
    exposures: dict[str, Decimal]


def index_names(count: int = 300, seed: int = 12, prefix: str = "DX") -> list[IndexName]:
    """`count` stocks, cap-weighted (lognormal caps), weights to 8 decimals summing to 1."""
    rng = random.Random(seed)
    raw = []
    for i in range(count):
        sector, beta = SECTORS[i % len(SECTORS)]
        cap = rng.lognormvariate(0, 1.1)
        price = Decimal(str(round(min(max(rng.lognormvariate(4.3, 0.6), 8), 900), 2)))
        exposures = {
            "market": round(beta + rng.gauss(0, 0.15), 4),
            "value": round(rng.gauss(0, 1), 4),
            "size": round(max(min(-0.6 * (cap - 1.8) + rng.gauss(0, 0.5), 3), -3), 4),
            "momentum": round(rng.gauss(0, 1), 4),
        }
        raw.append((f"{prefix}{i + 1:03d}", sector, price, cap, exposures))
    total = sum(r[3] for r in raw)
    weights = [Decimal(str(r[3] / total)).quantize(Decimal("0.00000001"), ROUND_FLOOR) for r in raw]
    weights[0] += Decimal(1) - sum(weights)
    return [
        IndexName(s, sector, price, w, {f: Decimal(str(v)) for f, v in e.items()})
        for (s, sector, price, _, e), w in zip(raw, weights, strict=True)
    ]


def covariance() -> list[list[str]]:
    """The factors' yearly covariance (symmetric, positive definite), as decimal strings."""
    k = len(FACTORS)
    return [[f"{_VOLS[i] * _VOLS[j] * _CORR[i][j]:.8f}" for j in range(k)] for i in range(k)]


def security_rows(names: list[IndexName]) -> list[dict[str, object]]:
    """The index's stocks for the security master."""
    return [
        {
            "symbol": n.symbol,
            "name": f"Demo Stock {n.symbol}",
            "asset_class": "US Equity",
            "sector": n.sector,
            "price": str(n.price),
            "fractional_eligible": False,
        }
        for n in names
    ]


def securities(names: list[IndexName]) -> dict[str, tuple[str, str, str, str]]:
    """The index's stocks as the demo's book files list securities (name, asset class,
    sector, price)."""
    return {
        n.symbol: (f"Demo Stock {n.symbol}", "US Equity", n.sector, str(n.price)) for n in names
    }


def model_body(
    names: list[IndexName], name: str = "US Direct Index 300", **settings: Any
) -> dict[str, object]:
    """The direct-index model as model-hub-svc's PUT /models/{id} takes it."""
    return {
        "name": name,
        "targets": [
            {
                "symbol": n.symbol,
                "weight": str(n.weight),
                "factor_exposures": {f: str(v) for f, v in n.exposures.items()},
            }
            for n in names
        ],
        "direct_index": {
            "risk_model": {
                "factors": FACTORS,
                "covariance": covariance(),
                "specific_volatility": SPECIFIC_VOLATILITY,
            },
            "settings": {
                "tax_sensitivity": "medium",
                "tracking_tolerance": "0.01",
                "harvesting": True,
                "exclusion_rule": "sector",
                **settings,
            },
        },
    }


def reconstituted(names: list[IndexName], leaving: int = 8) -> list[IndexName]:
    """The index after a reconstitution: its `leaving` smallest names leave, their weight
    spread over the others pro rata (weights to 8 decimals summing to 1)."""
    gone = {n.symbol for n in sorted(names, key=lambda n: (n.weight, n.symbol))[:leaving]}
    kept = [n for n in names if n.symbol not in gone]
    total = sum(n.weight for n in kept)
    weights = [(n.weight / total).quantize(Decimal("0.00000001"), ROUND_FLOOR) for n in kept]
    weights[0] += Decimal(1) - sum(weights)
    return [
        IndexName(n.symbol, n.sector, n.price, w, n.exposures)
        for n, w in zip(kept, weights, strict=True)
    ]


def changed_weights(names: list[IndexName], seed: int = 5) -> list[IndexName]:
    """The index after a reconstitution: every weight moved by up to ±30%, renormalized."""
    rng = random.Random(seed)
    moved = [float(n.weight) * rng.uniform(0.7, 1.3) for n in names]
    total = sum(moved)
    weights = [Decimal(str(m / total)).quantize(Decimal("0.00000001"), ROUND_FLOOR) for m in moved]
    weights[0] += Decimal(1) - sum(weights)
    return [
        IndexName(n.symbol, n.sector, n.price, w, n.exposures)
        for n, w in zip(names, weights, strict=True)
    ]


def build_accounts(
    names: list[IndexName],
    model_id: str,
    count: int,
    *,
    seed: int = 21,
    prefix: str = "DI",
    exclusion: str | None = None,
    drift: float = 0.05,
) -> list[Account]:
    """`count` taxable accounts of $250k-$2M holding the index in whole shares (each within
    ±`drift` of its weight), one lot per name bought since 2023 at 70% to 115% of today's
    price (some at a loss), and 0.2% cash; with `exclusion`, every third account excludes that
    symbol (do-not-hold)."""
    rng = random.Random(seed)
    accounts = []
    for i in range(count):
        value = Decimal(str(round(rng.uniform(250_000, 2_000_000), 2)))
        positions: dict[str, Decimal] = {}
        lots: dict[str, list[OpeningLot]] = {}
        for n in names:
            dollars = value * n.weight * Decimal(str(rng.uniform(1 - drift, 1 + drift)))
            shares = (dollars / n.price).to_integral_value(ROUND_FLOOR)
            if shares <= 0:
                continue
            positions[n.symbol] = shares
            factor = Decimal(str(round(rng.uniform(0.7, 1.15), 4)))
            year = rng.choice([2023, 2024, 2025, 2026])
            month = rng.randint(1, 9 if year == 2026 else 12)
            lots[n.symbol] = [
                OpeningLot(
                    shares,
                    (shares * n.price * factor).quantize(Decimal("0.01")),
                    f"{year}-{month:02d}-{rng.randint(1, 28):02d}",
                )
            ]
        account = Account(
            account_id=f"{prefix}-{i + 1:05d}",
            household_id=f"{prefix}H-{i + 1:05d}",
            name=f"Direct index client {i + 1}",
            account_type="taxable",
            model_id=model_id,
            cash=(value / 500).quantize(Decimal("0.01")),
            positions=positions,
            tax_settings={
                "relief_method": "mintax",
                "short_term_rate": "0.37",
                "long_term_rate": "0.20",
                "harvest": True,
            },
            lots=lots,
        )
        if exclusion is not None and i % 3 == 0:
            account.restrictions.append(
                {
                    "kind": "do_not_hold",
                    "scope": "security",
                    "value": exclusion,
                    "source": "client",
                    "reason": "client excludes this company",
                }
            )
        accounts.append(account)
    return accounts
