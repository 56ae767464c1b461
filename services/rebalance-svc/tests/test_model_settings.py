"""The manager's model settings (model-changed's kind, shares, hold and replacement, bands,
tax-loss proxies, swap-back) as the read model keeps them (`service.target_settings`) reach
the engine through engine_input and change what it trades. Pure, no I/O."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from ballast_common.contracts.events import BandV1, ModelChangedV1, ModelTargetV1
from ballast_engine.harvesting import harvest
from ballast_engine.model import (
    Band,
    BandKind,
    EquivalenceSet,
    Model,
    ModelEntry,
    RebalanceInput,
    RebalanceResult,
)
from ballast_engine.rebalance import rebalance
from rebalance_svc.engine_input import (
    AccountRow,
    Defaults,
    ModelSpec,
    PositionRow,
    SecurityRow,
    engine_account,
    engine_model,
    engine_tax,
    proxy_sets_for,
    reference_for,
    swap_back_of,
    tax_context,
)
from rebalance_svc.service import target_settings

DEFAULTS = Defaults(Decimal("25"), Decimal("0.005"), Decimal("0.02"))
SECURITIES = {
    s: SecurityRow(s, Decimal(p), "us_equity", "IT", False)
    for s, p in (("AAA", "100"), ("BBB", "50"), ("PXY", "25"), ("QQQ", "40"))
}
TRADE_DATE = date(2026, 12, 7)


def model_changed(kind: str = "weights", swap_back: bool = False, **targets: Any) -> ModelChangedV1:
    return ModelChangedV1(
        model_id="m",
        name="m",
        version=1,
        changed_by="pm",
        kind=kind,
        swap_back=swap_back,
        targets=[ModelTargetV1(symbol=s, **fields) for s, fields in targets.items()],
    )


def spec_of(event: ModelChangedV1) -> ModelSpec:
    """The model's settings as preparation.model_spec reads them back from the read model."""
    return ModelSpec(event.kind, target_settings(event), event.swap_back)


class Setup:
    """The engine's reference and an account on the event's model, built as a run does."""

    def __init__(self, event: ModelChangedV1, sets: tuple[EquivalenceSet, ...] = ()):
        self.specs = {event.model_id: spec_of(event)}
        self.targets = {event.model_id: {t.symbol: t.weight for t in event.targets}}
        proxies, self.left_out = proxy_sets_for(self.specs, self.targets, SECURITIES, sets)
        self.sets = sets + proxies
        self.reference = reference_for(
            SECURITIES, self.targets, equivalence_sets=self.sets, specs=self.specs
        )

    def account(
        self,
        cash: str,
        *positions: PositionRow,
        settings: dict[str, Any] | None = None,
        harvesting: bool = False,
    ) -> Any:
        tax = None
        if harvesting:
            context = tax_context("A-1", "taxable", None, {"harvest": True}, [])
            swap_back = swap_back_of(["m"], self.specs)
            tax = engine_tax(context, TRADE_DATE, None, (), swap_back)
        row = AccountRow("A-1", "m", settings or {})
        return engine_account(row, Decimal(cash), positions, DEFAULTS, self.targets, self.sets, tax)


def trades(result: RebalanceResult) -> list[tuple[str, str, Decimal, str]]:
    return [(t.symbol, t.side.value, t.quantity, t.reason.value) for t in result.trades]


def lot(lot_id: str, quantity: str, cost: str, acquired: str) -> dict[str, str]:
    return {
        "lot_id": lot_id,
        "quantity": quantity,
        "acquired": acquired,
        "cost_basis": cost,
        "wash_adjustment": "0",
    }


def test_a_plain_event_keeps_no_settings_and_gives_the_plain_weight_model():
    event = model_changed(AAA={"weight": Decimal("0.5")}, BBB={"weight": Decimal("0.5")})
    assert target_settings(event) == {}
    assert engine_model("m", {"AAA": Decimal("0.5")}, spec_of(event)) == Model(
        "m", (ModelEntry("AAA", 0.5),)
    )


def test_the_settings_are_kept_per_symbol_and_mapped_to_the_engines_entries():
    event = model_changed(
        kind="shares",
        AAA={
            "weight": Decimal("0"),
            "shares": Decimal("10"),
            "band": BandV1(width=Decimal("0.02")),
        },
        BBB={"weight": Decimal("0"), "shares": Decimal("4"), "hold": True, "replacement": "PXY"},
        QQQ={"weight": Decimal("0"), "tax_loss_proxies": ["PXY"]},
    )
    assert target_settings(event) == {
        "AAA": {"shares": "10", "band": {"kind": "absolute", "width": "0.02"}},
        "BBB": {"shares": "4", "hold": True, "replacement": "PXY"},
        "QQQ": {"tax_loss_proxies": ["PXY"]},
    }
    model = engine_model("m", {t.symbol: t.weight for t in event.targets}, spec_of(event))
    assert model.kind == "shares"
    assert model.entries == (
        ModelEntry("AAA", 0.0, shares=10.0, band=Band(BandKind.ABSOLUTE, 0.02)),
        ModelEntry("BBB", 0.0, shares=4.0, hold=True, replacement="PXY"),
        ModelEntry("QQQ", 0.0),
    )


def test_a_share_model_trades_to_the_weights_its_shares_imply():
    """10 AAA at $100 and 20 BBB at $50: $1,000 each, so 50/50 whatever the weights say."""
    event = model_changed(
        kind="shares",
        AAA={"weight": Decimal("0.9"), "shares": Decimal("10")},
        BBB={"weight": Decimal("0.1"), "shares": Decimal("20")},
    )
    setup = Setup(event)
    account = setup.account("10000", PositionRow("AAA", Decimal("1")))
    # $10,100 in all: $5,050 each, so 49 more AAA (to 50) and 101 BBB
    assert trades(rebalance(RebalanceInput(account, setup.reference))) == [
        ("AAA", "buy", Decimal("49"), "drift"),
        ("BBB", "buy", Decimal("101"), "drift"),
    ]
    plain = Setup(model_changed(AAA={"weight": Decimal("0.9")}, BBB={"weight": Decimal("0.1")}))
    as_weights = trades(rebalance(RebalanceInput(account, plain.reference)))
    assert ("AAA", "buy", Decimal("90"), "drift") in as_weights  # to 91: 90% of $10,100


def test_a_held_target_keeps_its_shares_and_its_replacement_is_bought_instead():
    """AAA is held (20 shares, $2,000 of its $5,000 target): the $3,000 rest buys PXY."""
    event = model_changed(
        AAA={"weight": Decimal("0.5"), "hold": True, "replacement": "PXY"},
        BBB={"weight": Decimal("0.5")},
    )
    setup = Setup(event)
    account = setup.account("8000", PositionRow("AAA", Decimal("20")))
    assert trades(rebalance(RebalanceInput(account, setup.reference))) == [
        ("BBB", "buy", Decimal("100"), "drift"),
        ("PXY", "buy", Decimal("120"), "replacement"),
    ]


def test_a_securitys_own_band_narrower_than_the_accounts_makes_a_drift_trade():
    """AAA at 53% of a 50% target: inside the account's ±5 points, outside AAA's own ±1."""
    wide = {"security_band": {"kind": "absolute", "width": "0.05"}}
    positions = (PositionRow("AAA", Decimal("53")), PositionRow("BBB", Decimal("94")))
    plain = Setup(model_changed(AAA={"weight": Decimal("0.5")}, BBB={"weight": Decimal("0.5")}))
    account = plain.account("0", *positions, settings=wide)
    assert trades(rebalance(RebalanceInput(account, plain.reference))) == []
    banded = Setup(
        model_changed(
            AAA={"weight": Decimal("0.5"), "band": BandV1(width=Decimal("0.01"))},
            BBB={"weight": Decimal("0.5")},
        )
    )
    account = banded.account("0", *positions, settings=wide)
    assert trades(rebalance(RebalanceInput(account, banded.reference))) == [
        ("AAA", "sell", Decimal("3"), "drift"),
        ("BBB", "buy", Decimal("6"), "invest_cash"),
    ]


def test_a_tax_loss_proxy_is_what_a_harvest_buys():
    """100 AAA bought at $150, now $100: a $5,000 loss. Without a proxy nothing replaces AAA
    and the harvest skips it; with PXY as its proxy the loss is harvested into PXY."""
    loser = PositionRow("AAA", Decimal("100"), [lot("L1", "100", "15000", "2025-01-02")])
    bare = Setup(model_changed(AAA={"weight": Decimal("1")}))
    skipped = harvest(RebalanceInput(bare.account("0", loser, harvesting=True), bare.reference))
    assert skipped.trades == ()
    assert [n.message for n in skipped.notices] == ["AAA is not harvested: no replacement named"]

    event = model_changed(AAA={"weight": Decimal("1"), "tax_loss_proxies": ["PXY"]})
    setup = Setup(event)
    assert setup.sets == (EquivalenceSet("proxies:m:AAA", ("AAA", "PXY"), identical=False),)
    result = harvest(RebalanceInput(setup.account("0", loser, harvesting=True), setup.reference))
    assert trades(result) == [
        ("AAA", "sell", Decimal("100"), "tax-loss-harvest"),
        ("PXY", "buy", Decimal("400"), "tax-loss-harvest"),
    ]
    assert result.trades[0].estimated_tax == Decimal("-1000.00")  # $5,000 long-term at 20%


def test_swap_back_on_the_model_swaps_the_proxy_back_after_the_wash_window():
    """400 PXY bought for $10,000 in September (no gain): the model's swap-back sells them
    and buys AAA back; without it the proxy stays."""
    proxy = PositionRow("PXY", Decimal("400"), [lot("L1", "400", "10000", "2026-09-02")])
    for swap_back, expected in [
        (False, []),
        (
            True,
            [
                ("PXY", "sell", Decimal("400"), "swap-back"),
                ("AAA", "buy", Decimal("100"), "swap-back"),
            ],
        ),
    ]:
        event = model_changed(
            swap_back=swap_back, AAA={"weight": Decimal("1"), "tax_loss_proxies": ["PXY"]}
        )
        setup = Setup(event)
        account = setup.account("0", proxy, harvesting=True)
        assert account.tax.harvest.swap_back is swap_back
        assert trades(harvest(RebalanceInput(account, setup.reference))) == expected


def test_swap_back_needs_every_model_of_the_account_to_ask_for_it():
    specs = {"a": ModelSpec(swap_back=True), "b": ModelSpec(swap_back=False)}
    assert swap_back_of(["a"], specs) is True
    assert swap_back_of(["a", "b"], specs) is False  # a UMA: the engine swaps per account
    assert swap_back_of(["a", "unknown"], specs) is False
    assert swap_back_of([], specs) is False


def test_proxies_never_take_a_security_another_set_holds():
    """model-hub-svc's sets keep their members; a model's proxy set is left out when its
    target is in one, a proxy already in a set, unknown, or a target of the same model is
    left out of it."""
    tenant = (EquivalenceSet("trackers", ("BBB", "QQQ")),)
    specs = {
        "a": ModelSpec(
            target_settings={
                "AAA": {"tax_loss_proxies": ["QQQ", "NOPE", "BBB", "PXY"]},
                "BBB": {"tax_loss_proxies": ["PXY"]},
            }
        ),
        "b": ModelSpec(target_settings={"PXY": {"tax_loss_proxies": ["AAA"]}}),
    }
    targets = {"a": {"AAA": Decimal("0.6"), "BBB": Decimal("0.4")}, "b": {"PXY": Decimal("1")}}
    sets, left_out = proxy_sets_for(specs, targets, SECURITIES, tenant)
    assert sets == (EquivalenceSet("proxies:a:AAA", ("AAA", "PXY")),)
    assert left_out == [
        "model a: tax-loss proxy QQQ of AAA is already in the set trackers; left out of "
        "proxies:a:AAA",
        "model a: tax-loss proxy NOPE of AAA is not in the security master; left out",
        "model a: tax-loss proxy BBB of AAA is a target of the model too; left out (a set "
        "would merge the two targets)",
        "model a: the tax-loss proxies of BBB are left out: BBB is in the equivalence set "
        "trackers, whose members replace it",
        "model b: the tax-loss proxies of PXY are left out: PXY is in the equivalence set "
        "proxies:a:AAA, whose members replace it",
    ]
    # what is left is a reference the engine takes (one set per security)
    reference = reference_for(SECURITIES, targets, equivalence_sets=tenant + sets, specs=specs)
    account = engine_account(
        AccountRow("A-1", "a"), Decimal("100"), [], DEFAULTS, targets, tenant + sets
    )
    rebalance(RebalanceInput(account, reference))
