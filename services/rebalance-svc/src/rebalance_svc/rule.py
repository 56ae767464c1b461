"""The walking skeleton's rebalancing rule: sell and buy whole shares to the model's weights
within the cash available. Pure; issue #3 replaces it with the engine in libs/engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

CENT = Decimal("0.01")


class AccountDataError(Exception):
    """The account cannot be rebalanced with the data at hand (named in the message)."""


@dataclass(frozen=True)
class ProposedTrade:
    symbol: str
    side: str  # buy | sell
    quantity: Decimal
    price: Decimal
    value: Decimal
    reason: str
    explanation: str


@dataclass(frozen=True)
class SecurityDrift:
    symbol: str
    target_weight: Decimal
    current_weight: Decimal

    @property
    def drift(self) -> Decimal:
        return self.current_weight - self.target_weight


@dataclass(frozen=True)
class Proposal:
    total_value: Decimal
    cash_before: Decimal
    cash_after: Decimal
    drift: list[SecurityDrift]
    trades: list[ProposedTrade]

    @property
    def max_abs_drift(self) -> Decimal:
        return max((abs(d.drift) for d in self.drift), default=Decimal(0))


def rebalance_to_model(
    *,
    account_id: str,
    model_name: str,
    cash: Decimal,
    holdings: dict[str, Decimal],
    targets: dict[str, Decimal],
    prices: dict[str, Decimal],
    min_trade_value: Decimal,
    security_tolerance: Decimal = Decimal(0),
) -> Proposal:
    """Trades that bring `holdings` to `targets` (weights of total value) in whole shares.

    A security of the model whose weight is within `security_tolerance` (absolute) of its
    target is left alone; one outside goes back to its target. Sells first (what is above
    target, all of what the model no longer holds), then buys the largest shortfalls first
    with the cash available, never spending more than it.
    """
    missing = sorted(s for s in set(holdings) | set(targets) if s not in prices)
    if missing:
        raise AccountDataError(f"account {account_id}: no price for {', '.join(missing)}")
    if cash < 0:
        raise AccountDataError(f"account {account_id}: negative cash {cash}")
    market = {s: q * prices[s] for s, q in holdings.items()}
    total = cash + sum(market.values(), Decimal(0))
    if total <= 0:
        raise AccountDataError(f"account {account_id}: no value to rebalance")

    drift = [
        SecurityDrift(s, targets.get(s, Decimal(0)), (market.get(s, Decimal(0)) / total))
        for s in sorted(set(holdings) | set(targets))
    ]
    goal = {s: _whole(targets.get(s, Decimal(0)) * total / prices[s]) for s in drift_symbols(drift)}
    for d in drift:
        if d.symbol in targets and abs(d.drift) <= security_tolerance:
            goal[d.symbol] = holdings.get(d.symbol, Decimal(0))  # inside its range: no trade

    trades: list[ProposedTrade] = []
    available = cash
    for symbol in sorted(holdings):
        excess = holdings[symbol] - goal[symbol]
        value = (excess * prices[symbol]).quantize(CENT)
        if excess > 0 and value >= min_trade_value:
            available += value
            trades.append(
                _trade(
                    symbol,
                    "sell",
                    excess,
                    prices[symbol],
                    value,
                    model_name,
                    holdings[symbol] * prices[symbol] / total,
                    targets,
                )
            )
    shortfalls = sorted(((goal[s] - holdings.get(s, Decimal(0))) * prices[s], s) for s in targets)
    for _, symbol in reversed(shortfalls):
        wanted = goal[symbol] - holdings.get(symbol, Decimal(0))
        affordable = _whole(available / prices[symbol])
        quantity = min(wanted, affordable)
        value = (quantity * prices[symbol]).quantize(CENT)
        if quantity > 0 and value >= min_trade_value:
            available -= value
            trades.append(
                _trade(
                    symbol,
                    "buy",
                    quantity,
                    prices[symbol],
                    value,
                    model_name,
                    market.get(symbol, Decimal(0)) / total,
                    targets,
                )
            )
    return Proposal(total.quantize(CENT), cash, available.quantize(CENT), drift, trades)


def drift_symbols(drift: list[SecurityDrift]) -> list[str]:
    return [d.symbol for d in drift]


def _whole(shares: Decimal) -> Decimal:
    return shares.to_integral_value(rounding=ROUND_FLOOR)


def _trade(
    symbol: str,
    side: str,
    quantity: Decimal,
    price: Decimal,
    value: Decimal,
    model_name: str,
    current_weight: Decimal,
    targets: dict[str, Decimal],
) -> ProposedTrade:
    target = targets.get(symbol)
    now = f"{current_weight * 100:.1f}%"
    if target is None:
        reason = "model-change"
        sentence = (
            f"Sell {quantity:f} {symbol}: {model_name} no longer holds it "
            f"(it was {now} of the account)."
        )
    else:
        reason = "drift"
        verb = "Buy" if side == "buy" else "Sell"
        sentence = (
            f"{verb} {quantity:f} {symbol} to bring it from {now} toward its "
            f"{target * 100:.1f}% target in {model_name}."
        )
    return ProposedTrade(symbol, side, quantity, price, value, reason, sentence)
