"""Short-hand constructors for tests, benchmarks and services (plain data, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    Book,
    EquivalenceSet,
    Holding,
    Model,
    ModelEntry,
    RebalanceInput,
    RebalanceRange,
    Reference,
    Request,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Security,
    Settings,
    Sleeve,
    Strategy,
    StrategyEntry,
)


def securities(spec: Mapping[str, float | tuple]) -> dict[str, Security]:
    """``{"VTI": 250.0}`` or ``{"XOM": (110.0, "us_equity", "Energy", False)}``."""
    out = {}
    for sym, v in spec.items():
        if isinstance(v, tuple):
            out[sym] = Security(sym, *v)
        else:
            out[sym] = Security(sym, float(v))
    return out


def weights_model(
    model_id: str, weights: Mapping[str, float], cash_weight: float = 0.0, **entry_opts: dict
) -> Model:
    """A weight-based model; ``entry_opts={"XOM": {"hold": True}}`` style per-entry options."""
    return Model(
        model_id,
        tuple(ModelEntry(s, w, **entry_opts.get(s, {})) for s, w in weights.items()),
        "weights",
        cash_weight,
    )


def reference(
    secs: Mapping[str, Security],
    models: Iterable[Model] = (),
    strategies: Iterable[Strategy] = (),
    lists: Mapping[str, Iterable[str]] | None = None,
    equivalence: Iterable[Iterable[str]] = (),
) -> Reference:
    return Reference(
        dict(secs),
        {m.model_id: m for m in models},
        {s.strategy_id: s for s in strategies},
        {k: frozenset(v) for k, v in (lists or {}).items()},
        tuple(EquivalenceSet(f"eq{i}", tuple(m)) for i, m in enumerate(equivalence)),
    )


def sleeve(
    sleeve_id: str,
    model_id: str,
    holdings: Mapping[str, float],
    cash: float = 0.0,
    settings: Settings | None = None,
    restrictions: Iterable[Restriction] = (),
) -> Sleeve:
    return Sleeve(
        sleeve_id,
        model_id,
        cash,
        tuple(Holding(s, q) for s, q in holdings.items()),
        settings or Settings(),
        tuple(restrictions),
    )


def sma(
    account_id: str,
    model_id: str,
    holdings: Mapping[str, float],
    cash: float = 0.0,
    settings: Settings | None = None,
    restrictions: Iterable[Restriction] = (),
) -> Account:
    return Account(account_id, (sleeve("main", model_id, holdings, cash, settings, restrictions),))


def restriction(
    kind: str, value: str, scope: str = "security", source: str = "client"
) -> Restriction:
    return Restriction(RestrictionKind(kind), RestrictionScope(scope), value, source)


def scenario(account: Account, ref: Reference, request: Request | None = None) -> RebalanceInput:
    return RebalanceInput(account, ref, request or Request())


# --------------------------------------------------------------------------------------------
# Synthetic books for benchmarks


def synthetic_sma_book(n_accounts: int, n_positions: int, seed: int = 7) -> Book:
    """SMAs following one of a few weight models, drifted randomly, whole shares."""
    rng = np.random.default_rng(seed)
    n_sec = n_positions * 3
    syms = [f"S{i:03d}" for i in range(n_sec)]
    prices = np.round(rng.uniform(10, 400, n_sec), 2)
    classes = ["us_equity", "intl_equity", "bonds", "real_estate"]
    secs = {
        s: Security(s, float(p), classes[i % 4], f"sector{i % 11}", bool(i % 2))
        for i, (s, p) in enumerate(zip(syms, prices, strict=True))
    }
    models = []
    for k in range(3):
        pick = rng.choice(n_sec, n_positions, replace=False)
        w = rng.uniform(0.5, 1.5, n_positions)
        w = w / w.sum() * 0.98
        models.append(
            Model(
                f"M{k}",
                tuple(ModelEntry(syms[j], float(x)) for j, x in zip(pick, w, strict=True)),
                "weights",
                0.02,
            )
        )
    settings = Settings(
        min_trade_value=50.0,
        cash_target=0.01,
        security_band=Band(BandKind.ABSOLUTE, 0.01),
        cash_band=Band(BandKind.ABSOLUTE, 0.01),
    )
    accounts = []
    for a in range(n_accounts):
        m = models[a % 3]
        value = float(rng.uniform(50_000, 500_000))
        hold = {}
        for e in m.entries:
            p = secs[e.symbol].price or 1.0
            hold[e.symbol] = float(np.floor(e.weight * value / p * rng.uniform(0.85, 1.15)))
        accounts.append(
            sma(f"A{a:06d}", m.model_id, hold, float(value * rng.uniform(0, 0.05)), settings)
        )
    return Book(reference(secs, models), tuple(accounts))


def synthetic_uma_book(n_accounts: int, n_sleeves: int, n_positions: int, seed: int = 11) -> Book:
    """UMAs with ``n_sleeves`` sleeves of ``n_positions`` each, a strategy with bands."""
    rng = np.random.default_rng(seed)
    secs: dict[str, Security] = {}
    models = []
    classes = ["us_large", "us_small", "intl", "bonds", "reits", "commodities"]
    for k in range(n_sleeves):
        syms = [f"M{k}S{i:02d}" for i in range(n_positions)]
        for s in syms:
            secs[s] = Security(
                s, float(np.round(rng.uniform(10, 400), 2)), classes[k % 6], f"sector{k}", True
            )
        w = rng.uniform(0.5, 1.5, n_positions)
        w = w / w.sum() * 0.99
        models.append(
            Model(
                f"MODEL{k}",
                tuple(ModelEntry(s, float(x)) for s, x in zip(syms, w, strict=True)),
                "weights",
                0.01,
            )
        )
    tw = rng.uniform(0.5, 1.5, n_sleeves)
    tw = tw / tw.sum()
    tw[-1] = 1.0 - tw[:-1].sum()
    strat = Strategy(
        "STRAT",
        tuple(
            StrategyEntry(f"MODEL{k}", float(tw[k]), Band(BandKind.RELATIVE, 0.10))
            for k in range(n_sleeves)
        ),
        RebalanceRange(),
    )
    settings = Settings(
        min_trade_value=25.0,
        fractional=True,
        cash_target=0.01,
        security_band=Band(BandKind.ABSOLUTE, 0.005),
    )
    accounts = []
    for a in range(n_accounts):
        value = float(rng.uniform(200_000, 2_000_000))
        sleeves = []
        for k, m in enumerate(models):
            sv = value * tw[k] * rng.uniform(0.8, 1.2)
            hold = {
                e.symbol: float(
                    np.floor(e.weight * sv / (secs[e.symbol].price or 1.0) * rng.uniform(0.9, 1.1))
                )
                for e in m.entries
            }
            sleeves.append(sleeve(f"s{k}", m.model_id, hold, float(sv * 0.01), settings))
        accounts.append(Account(f"U{a:06d}", tuple(sleeves), strategy_id="STRAT"))
    return Book(reference(secs, models, [strat]), tuple(accounts))
