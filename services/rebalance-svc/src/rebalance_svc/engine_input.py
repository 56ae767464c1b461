"""Between rebalance-svc's read model and the pure engine: build the engine's inputs, and turn
its results into the pieces of drift-detected and trades-proposed. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    DriftLevel,
    Holding,
    Model,
    ModelEntry,
    RebalanceResult,
    Reference,
    Security,
    Settings,
    Sleeve,
)

SLEEVE = "main"  # an SMA has one sleeve; UMAs (several sleeves) come with account-svc sleeves
WEIGHT = Decimal("0.000001")


@dataclass(frozen=True)
class SecurityRow:
    symbol: str
    price: Decimal | None
    asset_class: str
    sector: str
    fractional_eligible: bool


def reference_for(
    securities: Mapping[str, SecurityRow], model_id: str, targets: Mapping[str, Decimal]
) -> Reference:
    """The securities the engine may price, and the one model being rebalanced."""
    return Reference(
        securities={
            s.symbol: Security(
                s.symbol,
                float(s.price) if s.price is not None else None,
                s.asset_class,
                s.sector,
                s.fractional_eligible,
            )
            for s in securities.values()
        },
        models={
            model_id: Model(
                model_id,
                tuple(
                    ModelEntry(symbol, float(weight)) for symbol, weight in sorted(targets.items())
                ),
            )
        },
    )


def sma_account(
    account_id: str,
    model_id: str,
    cash: Decimal,
    holdings: Mapping[str, Decimal],
    min_trade_value: Decimal,
    security_tolerance: Decimal,
    cash_band: Decimal,
) -> Account:
    """A separately managed account: one sleeve following the model, whole shares."""
    settings = Settings(
        min_trade_value=float(min_trade_value),
        security_band=Band(BandKind.ABSOLUTE, float(security_tolerance)),
        cash_band=Band(BandKind.ABSOLUTE, float(cash_band)),
    )
    return Account(
        account_id,
        (
            Sleeve(
                SLEEVE,
                model_id,
                cash=float(cash),
                holdings=tuple(Holding(s, float(q)) for s, q in sorted(holdings.items()) if q),
                settings=settings,
            ),
        ),
    )


@dataclass(frozen=True)
class SecurityDrift:
    symbol: str
    target_weight: Decimal
    current_weight: Decimal

    @property
    def drift(self) -> Decimal:
        return self.current_weight - self.target_weight


def security_drift(result: RebalanceResult) -> list[SecurityDrift]:
    """Security-level drift before the trades, as exact weights rounded to 6 places."""
    return [
        SecurityDrift(item.key, _weight(item.target), _weight(item.weight))
        for item in result.drift_before.items
        if item.level is DriftLevel.SECURITY
    ]


def _weight(value: float) -> Decimal:
    return Decimal(repr(max(value, 0.0))).quantize(WEIGHT)


def money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.000001"))
