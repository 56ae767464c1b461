"""Every topic's contract: its producer, consumers and Kafka key (`TOPICS`), and per version
its payload model and an example message (`CONTRACTS`).

A topic's consumers are the services whose `handlers.subscriptions()` follow it;
tests/contracts/test_consumers_match.py fails, naming the difference, when the two disagree
(libs/common never imports a service, so it cannot read them itself).
"""

from __future__ import annotations

import builtins
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from ballast_common.contracts import events as ev


@dataclass(frozen=True)
class Topic:
    """One topic: the service that writes it, the services that read it, and its key.

    `key` is the Kafka message key (also the envelope's `key`) as a template over the payload's
    fields: `"{account_id}"` is the payload's account id; a template without a field is one
    fixed key, so the whole topic is one partition, in order. `key_fallback` applies when a
    field of `key` is empty.
    """

    name: str
    producer: str
    consumers: tuple[str, ...]
    key: str
    ordering: str  # what the key keeps in order, as a sentence
    key_fallback: str | None = None

    @property
    def key_fields(self) -> tuple[str, ...]:
        return _fields(self.key) + (_fields(self.key_fallback) if self.key_fallback else ())

    def key_of(self, payload: BaseModel | Mapping[str, Any]) -> str:
        """The key a message with this payload is published under."""
        values = {name: _field(payload, name) for name in self.key_fields}
        if self.key_fallback and any(values[f] in (None, "") for f in _fields(self.key)):
            return self.key_fallback.format_map(values)
        return self.key.format_map(values)


def _fields(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _field(payload: BaseModel | Mapping[str, Any], name: str) -> Any:
    return payload.get(name) if isinstance(payload, Mapping) else getattr(payload, name)


_ACCOUNT_ORDER = "One account's events stay in order."

TOPICS: dict[str, Topic] = {
    t.name: t
    for t in [
        Topic(
            "securities-changed",
            "model-hub-svc",
            ("rebalance-svc", "reporting-svc", "taxlot-svc"),
            "security-master",
            "Every change of the security master stays in order (one partition).",
        ),
        Topic(
            "model-changed",
            "model-hub-svc",
            ("account-svc", "rebalance-svc", "reporting-svc"),
            "{model_id}",
            "One model's versions stay in order.",
        ),
        Topic(
            "equivalence-set-changed",
            "model-hub-svc",
            ("rebalance-svc", "taxlot-svc"),
            "{set_id}",
            "One equivalence set's versions stay in order.",
        ),
        Topic(
            "account-changed",
            "account-svc",
            ("rebalance-svc", "reporting-svc", "taxlot-svc"),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "trades-approved",
            "account-svc",
            ("custodian-gateway", "rebalance-svc", "reporting-svc", "taxlot-svc"),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "proposal-rejected",
            "account-svc",
            ("rebalance-svc", "reporting-svc"),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "drift-detected",
            "rebalance-svc",
            ("reporting-svc",),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "trades-proposed",
            "rebalance-svc",
            ("account-svc", "reporting-svc"),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "rebalance-chunk-requested",
            "rebalance-svc",
            ("rebalance-svc",),
            "{run_id}:{chunk}",
            "A run's chunks spread over the partitions, so every instance takes some.",
        ),
        Topic(
            "rebalance-chunk-completed",
            "rebalance-svc",
            ("reporting-svc",),
            "{run_id}",
            "One run's chunks stay in order.",
        ),
        Topic(
            "fills-received",
            "custodian-gateway",
            ("rebalance-svc", "reporting-svc", "taxlot-svc"),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "order-rejected",
            "custodian-gateway",
            ("rebalance-svc", "reporting-svc"),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "holdings-reconciled",
            "taxlot-svc",
            ("rebalance-svc", "reporting-svc"),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "trading-hold-changed",
            "taxlot-svc",
            ("rebalance-svc", "reporting-svc"),
            "{account_id}",
            _ACCOUNT_ORDER,
        ),
        Topic(
            "corporate-action-recorded",
            "taxlot-svc",
            ("account-svc", "model-hub-svc"),
            "corporate-actions",
            "Corporate actions stay in the order recorded (one partition): a symbol change "
            "FB to META comes before a later split of META.",
        ),
        Topic(
            "dead-letter",
            "every consumer",
            ("operations",),
            "{key}",
            "A record's dead letter keeps the record's key.",
            key_fallback="{original_topic}:{partition}:{offset}",
        ),
    ]
}


@dataclass(frozen=True)
class Contract:
    """One version of one event type. The topic name equals the event type."""

    type: str
    version: int
    payload: builtins.type[BaseModel]
    description: str
    example: dict[str, Any]

    @property
    def topic(self) -> str:
        return self.type


_T = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
_PROPOSAL = uuid.UUID("6f1c1f0e-8f7a-4a55-9d36-2d0c7f1d2a10")
_RUN = uuid.UUID("0b4d7c2a-5e39-4c8e-a3f1-6a5f3e0c9b21")
_TRADE = uuid.UUID("c2f1d9e0-1a2b-4c3d-8e4f-5a6b7c8d9e0f")

_trade = ev.TradeV1(
    trade_id=_TRADE,
    symbol="MSFT",
    side="buy",
    quantity=Decimal("12"),
    estimated_price=Decimal("415.20"),
    estimated_value=Decimal("4982.40"),
    reason="model-change",
    explanation="Buy 12 MSFT to bring it from 3.1% to its 5.0% target in US Large Cap Core.",
)

_all: list[Contract] = [
    Contract(
        "securities-changed",
        1,
        ev.SecuritiesChangedV1,
        "Securities added to or updated in the security master, with prices.",
        ev.SecuritiesChangedV1(
            securities=[
                ev.SecurityV1(
                    symbol="MSFT",
                    name="Microsoft Corp",
                    asset_class="US Equity",
                    sector="Information Technology",
                    price=Decimal("415.20"),
                    fractional_eligible=True,
                    cusip="594918104",
                )
            ]
        ).model_dump(mode="json"),
    ),
    Contract(
        "model-changed",
        1,
        ev.ModelChangedV1,
        "A model manager published a new version of a model.",
        ev.ModelChangedV1(
            model_id="us-large-core-tm",
            name="US Large Cap Core (tax-managed)",
            version=3,
            changed_by="pm@demo",
            kind="shares",
            swap_back=True,
            parent=ev.ModelParentV1(model_id="us-large-core", version=7),
            direct_index=ev.DirectIndexV1(
                risk_model=ev.RiskModelV1(
                    factors=["market", "value"],
                    covariance=[
                        [Decimal("0.0256"), Decimal("0.0012")],
                        [Decimal("0.0012"), Decimal("0.0036")],
                    ],
                    specific_volatility=Decimal("0.25"),
                ),
                settings=ev.OptimizerSettingsV1(
                    tax_sensitivity="high",
                    tracking_tolerance=Decimal("0.01"),
                    gain_budget=Decimal("20000"),
                    tilts={"value": Decimal("0.1")},
                    exclusion_rule="sector",
                ),
            ),
            targets=[
                ev.ModelTargetV1(
                    symbol="MSFT",
                    weight=Decimal("0.05"),
                    shares=Decimal("12"),
                    band=ev.BandV1(kind="relative", width=Decimal("0.2")),
                    tax_loss_proxies=["ORCL", "ADBE"],
                    factor_exposures={"market": Decimal("1.1"), "value": Decimal("-0.4")},
                ),
                ev.ModelTargetV1(
                    symbol="AAPL",
                    weight=Decimal("0.95"),
                    shares=Decimal("420"),
                    hold=True,
                    replacement="GOOGL",
                ),
            ],
        ).model_dump(mode="json"),
    ),
    Contract(
        "account-changed",
        1,
        ev.AccountChangedV1,
        "An account was opened or its model, status, approval policy, rebalance settings, "
        "restrictions, tax settings or strategy (UMA sleeves) changed.",
        ev.AccountChangedV1(
            account_id="ACC-000123",
            household_id="HH-000045",
            name="Jordan Lee Trust",
            account_type="taxable",
            model_id="us-large-core",
            status="active",
            auto_approve=True,
            rebalance_settings=ev.RebalanceSettingsV1(
                min_trade_value=Decimal("50"),
                fractional=False,
                cash_target=Decimal("0.02"),
                security_band=ev.BandV1(kind="absolute", width=Decimal("0.01")),
            ),
            restrictions=[
                ev.RestrictionV1(
                    kind="do_not_buy",
                    scope="sector",
                    value="Energy",
                    source="client",
                    reason="client's fossil-fuel screen",
                    set_by="advisor@demo",
                )
            ],
            tax_settings=ev.TaxSettingsV1(
                relief_method="hifo",
                short_term_rate=Decimal("0.37"),
                long_term_rate=Decimal("0.20"),
                gain_budget=Decimal("20000"),
                gain_budget_mode="hard",
                harvest_min_loss_percent=Decimal("10"),
                harvest_min_loss_dollars=Decimal("100"),
            ),
        ).model_dump(mode="json"),
    ),
    Contract(
        "drift-detected",
        1,
        ev.DriftDetectedV1,
        "An account's drift from its model, measured by a rebalance run.",
        ev.DriftDetectedV1(
            run_id=_RUN,
            account_id="ACC-000123",
            model_id="us-large-core",
            model_version=3,
            total_value=Decimal("262140.55"),
            max_abs_drift=Decimal("0.019"),
            tolerance=Decimal("0.01"),
            out_of_tolerance=True,
            securities=[
                ev.SecurityDriftV1(
                    symbol="MSFT",
                    target_weight=Decimal("0.05"),
                    current_weight=Decimal("0.031"),
                    drift=Decimal("-0.019"),
                )
            ],
        ).model_dump(mode="json"),
    ),
    Contract(
        "trades-proposed",
        1,
        ev.TradesProposedV1,
        "A rebalance run proposes trades for one account; they await approval.",
        ev.TradesProposedV1(
            proposal_id=_PROPOSAL,
            run_id=_RUN,
            account_id="ACC-000123",
            model_id="us-large-core",
            model_version=3,
            trades=[_trade],
            cash_before=Decimal("5200.00"),
            cash_after_estimated=Decimal("217.60"),
            metrics=ev.ProposalMetricsV1(
                account_value=Decimal("262140.55"),
                buy_value=Decimal("4982.40"),
                sell_value=Decimal("0.00"),
                turnover_percent=Decimal("0.9503"),
                estimated_tax=Decimal("0.00"),
                drift_before_percent=Decimal("1.9000"),
                drift_after_percent=Decimal("0.0007"),
                tracking_error_before_percent=Decimal("0.8500"),
                tracking_error_after_percent=Decimal("0.4200"),
            ),
            notes=["Sector bound gave way: Energy can hold at most 0.00% ..."],
        ).model_dump(mode="json"),
    ),
    Contract(
        "rebalance-chunk-requested",
        1,
        ev.RebalanceChunkRequestedV1,
        "A chunk of a run's accounts to rebalance, scan or harvest; any instance of "
        "rebalance-svc takes it.",
        ev.RebalanceChunkRequestedV1(
            run_id=_RUN,
            chunk=3,
            chunks=250,
            kind="rebalance",
            trigger="model-change",
            model_id="us-large-core",
            model_version=3,
            account_ids=["ACC-000123", "ACC-000124"],
        ).model_dump(mode="json"),
    ),
    Contract(
        "rebalance-chunk-completed",
        1,
        ev.RebalanceChunkCompletedV1,
        "A chunk of a run was processed (or failed); a run's totals and completion are "
        "assembled from its chunks.",
        ev.RebalanceChunkCompletedV1(
            run_id=_RUN,
            chunk=3,
            chunks=250,
            kind="rebalance",
            trigger="model-change",
            model_id="us-large-core",
            model_version=3,
            status="completed",
            accounts=200,
            accounts_evaluated=198,
            accounts_out_of_tolerance=120,
            accounts_skipped=2,
            proposals=118,
            trades=1416,
        ).model_dump(mode="json"),
    ),
    Contract(
        "trades-approved",
        1,
        ev.TradesApprovedV1,
        "Proposed trades were approved, by policy or by a person; orders may go out.",
        ev.TradesApprovedV1(
            proposal_id=_PROPOSAL,
            account_id="ACC-000123",
            approved_by="policy:auto-approve",
            trades=[_trade],
        ).model_dump(mode="json"),
    ),
    Contract(
        "fills-received",
        1,
        ev.FillsReceivedV1,
        "The custodian executed all or part of an order.",
        ev.FillsReceivedV1(
            fill_id="SIM-EX-000981",
            client_order_id="BAL-c2f1d9e01a2b4c3d",
            trade_id=_TRADE,
            proposal_id=_PROPOSAL,
            account_id="ACC-000123",
            symbol="MSFT",
            side="buy",
            quantity=Decimal("12"),
            price=Decimal("415.18"),
            executed_at=_T,
        ).model_dump(mode="json"),
    ),
    Contract(
        "order-rejected",
        1,
        ev.OrderRejectedV1,
        "The custodian rejected an order.",
        ev.OrderRejectedV1(
            client_order_id="BAL-c2f1d9e01a2b4c3d",
            trade_id=_TRADE,
            proposal_id=_PROPOSAL,
            account_id="ACC-000123",
            symbol="MSFT",
            side="buy",
            quantity=Decimal("12"),
            reason="security halted",
        ).model_dump(mode="json"),
    ),
    Contract(
        "holdings-reconciled",
        1,
        ev.HoldingsReconciledV1,
        "The book of record's holdings of an account after a change.",
        ev.HoldingsReconciledV1(
            account_id="ACC-000123",
            as_of=date(2026, 11, 20),
            cash=Decimal("217.60"),
            positions=[
                ev.PositionV1(symbol="MSFT", quantity=Decimal("12"), cost_basis=Decimal("4982.16"))
            ],
            cause="fills",
            fill_ids=["SIM-EX-000981"],
        ).model_dump(mode="json"),
    ),
    Contract(
        "holdings-reconciled",
        2,
        ev.HoldingsReconciledV2,
        "The book of record of an account after a change: positions with their tax lots, and "
        "recent loss sales a purchase in the household could still wash.",
        ev.HoldingsReconciledV2(
            account_id="ACC-000123",
            household_id="HH-000045",
            as_of=date(2026, 11, 20),
            cash=Decimal("217.60"),
            positions=[
                ev.PositionV2(
                    symbol="MSFT",
                    quantity=Decimal("12"),
                    cost_basis=Decimal("4982.16"),
                    lots=[
                        ev.LotV1(
                            lot_id="L-SIM-EX-000981",
                            quantity=Decimal("12"),
                            acquired=date(2026, 11, 20),
                            cost_basis=Decimal("4982.16"),
                        )
                    ],
                )
            ],
            cause="fills",
            fill_ids=["SIM-EX-000981"],
            recent_loss_sales=[
                ev.LossSaleV1(
                    symbol="INTC",
                    sold_on=date(2026, 11, 12),
                    quantity=Decimal("40"),
                    loss_per_share=Decimal("3.15"),
                )
            ],
        ).model_dump(mode="json"),
    ),
    Contract(
        "trading-hold-changed",
        1,
        ev.TradingHoldChangedV1,
        "An account is held from trading (or released) after the custodian's files were "
        "reconciled with the book of record.",
        ev.TradingHoldChangedV1(
            account_id="ACC-000123",
            held=True,
            reason="quantity break: lot MSFT-2 is 12 here, 10 at the custodian",
            custodian="ballast",
            business_date=date(2026, 11, 20),
        ).model_dump(mode="json"),
    ),
    Contract(
        "proposal-rejected",
        1,
        ev.ProposalRejectedV1,
        "A person rejected proposed trades; none of them will be sent.",
        ev.ProposalRejectedV1(
            proposal_id=_PROPOSAL,
            account_id="ACC-000123",
            rejected_by="advisor@demo",
            reason="client asked to wait until January",
        ).model_dump(mode="json"),
    ),
    Contract(
        "equivalence-set-changed",
        1,
        ev.EquivalenceSetChangedV1,
        "An equivalence set was defined, changed or removed.",
        ev.EquivalenceSetChangedV1(
            set_id="sp500-trackers",
            name="S&P 500 trackers",
            members=["SPY", "IVV", "VOO"],
            identical=True,
            version=2,
        ).model_dump(mode="json"),
    ),
    Contract(
        "corporate-action-recorded",
        1,
        ev.CorporateActionRecordedV1,
        "A corporate action was applied to the book of record, once per action id.",
        ev.CorporateActionRecordedV1(
            action_id="CA-2026-0412",
            type="symbol-change",
            symbol="FB",
            on=date(2026, 6, 9),
            new_symbol="META",
            accounts_affected=118,
        ).model_dump(mode="json"),
    ),
    Contract(
        "dead-letter",
        1,
        ev.DeadLetterV1,
        "A message a consumer could not process (not an envelope). Topic: dlq.<service>.",
        ev.DeadLetterV1(
            consumer_group="taxlot-svc",
            original_topic="fills-received",
            partition=3,
            offset=1041,
            key="ACC-000123",
            value='{"not": "an envelope"}',
            value_base64=None,
            error_type="EnvelopeError",
            error="invalid envelope: type: Field required",
            failed_at=_T,
        ).model_dump(mode="json"),
    ),
]

CONTRACTS: dict[tuple[str, int], Contract] = {(c.type, c.version): c for c in _all}


def contract_for(event_type: str, version: int) -> Contract | None:
    return CONTRACTS.get((event_type, version))


def latest(event_type: str) -> Contract:
    versions = [c for (t, _), c in CONTRACTS.items() if t == event_type]
    if not versions:
        raise KeyError(f"no contract for event type {event_type!r}")
    return max(versions, key=lambda c: c.version)


def contract_of_payload(payload: BaseModel) -> Contract:
    return contract_of_type(type(payload))


def contract_of_type(payload_type: type[BaseModel]) -> Contract:
    """The contract whose payload model is `payload_type`."""
    for contract in CONTRACTS.values():
        if payload_type is contract.payload:
            return contract
    raise KeyError(f"{payload_type.__name__} is not a registered contract payload")


# Dead letters are plain records (not envelopes), on one topic per service: dlq.<service>.
DEAD_LETTER_TOPIC_PREFIX = "dlq."
