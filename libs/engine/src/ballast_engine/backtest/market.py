"""A seeded synthetic equity market with a factor structure, for the tax-alpha backtest.

Monthly log returns of stock i:

    x[t, i] = drift[i] + beta[i]·market[t] + loading[i]·sector[t, s(i)] + Σ_k style[i, k]·f[t, k]
              + idio[t, i]

every factor and the idiosyncratic term normal, independent, at the annual volatilities of
`MarketConfig` divided by √12; `drift[i]` makes each stock's expected simple return the
configured market return. Shares outstanding are fixed, so the cap-weighted index is what a
buy-and-hold investor owns. Everything is vectorized and reproducible from the seed.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from numpy.typing import NDArray

from ballast_engine.tax.model import Term, term_of
from ballast_engine.tax.wash import within_window

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

STEPS_PER_YEAR = 12


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """What the synthetic market looks like; volatilities and returns are annual."""

    stocks: int = 500
    sectors: int = 11
    styles: int = 3
    years: int = 10
    seed: int = 1
    start: date = date(2015, 12, 31)
    market_return: float = 0.08
    market_vol: float = 0.155
    sector_vol: float = 0.07
    style_vol: float = 0.04
    idio_vol_low: float = 0.16
    idio_vol_high: float = 0.30
    beta_sd: float = 0.25
    median_cap: float = 20e9
    cap_dispersion: float = 1.2


@dataclass(frozen=True, slots=True)
class Market:
    """Prices on a month-end calendar: `prices[t, i]` at `dates[t]` (t = 0..steps)."""

    dates: tuple[date, ...]
    prices: FloatArray
    shares_outstanding: FloatArray
    sector: IntArray
    symbols: tuple[str, ...]
    factor_returns: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    # The model that drew the path: (N, F) loadings on (market, sectors..., styles...), each
    # factor's annual volatility (F,), each stock's annual specific volatility (N,).
    exposures: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    factor_vol: FloatArray = field(default_factory=lambda: np.zeros(0))
    specific_vol: FloatArray = field(default_factory=lambda: np.zeros(0))
    factor_names: tuple[str, ...] = ()

    @property
    def steps(self) -> int:
        return len(self.dates) - 1

    @property
    def stocks(self) -> int:
        return int(self.prices.shape[1])

    def caps(self) -> FloatArray:
        return self.prices * self.shares_outstanding

    def index_weights(self) -> FloatArray:
        """Cap weights at every date, rows summing to 1."""
        caps = self.caps()
        return caps / caps.sum(axis=1, keepdims=True)

    def index_returns(self) -> FloatArray:
        """Simple return of the cap-weighted index from date t-1 to t (t = 1..steps)."""
        caps = self.caps().sum(axis=1)
        return caps[1:] / caps[:-1] - 1.0

    def stock_returns(self) -> FloatArray:
        return self.prices[1:] / self.prices[:-1] - 1.0


def month_ends(start: date, count: int) -> tuple[date, ...]:
    """`count` consecutive calendar month-ends starting with `start`'s month."""
    out = []
    year, month = start.year, start.month
    for _ in range(count):
        out.append(date(year, month, calendar.monthrange(year, month)[1]))
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return tuple(out)


def simulate_market(config: MarketConfig) -> Market:
    """Draw one market path from `config` (the same seed gives the same market)."""
    if config.stocks < config.sectors or config.sectors < 1:
        raise ValueError(
            f"stocks ({config.stocks}) must be at least sectors ({config.sectors}) and "
            "sectors at least 1"
        )
    if config.years < 1:
        raise ValueError(f"years must be at least 1, got {config.years}")
    rng = np.random.default_rng(config.seed)
    n, k, steps = config.stocks, config.styles, config.years * STEPS_PER_YEAR
    root = np.sqrt(STEPS_PER_YEAR)

    sector = rng.permutation(np.arange(n) % config.sectors).astype(np.int64)
    beta = np.clip(rng.normal(1.0, config.beta_sd, n), 0.4, 1.8)
    loading = np.clip(rng.normal(1.0, 0.3, n), 0.2, 1.8)
    style = rng.normal(0.0, 1.0, (n, k))
    idio_vol = rng.uniform(config.idio_vol_low, config.idio_vol_high, n)

    total_var = (
        (beta * config.market_vol) ** 2
        + (loading * config.sector_vol) ** 2
        + (style**2).sum(axis=1) * config.style_vol**2
        + idio_vol**2
    )
    # Log drift so that E[simple return] = market_return for every stock.
    drift = (np.log1p(config.market_return) - total_var / 2) / STEPS_PER_YEAR

    market_f = rng.normal(0.0, config.market_vol / root, steps)
    sector_f = rng.normal(0.0, config.sector_vol / root, (steps, config.sectors))
    style_f = rng.normal(0.0, config.style_vol / root, (steps, k))
    idio = rng.normal(0.0, 1.0, (steps, n)) * (idio_vol / root)

    log_returns = (
        drift + market_f[:, None] * beta + sector_f[:, sector] * loading + style_f @ style.T + idio
    )
    start_prices = rng.uniform(20.0, 200.0, n)
    caps = np.exp(rng.normal(np.log(config.median_cap), config.cap_dispersion, n))
    prices = start_prices * np.exp(np.vstack([np.zeros((1, n)), np.cumsum(log_returns, axis=0)]))
    factors = np.column_stack([market_f, sector_f, style_f])
    sector_loadings = np.zeros((n, config.sectors))
    sector_loadings[np.arange(n), sector] = loading
    return Market(
        dates=month_ends(config.start, steps + 1),
        prices=prices,
        shares_outstanding=caps / start_prices,
        sector=sector,
        symbols=tuple(f"S{i:03d}" for i in range(n)),
        factor_returns=factors,
        exposures=np.column_stack([beta, sector_loadings, style]),
        factor_vol=np.array(
            [config.market_vol] + [config.sector_vol] * config.sectors + [config.style_vol] * k
        ),
        specific_vol=idio_vol,
        factor_names=(
            "market",
            *(f"sector_{j}" for j in range(config.sectors)),
            *(f"style_{j}" for j in range(k)),
        ),
    )


@dataclass(frozen=True, slots=True)
class Calendar:
    """The engine's tax rules evaluated once on the market's dates (t x t matrices).

    `long_term[a, s]`: a lot whose holding period starts at date a is long-term when sold at
    date s (`tax.model.term_of`); `in_window[p, s]`: a purchase at date p falls in the wash-sale
    window of a sale at date s (`tax.wash.within_window`).
    """

    dates: tuple[date, ...]
    long_term: BoolArray
    in_window: BoolArray

    @classmethod
    def of(cls, dates: tuple[date, ...]) -> Calendar:
        size = len(dates)
        long_term = np.zeros((size, size), dtype=bool)
        in_window = np.zeros((size, size), dtype=bool)
        for a, start in enumerate(dates):
            for s, day in enumerate(dates):
                long_term[a, s] = s >= a and term_of(start, day) is Term.LONG
                in_window[a, s] = within_window(start, day)
        return cls(dates, long_term, in_window)


@dataclass(frozen=True, slots=True)
class MarketStats:
    """Realized properties of a market path (annualized where a rate)."""

    index_vol: float
    stock_vol_median: float
    stock_vol_p10: float
    stock_vol_p90: float
    correlation_within_sector: float
    correlation_across_sectors: float
    dispersion: float  # mean cross-sectional standard deviation of monthly returns

    def to_dict(self) -> dict[str, float]:
        return {name: round(getattr(self, name), 4) for name in self.__dataclass_fields__}


def describe(market: Market) -> MarketStats:
    """Volatilities, correlations and dispersion the path actually shows."""
    returns = market.stock_returns()
    root = np.sqrt(STEPS_PER_YEAR)
    vols = returns.std(axis=0, ddof=1) * root
    corr: FloatArray = np.atleast_2d(np.corrcoef(returns.T))
    same = market.sector[:, None] == market.sector[None, :]
    off = ~np.eye(market.stocks, dtype=bool)
    return MarketStats(
        index_vol=float(market.index_returns().std(ddof=1) * root),
        stock_vol_median=float(np.median(vols)),
        stock_vol_p10=float(np.percentile(vols, 10)),
        stock_vol_p90=float(np.percentile(vols, 90)),
        correlation_within_sector=float(corr[same & off].mean()),
        correlation_across_sectors=float(corr[~same].mean()),
        dispersion=float(returns.std(axis=1, ddof=1).mean()),
    )
