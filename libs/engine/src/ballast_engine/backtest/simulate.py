"""Run one strategy over a market: lots, trades, taxes and cash, step by step, vectorized.

Each month (step s = 0..steps-1) the strategy sees the open lots and prices and returns a
`Decision`: shares to sell per lot, and either target weights (the step's cash buys the
largest shortfalls against them: cash-flow rebalancing) or dollars to buy per stock. Sales
come first; their tax (or credit) and the deposit make the step's cash; then the buys, one
new lot per stock bought. At the last date nothing trades: the book is valued (and, for the
report, liquidated). All amounts are float64: this is a simulation, not the ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from ballast_engine.backtest.market import BoolArray, Calendar, FloatArray, IntArray, Market

NO_STEP = -1
MIN_TRADE_VALUE = 0.01  # dollars: as in the engine, no trade below a cent


class TaxCredit(StrEnum):
    """How realized gains and losses turn into cash.

    `immediate` (Chaudhuri, Burnham and Lo): each month's gains are taxed and losses credited at
    the rate of their term at once, the credit reinvested (the investor has other gains or
    income to absorb losses). `carryforward`: gains and losses are netted per calendar year by
    term (Schedule D), a net loss carries forward with its character, tax is paid at year end
    out of the portfolio's cash; nothing is credited during the run.
    """

    IMMEDIATE = "immediate"
    CARRYFORWARD = "carryforward"


@dataclass(frozen=True, slots=True)
class TaxAssumptions:
    short_term_rate: float = 0.35
    long_term_rate: float = 0.15
    credit: TaxCredit = TaxCredit.IMMEDIATE


@dataclass(frozen=True, slots=True)
class Deposits:
    """An initial investment at the first date and a deposit every later month but the last."""

    initial: float = 1_000_000.0
    monthly: float = 10_000.0

    def schedule(self, steps: int) -> FloatArray:
        """Money in at each date 0..steps (nothing at the last date, which only values)."""
        flows = np.full(steps + 1, self.monthly)
        flows[0] = self.initial
        flows[-1] = 0.0
        return flows


@dataclass(slots=True)
class Lots:
    """Open lots as parallel arrays (one purchase of one stock at one step = one lot)."""

    lot_id: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    stock: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    shares: FloatArray = field(default_factory=lambda: np.zeros(0))
    basis: FloatArray = field(default_factory=lambda: np.zeros(0))
    acquired: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.lot_id.size)

    def holdings(self, stocks: int) -> FloatArray:
        """Shares held per stock."""
        return np.bincount(self.stock, weights=self.shares, minlength=stocks)

    def keep(self, mask: BoolArray) -> None:
        self.lot_id, self.stock = self.lot_id[mask], self.stock[mask]
        self.shares, self.basis = self.shares[mask], self.basis[mask]
        self.acquired = self.acquired[mask]

    def add(
        self, lot_id: IntArray, stock: IntArray, shares: FloatArray, basis: FloatArray, step: int
    ) -> None:
        self.lot_id = np.concatenate([self.lot_id, lot_id])
        self.stock = np.concatenate([self.stock, stock])
        self.shares = np.concatenate([self.shares, shares])
        self.basis = np.concatenate([self.basis, basis])
        self.acquired = np.concatenate([self.acquired, np.full(stock.size, step, np.int64)])


@dataclass(frozen=True, slots=True)
class StepView:
    """What a strategy sees at one step (read only; arrays are the simulator's own)."""

    step: int
    market: Market
    calendar: Calendar
    prices: FloatArray
    index_weights: FloatArray
    lots: Lots
    cash: float  # deposit and cash carried, before any sale of this step
    last_loss_sale: IntArray  # per stock, the last step it was sold at a loss (NO_STEP: never)
    last_buy: IntArray  # per stock, the last step it was bought (NO_STEP: never)
    previous_buy: IntArray  # per stock, the step of the purchase before `last_buy`
    taxes: TaxAssumptions


@dataclass(frozen=True, slots=True)
class Decision:
    """Shares to sell per open lot (in `lots` order) and what to buy with the cash."""

    sell: FloatArray
    target_weights: FloatArray | None = None
    buy_value: FloatArray | None = None


Strategy = Callable[[StepView], Decision]


class StrategyUnavailable(Exception):
    """A strategy that cannot run here; the message says why (the report shows it)."""


@dataclass(frozen=True, slots=True)
class TradeLog:
    """Every trade of a run, one row each, in the order they happened."""

    step: IntArray
    stock: IntArray
    side: IntArray  # +1 buy, -1 sell
    lot_id: IntArray
    shares: FloatArray
    price: FloatArray
    basis: FloatArray  # cost basis relieved (sells); amount paid (buys)
    acquired: IntArray  # the lot's purchase step
    long_term: BoolArray  # sells: the term of the gain

    @property
    def value(self) -> FloatArray:
        return self.shares * self.price

    @property
    def gain(self) -> FloatArray:
        """Realized gain of sells (0 for buys)."""
        return np.where(self.side < 0, self.value - self.basis, 0.0)

    def __len__(self) -> int:
        return int(self.step.size)


@dataclass(frozen=True, slots=True)
class Run:
    """What one strategy did over the market, per step (index 0..steps) and in total."""

    name: str
    deposits: FloatArray
    value: FloatArray  # portfolio value at each date after that date's trades (last: before)
    returns: FloatArray  # portfolio return from date t-1 to t (t = 1..steps)
    realized_short: FloatArray
    realized_long: FloatArray
    tax_paid: FloatArray  # per step; negative = credit received
    harvested: FloatArray  # realized losses per step (positive)
    sold: FloatArray  # value sold per step
    final_lots: Lots
    final_cash: float
    carry_short: float  # unused loss carried forward at the end (carryforward mode, <= 0)
    carry_long: float
    trades: TradeLog

    def unrealized(self, market: Market, calendar: Calendar) -> tuple[float, float]:
        """Unrealized (short-term, long-term) gain of the open lots at the last date."""
        lots, end = self.final_lots, market.steps
        gain = lots.shares * market.prices[end, lots.stock] - lots.basis
        long_term = calendar.long_term[lots.acquired, end]
        return float(gain[~long_term].sum()), float(gain[long_term].sum())


def schedule_d(short: float, long: float) -> tuple[float, float]:
    """Net a loss of one term against a gain of the other, as Schedule D does."""
    if short < 0 < long or long < 0 < short:
        net = short + long
        if net >= 0:
            return (net, 0.0) if short > 0 else (0.0, net)
        return (net, 0.0) if short < 0 else (0.0, net)
    return short, long


def run_strategy(
    name: str,
    strategy: Strategy,
    market: Market,
    calendar: Calendar,
    deposits: Deposits,
    taxes: TaxAssumptions,
    on_step: Callable[[int], None] | None = None,
) -> Run:
    """Simulate `strategy` over every date of `market`."""
    book = _Book(market, calendar, taxes)
    flows = deposits.schedule(market.steps)
    weights = market.index_weights()
    for s in range(market.steps):
        book.mark(s)
        book.cash += flows[s]
        view = StepView(
            s,
            market,
            calendar,
            market.prices[s],
            weights[s],
            book.lots,
            book.cash,
            book.last_loss,
            book.last_buy,
            book.previous_buy,
            taxes,
        )
        decision = strategy(view)
        book.sell(s, decision.sell)
        book.settle_year(s)
        book.buy(s, decision)
        if on_step is not None:
            on_step(s)
    book.mark(market.steps)
    return book.run(name, flows)


class _Book:
    """The simulator's state for one strategy: lots, cash, wash-sale history, series."""

    def __init__(self, market: Market, calendar: Calendar, taxes: TaxAssumptions) -> None:
        n, steps = market.stocks, market.steps
        self.market, self.calendar, self.taxes = market, calendar, taxes
        self.lots = Lots()
        self.cash = 0.0
        self.next_lot = 0
        self.last_loss = np.full(n, NO_STEP, np.int64)
        self.last_buy = np.full(n, NO_STEP, np.int64)
        self.previous_buy = np.full(n, NO_STEP, np.int64)
        self.value = np.zeros(steps + 1)
        self.returns = np.zeros(steps)
        self.realized_short, self.realized_long = np.zeros(steps + 1), np.zeros(steps + 1)
        self.tax_paid, self.harvested = np.zeros(steps + 1), np.zeros(steps + 1)
        self.sold = np.zeros(steps + 1)
        self.log: dict[str, list[np.ndarray]] = {k: [] for k in TradeLog.__dataclass_fields__}
        self.year_short = self.year_long = self.carry_short = self.carry_long = 0.0

    def worth(self, step: int) -> float:
        prices = self.market.prices[step]
        return float((self.lots.shares * prices[self.lots.stock]).sum()) + self.cash

    def mark(self, step: int) -> None:
        """Value the book at `step` before its trades; the return since the last step."""
        if step > 0:
            before = self.value[step - 1]
            self.returns[step - 1] = self.worth(step) / before - 1.0 if before else 0.0
        self.value[step] = self.worth(step)

    def sell(self, step: int, wanted: FloatArray) -> None:
        """Sell `wanted` shares per lot: gains by term, the tax or credit, the cash."""
        lots, prices = self.lots, self.market.prices[step]
        qty = np.clip(np.asarray(wanted, dtype=float), 0.0, lots.shares)
        idx = np.flatnonzero(qty > 0)
        if not idx.size:
            return
        qty = qty[idx]
        whole = qty >= lots.shares[idx] * (1 - 1e-12)
        basis = np.where(whole, lots.basis[idx], lots.basis[idx] * qty / lots.shares[idx])
        px = prices[lots.stock[idx]]
        proceeds = qty * px
        gain = proceeds - basis
        long_term = self.calendar.long_term[lots.acquired[idx], step]
        short, long = float(gain[~long_term].sum()), float(gain[long_term].sum())
        self.realized_short[step], self.realized_long[step] = short, long
        self.harvested[step] = float(-gain[gain < 0].sum())
        self.sold[step] = float(proceeds.sum())
        self.last_loss[lots.stock[idx][gain < 0]] = step
        self._log(
            step,
            lots.stock[idx],
            -1,
            lots.lot_id[idx],
            qty,
            px,
            basis,
            lots.acquired[idx],
            long_term,
        )
        lots.shares[idx] = np.where(whole, 0.0, lots.shares[idx] - qty)
        lots.basis[idx] -= basis
        lots.keep(lots.shares > 0)
        self.cash += self.sold[step]
        if self.taxes.credit is TaxCredit.IMMEDIATE:
            tax = short * self.taxes.short_term_rate + long * self.taxes.long_term_rate
            self.tax_paid[step] = tax
            self.cash -= tax
        else:
            self.year_short += short
            self.year_long += long

    def settle_year(self, step: int) -> None:
        """Carryforward mode, last step of a calendar year: Schedule D, tax, carry."""
        dates = self.market.dates
        if self.taxes.credit is not TaxCredit.CARRYFORWARD or (
            step < self.market.steps - 1 and dates[step + 1].year == dates[step].year
        ):
            return
        short, long = schedule_d(
            self.year_short + self.carry_short, self.year_long + self.carry_long
        )
        t = self.taxes
        tax = max(short, 0.0) * t.short_term_rate + max(long, 0.0) * t.long_term_rate
        self.carry_short, self.carry_long = min(short, 0.0), min(long, 0.0)
        self.tax_paid[step] += tax
        self.cash -= tax
        self.year_short = self.year_long = 0.0

    def buy(self, step: int, decision: Decision) -> None:
        """Spend the cash as `decision` says: one new lot per stock bought."""
        prices = self.market.prices[step]
        held = self.lots.holdings(self.market.stocks) * prices
        buys = _buys(decision, held, self.cash)
        stocks = np.flatnonzero(buys >= MIN_TRADE_VALUE)
        if stocks.size:
            ids = np.arange(self.next_lot, self.next_lot + stocks.size, dtype=np.int64)
            self.next_lot += stocks.size
            shares = buys[stocks] / prices[stocks]
            self.lots.add(ids, stocks, shares, buys[stocks], step)
            self._log(
                step,
                stocks,
                1,
                ids,
                shares,
                prices[stocks],
                buys[stocks],
                np.full(stocks.size, step, np.int64),
                np.zeros(stocks.size, bool),
            )
            moved = self.last_buy[stocks] != step
            self.previous_buy[stocks[moved]] = self.last_buy[stocks[moved]]
            self.last_buy[stocks] = step
            self.cash -= float(buys[stocks].sum())
        self.value[step] = self.worth(step)

    def _log(
        self,
        step: int,
        stock: IntArray,
        side: int,
        lot_id: IntArray,
        shares: FloatArray,
        price: FloatArray,
        basis: FloatArray,
        acquired: IntArray,
        long_term: BoolArray,
    ) -> None:
        size = stock.size
        columns = {
            "step": np.full(size, step, np.int64),
            "stock": stock.astype(np.int64),
            "side": np.full(size, side, np.int64),
            "lot_id": lot_id.astype(np.int64),
            "shares": np.array(shares, float),
            "price": np.array(price, float),
            "basis": np.array(basis, float),
            "acquired": acquired.astype(np.int64),
            "long_term": np.array(long_term, bool),
        }
        for key, column in columns.items():
            self.log[key].append(column)

    def run(self, name: str, flows: FloatArray) -> Run:
        trades = TradeLog(
            **{
                k: (np.concatenate(v) if v else np.zeros(0, _DTYPES[k]))
                for k, v in self.log.items()
            }
        )
        return Run(
            name,
            flows,
            self.value,
            self.returns,
            self.realized_short,
            self.realized_long,
            self.tax_paid,
            self.harvested,
            self.sold,
            self.lots,
            self.cash,
            self.carry_short,
            self.carry_long,
            trades,
        )


_DTYPES = {
    "step": np.int64,
    "stock": np.int64,
    "side": np.int64,
    "lot_id": np.int64,
    "shares": np.float64,
    "price": np.float64,
    "basis": np.float64,
    "acquired": np.int64,
    "long_term": np.bool_,
}


def _buys(decision: Decision, held: FloatArray, cash: float) -> FloatArray:
    """Dollars to buy per stock: the decision's, scaled down to the cash there is."""
    if cash <= 0:
        return np.zeros_like(held)
    if decision.buy_value is not None:
        wanted = np.clip(np.asarray(decision.buy_value, float), 0.0, None)
    elif decision.target_weights is not None:
        total = held.sum() + cash
        wanted = np.clip(decision.target_weights * total - held, 0.0, None)
    else:
        return np.zeros_like(held)
    need = wanted.sum()
    if need <= 0:
        return np.zeros_like(held)
    return wanted * min(1.0, cash / need)
