"""A seeded synthetic direct-index sleeve: N names in 11 sectors, K style factors, ~3 lots a
name bought over five years at prices that moved with the market and the name."""

from __future__ import annotations

from datetime import date

import numpy as np
from ballast_engine.optimizer import LotArrays, SleeveProblem

SECTORS = (
    "Communication",
    "Consumer Discretionary",
    "Consumer Staples",
    "Energy",
    "Financials",
    "Health Care",
    "Industrials",
    "Information Technology",
    "Materials",
    "Real Estate",
    "Utilities",
)
FACTORS = ("market", "size", "value", "momentum", "quality")
ON = date(2026, 12, 7)


def sleeve(
    seed: int,
    *,
    names: int = 500,
    lots_per_name: float = 3.0,
    value: float = 1_000_000.0,
    cash_weight: float = 0.02,
    fractional: bool = False,
    drift: float = 0.25,
) -> SleeveProblem:
    """One seeded sleeve near its index (``drift``: spread of holdings around target)."""
    rng = np.random.default_rng(seed)
    sectors = rng.integers(0, len(SECTORS), names)
    sectors[: len(SECTORS)] = np.arange(len(SECTORS))
    caps = rng.lognormal(0.0, 1.2, names)
    weights = caps / caps.sum()
    prices = np.round(rng.lognormal(4.3, 0.7, names), 2) + 1.0
    exposures = rng.normal(0.0, 1.0, (names, len(FACTORS)))
    exposures[:, 0] = 1.0 + 0.3 * rng.normal(size=names)
    vols = np.array([0.16, 0.04, 0.04, 0.05, 0.03])
    corr = np.eye(len(FACTORS)) * 0.8 + 0.2
    factor_cov = np.outer(vols, vols) * corr
    specific_vol = rng.uniform(0.15, 0.40, names)

    held = weights * (1 - cash_weight) * value * rng.lognormal(0.0, drift, names)
    shares = np.floor(held / prices) if not fractional else np.round(held / prices, 3)
    n_lots = rng.poisson(lots_per_name - 1, names) + 1
    lot_name = np.repeat(np.arange(names), n_lots)
    split = rng.dirichlet(np.ones(3), len(lot_name))[:, 0] + 0.2
    per_name = np.bincount(lot_name, weights=split, minlength=names)
    qty = shares[lot_name] * split / per_name[lot_name]
    qty = np.maximum(np.floor(qty) if not fractional else np.round(qty, 3), 1.0)
    days = rng.integers(1, 5 * 365, len(lot_name))
    start = np.array(ON, dtype="datetime64[D]") - days.astype("timedelta64[D]")
    growth = np.exp(rng.normal(0.08, 0.30, len(lot_name)) * days / 365)
    basis = np.round(qty * prices[lot_name] / growth, 2)
    cash = value - float(np.bincount(lot_name, weights=qty, minlength=names) @ prices)
    return SleeveProblem(
        names=np.array([f"S{i:03d}" for i in range(names)]),
        index_weights=weights,
        prices=prices,
        sectors=sectors.astype(np.int64),
        sector_names=SECTORS,
        exposures=exposures,
        factor_names=FACTORS,
        factor_cov=factor_cov,
        specific_vol=specific_vol,
        lots=LotArrays(
            name=lot_name.astype(np.int64),
            quantity=qty,
            basis=basis,
            holding_start=start,
            lot_ids=tuple(f"L{k}" for k in range(len(lot_name))),
        ),
        cash=max(cash, 0.0),
        on=ON,
        fractional=fractional,
        account_id=f"ACC-{seed}",
        min_trade_value=25.0,
    )
