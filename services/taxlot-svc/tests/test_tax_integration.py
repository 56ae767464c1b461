"""Issue 4 in taxlot-svc against the real PostgreSQL: relief methods and named lots, fees,
wash sales across the household (IRA replacement, late fills), the gains/unrealized/
Form 8949/wash-sale-block endpoints, and corporate actions."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.contracts.events import (
    AccountChangedV1,
    EquivalenceSetChangedV1,
    FillsReceivedV1,
    SecuritiesChangedV1,
    SecurityV1,
    TaxSettingsV1,
)
from ballast_common.db import Database
from ballast_common.errors import PermanentMessageError
from ballast_common.outbox import pending_messages
from ballast_common.testing import delivery, envelope, unit_of_work
from taxlot_svc import repository as repo
from taxlot_svc import service, snapshots
from taxlot_svc.handlers import (
    on_account_changed,
    on_equivalence_set_changed,
    on_fills_received,
    on_securities_changed,
)
from taxlot_svc.schemas import HoldingsIn

pytestmark = pytest.mark.integration

D = Decimal
TODAY = date(2026, 11, 22)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def symbol() -> str:
    """A security of this test only (corporate actions touch every holder)."""
    return "S" + uuid.uuid4().hex[:8].upper()


async def open_book(
    db: Database, account: str, lots: list[tuple[str, str, str, str]], cash: str = "10000.00"
) -> None:
    """lots: (symbol, quantity, cost basis, acquired on)."""
    positions: dict[str, list[dict[str, str]]] = {}
    for sym, qty, basis, on in lots:
        positions.setdefault(sym, []).append(
            {"quantity": qty, "cost_basis": basis, "acquired_on": on}
        )
    body = HoldingsIn.model_validate(
        {
            "as_of": "2024-02-15",
            "cash": cash,
            "positions": [{"symbol": s, "lots": v} for s, v in positions.items()],
        }
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await service.open_account(uow, "acme", account, body, today=TODAY)


async def in_household(
    db: Database,
    account: str,
    household: str,
    kind: str = "taxable",
    tax: TaxSettingsV1 | None = None,
) -> None:
    """account-svc's account-changed: household, type and (``tax``) tax settings."""
    payload = AccountChangedV1(
        account_id=account,
        household_id=household,
        name=account,
        account_type=kind,
        model_id=None,
        status="active",
        auto_approve=True,
        tax_settings=tax,
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await on_account_changed(uow, [delivery(payload, key=account, tenant="acme")])


def fill(account: str, sym: str, side: str, qty: str, price: str, on: date) -> FillsReceivedV1:
    fid = uid("ex")
    return FillsReceivedV1(
        fill_id=fid,
        client_order_id=f"co-{fid}",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol=sym,
        side=side,
        quantity=D(qty),
        price=D(price),
        executed_at=datetime(on.year, on.month, on.day, 15, 0, tzinfo=UTC),
    )


async def apply(db: Database, f: FillsReceivedV1, **extra: Any) -> None:
    """Through the handler, as the consumer would (``extra``: fees, lot_ids, sleeve_id)."""
    if extra:
        f = FillsReceivedV1.model_validate({**f.model_dump(mode="json"), **extra})
    async with unit_of_work(db, "taxlot-svc") as uow:
        await on_fills_received(uow, [delivery(f, tenant="acme")])


def plain(positions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: p[k] for k in ("symbol", "quantity", "cost_basis")} for p in positions]


async def gains(client: httpx.AsyncClient, account: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/accounts/{account}/realized-gains", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def lots(client: httpx.AsyncClient, account: str) -> list[dict[str, Any]]:
    response = await client.get(f"/accounts/{account}/lots")
    assert response.status_code == 200, response.text
    return response.json()["lots"]


async def reconciled(db: Database, account: str) -> list[dict[str, Any]]:
    """The account's holdings-reconciled, after the snapshot loop's work is done."""
    async with unit_of_work(db, "taxlot-svc") as uow:
        await snapshots.publish_pending(uow, limit=100_000)
    async with db.sessions() as s:
        rows = await pending_messages(s, 1_000_000)
    return [
        json.loads(r.value)["payload"]
        for r in rows
        if r.key == account and r.topic == "holdings-reconciled"
    ]


async def recorded(db: Database, action_id: str) -> list[tuple[str | None, dict[str, Any]]]:
    """The corporate-action-recorded events of an action in the outbox: (key, payload)."""
    async with db.sessions() as s:
        rows = await pending_messages(s, 1_000_000)
    out = []
    for r in rows:
        if r.topic != "corporate-action-recorded":
            continue
        payload = json.loads(r.value)["payload"]
        if payload["action_id"] == action_id:
            out.append((r.key, payload))
    return out


# --- 1. relief method, named lots, fees ------------------------------------------------------


async def test_the_relief_method_changes_realized_gains(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    """The method comes from account-svc's account-changed (``tax_settings``)."""
    sym = symbol()
    results = {}
    for method in ("fifo", "lifo", "hifo", "mintax"):
        account = uid("M")
        await open_book(
            taxlot_db,
            account,
            [
                (sym, "10", "500.00", "2022-01-05"),  # 50/share: long-term gain at 100
                (sym, "10", "1200.00", "2022-06-01"),  # 120/share: long-term loss
                (sym, "10", "1050.00", "2024-01-10"),  # 105/share: short-term loss
                (sym, "10", "800.00", "2024-02-01"),  # 80/share: short-term gain
            ],
        )
        if method != "fifo":  # fifo is the default
            tax = TaxSettingsV1(relief_method=method)
            await in_household(taxlot_db, account, f"H-{account}", tax=tax)
        await apply(taxlot_db, fill(account, sym, "sell", "10", "100", date(2024, 6, 3)))
        body = await gains(client, account)
        [row] = body["gains"]
        results[method] = (row["lot_id"], row["gain"], row["term"], body["total"])
    assert results == {
        "fifo": ("opening-" + sym + "-1", "500.00", "long", "500.00"),
        "lifo": ("opening-" + sym + "-4", "200.00", "short", "200.00"),
        "hifo": ("opening-" + sym + "-2", "-200.00", "long", "-200.00"),
        # min-tax: the least tax per share at the default rates (-20 x 20% beats -5 x 37%)
        "mintax": ("opening-" + sym + "-2", "-200.00", "long", "-200.00"),
    }


async def test_tax_settings_come_from_account_changed_and_are_read_only(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym = symbol()
    account = uid("T")
    # An account without a ledger (of the caller's tenant) is not known here.
    assert (await client.get(f"/accounts/{account}/tax-settings")).status_code == 404
    # This service no longer takes them over REST: one source, account-svc.
    put = await client.put(f"/accounts/{account}/tax-settings", json={"method": "hifo"})
    assert put.status_code == 405
    await open_book(
        taxlot_db,
        account,
        [
            (sym, "10", "500.00", "2022-01-05"),  # 50/share
            (sym, "10", "1200.00", "2022-06-01"),  # 120/share
            (sym, "10", "800.00", "2024-02-01"),  # 80/share
        ],
    )
    default = (await client.get(f"/accounts/{account}/tax-settings")).json()
    assert (default["method"], default["source"], default["short_term_rate"]) == (
        "fifo",
        "default",
        None,
    )
    assert default["set_in"] == "account-svc: PUT /accounts/{account_id}/tax-settings"
    household = uid("H")
    lifo = TaxSettingsV1(relief_method="lifo", short_term_rate=D("0.4"), long_term_rate=D("0.15"))
    await in_household(taxlot_db, account, household, tax=lifo)
    read = (await client.get(f"/accounts/{account}/tax-settings")).json()
    assert (read["method"], read["short_term_rate"], read["long_term_rate"], read["source"]) == (
        "lifo",
        "0.4",
        "0.15",
        "account-changed",
    )
    first = fill(account, sym, "sell", "10", "100", date(2024, 6, 3))
    await apply(taxlot_db, first)
    # account-svc switches the account to hifo: later sells use it, the earlier one keeps lifo.
    await in_household(taxlot_db, account, household, tax=TaxSettingsV1(relief_method="hifo"))
    assert (await client.get(f"/accounts/{account}/tax-settings")).json()["method"] == "hifo"
    second = fill(account, sym, "sell", "5", "100", date(2024, 6, 10))
    await apply(taxlot_db, second)
    # A late sell (hifo, in force when it arrives) replays the security: the first sale is
    # still relieved by lifo, the one it arrived with.
    late = fill(account, sym, "sell", "1", "100", date(2024, 4, 1))
    await apply(taxlot_db, late)
    body = await gains(client, account)
    relieved = {g["fill_id"]: (g["lot_id"], g["quantity"]) for g in body["gains"]}
    assert relieved == {
        first.fill_id: (f"opening-{sym}-3", "10"),  # lifo: the newest lot
        second.fill_id: (f"opening-{sym}-2", "5"),  # hifo: 120/share
        late.fill_id: (f"opening-{sym}-2", "1"),
    }
    # Rates from account-changed give the estimate (hifo's came with the defaults: 37% /
    # 20%): short-term 10 x (100 - 80) = 200.00, long-term 6 x (100 - 120) = -120.00,
    # netted as Schedule D does: 80.00 short-term at 37% = 29.60.
    assert (body["short_term"], body["long_term"], body["estimated_tax"]) == (
        "200.00",
        "-120.00",
        "29.60",
    )
    # An account-changed without tax_settings: the contract's defaults (fifo).
    await in_household(taxlot_db, account, household)
    read = (await client.get(f"/accounts/{account}/tax-settings")).json()
    assert (read["method"], read["short_term_rate"], read["long_term_rate"]) == (
        "fifo",
        "0.37",
        "0.20",
    )


async def test_named_lots_and_fees(client: httpx.AsyncClient, taxlot_db: Database) -> None:
    sym = symbol()
    account = uid("L")
    await open_book(
        taxlot_db,
        account,
        [(sym, "10", "500.00", "2022-01-05"), (sym, "10", "900.00", "2024-01-10")],
    )
    tax = TaxSettingsV1(relief_method="fifo", short_term_rate=D("0.4"), long_term_rate=D("0.2"))
    await in_household(taxlot_db, account, f"H-{account}", tax=tax)
    buy = fill(account, sym, "buy", "4", "100", date(2024, 5, 1))
    await apply(taxlot_db, buy, fees="2.50")
    sell = fill(account, sym, "sell", "12", "95", date(2024, 6, 3))
    await apply(taxlot_db, sell, fees="6.00", lot_ids=[f"opening-{sym}-2", f"fill-{buy.fill_id}"])
    body = await gains(client, account)
    # 12 x 95 - 6 = 1134.00 net, split by quantity: 945.00 for 10 shares, 189.00 for 2.
    assert [
        (g["lot_id"], g["quantity"], g["proceeds"], g["cost_basis"]) for g in body["gains"]
    ] == [
        (f"opening-{sym}-2", "10", "945.00", "900.00"),
        (f"fill-{buy.fill_id}", "2", "189.00", "201.25"),  # half of 400 + 2.50
    ]
    # estimate: short-term 45.00 - 12.25 = 32.75 at 40%
    assert body["short_term"] == "32.75" and body["estimated_tax"] == "13.10"
    holdings = (await client.get(f"/accounts/{account}/holdings")).json()
    assert holdings["cash"] == "10731.50"  # 10000 - 402.50 + 1134.00
    left = await lots(client, account)
    assert [(x["lot_id"], x["quantity"], x["cost_basis"]) for x in left] == [
        (f"opening-{sym}-1", "10", "500.00"),
        (f"fill-{buy.fill_id}", "2", "201.25"),
    ]
    # A named lot that is not open: dead-lettered, nothing changed.
    before = await client.get(f"/accounts/{account}/holdings")
    bad = fill(account, sym, "sell", "1", "95", date(2024, 6, 4))
    with pytest.raises(PermanentMessageError, match="not open"):
        await apply(taxlot_db, bad, lot_ids=[f"opening-{sym}-2"])
    with pytest.raises(PermanentMessageError, match="lot_ids must be lot ids"):
        await apply(taxlot_db, bad, lot_ids=["a;b"])
    assert (await client.get(f"/accounts/{account}/holdings")).json() == before.json()


# --- 2. wash sales across the household ------------------------------------------------------


async def test_household_wash_sale_taxable_loss_ira_replacement(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym = symbol()
    household = uid("H")
    taxable, ira = uid("A"), uid("B")
    await in_household(taxlot_db, taxable, household)
    await in_household(taxlot_db, ira, household, "ira")
    await open_book(taxlot_db, taxable, [(sym, "100", "1000.00", "2024-01-10")])
    await open_book(taxlot_db, ira, [])
    await apply(taxlot_db, fill(taxable, sym, "sell", "100", "7.50", date(2024, 6, 3)))
    await apply(taxlot_db, fill(ira, sym, "buy", "60", "8", date(2024, 6, 20)))
    body = await gains(client, taxable)
    [row] = body["gains"]
    assert (row["code"], row["adjustment"], row["permanent"], row["washed_quantity"]) == (
        "W",
        "150.00",
        "150.00",
        "60",
    )
    assert row["gain_loss"] == "-100.00" and body["total"] == "-100.00"
    assert (body["disallowed"], body["permanently_disallowed"]) == ("150.00", "150.00")
    [lot] = await lots(client, ira)
    # IRA: the loss is gone for good, the replacement's basis and dates do not change.
    assert (lot["cost_basis"], lot["holding_start"], lot["replacement"]) == (
        "480.00",
        "2024-06-20",
        True,
    )
    csv = (await client.get(f"/accounts/{taxable}/form8949.csv")).text.splitlines()
    assert csv == [
        "account,symbol,quantity,date_acquired,date_sold,proceeds,cost_basis,code,adjustment,gain_loss,term",
        f"{taxable},{sym},100,2024-01-10,2024-06-03,750.00,1000.00,W,150.00,-100.00,short",
    ]
    assert (await client.get(f"/accounts/{ira}/form8949.csv")).text.splitlines()[1:] == []
    # The seller's snapshot (restated by the IRA's buy): 40 shares of the loss are still
    # open to a wash, with $2.50 of loss each; the IRA's names its replacement lot.
    seller = (await reconciled(taxlot_db, taxable))[-1]
    assert seller["household_id"] == household
    assert seller["recent_loss_sales"] == [
        {"symbol": sym, "sold_on": "2024-06-03", "quantity": "40", "loss_per_share": "2.50"}
    ]
    # Realized this year, after the wash sale: $250 loss less the $150 disallowed.
    assert seller["realized_this_year"] == {"year": 2024, "short_term": "-100.00", "long_term": "0"}
    bought = (await reconciled(taxlot_db, ira))[-1]
    assert [lot["cost_basis"] for p in bought["positions"] for lot in p["lots"]] == ["480.00"]


async def test_taxable_replacement_and_a_late_sale_give_the_same_book(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    """IRS Publication 550, wash sales example 1, across two accounts of a household, with
    the sale arriving AFTER the replacement it is washed by."""
    sym = symbol()
    household = uid("H")
    seller, buyer = uid("A"), uid("C")
    for account in (seller, buyer):
        await in_household(taxlot_db, account, household)
    await open_book(taxlot_db, seller, [(sym, "100", "1000.00", "2024-01-10")])
    await open_book(taxlot_db, buyer, [])
    buy = fill(buyer, sym, "buy", "100", "8", date(2024, 6, 20))
    await apply(taxlot_db, buy)
    sale = fill(seller, sym, "sell", "100", "7.50", date(2024, 6, 3))
    await apply(taxlot_db, sale)  # late: dated before the buy already applied
    [row] = (await gains(client, seller))["gains"]
    assert (row["code"], row["adjustment"], row["gain_loss"]) == ("W", "250.00", "0.00")
    [lot] = await lots(client, buyer)
    assert (lot["cost_basis"], lot["holding_start"], lot["wash_adjustment"]) == (
        "1050.00",
        "2024-01-27",
        "250.00",
    )
    # The buyer's basis changed because of the seller's fill: it gets holdings-reconciled.
    events = await reconciled(taxlot_db, buyer)
    # One event (coalesced): the buyer's own buy; the seller's fill is not the buyer's.
    assert (events[-1]["cause"], events[-1]["fill_ids"]) == ("fills", [buy.fill_id])
    assert plain(events[-1]["positions"]) == [
        {"symbol": sym, "quantity": "100", "cost_basis": "1050.00"}
    ]
    assert events[-1]["positions"][0]["lots"][0]["wash_adjustment"] == "250.00"
    # The seller's snapshot names the fill; the loss is matched, so no recent loss sale.
    seller_last = (await reconciled(taxlot_db, seller))[-1]
    assert seller_last["fill_ids"] == [sale.fill_id] and seller_last["recent_loss_sales"] == []
    async with taxlot_db.sessions() as s:
        kinds = [(e.kind, e.fill_id) for e in await repo.ledger_entries(s, seller)]
    assert ("replay", sale.fill_id) in kinds
    async with taxlot_db.sessions() as s:
        restated = [(e.kind, e.fill_id, e.amount) for e in await repo.ledger_entries(s, buyer)]
    assert ("restate", sale.fill_id, D("250.00")) in restated


async def test_a_late_fill_that_breaks_a_later_sale_is_refused(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym = symbol()
    account = uid("A")
    await open_book(taxlot_db, account, [(sym, "10", "1000.00", "2024-01-10")])
    await apply(taxlot_db, fill(account, sym, "sell", "10", "120", date(2024, 6, 10)))
    before = (await gains(client, account), await lots(client, account))
    # Nothing is left now; a sell dated earlier would leave the June 10 sale short.
    late = fill(account, sym, "sell", "0.5", "110", date(2024, 6, 1))
    with pytest.raises(
        PermanentMessageError, match=r"cannot relieve 10 shares: the open position is 9\.5"
    ):
        await apply(taxlot_db, late)
    await apply(taxlot_db, fill(account, sym, "buy", "1", "100", date(2024, 6, 12)))
    late = fill(account, sym, "sell", "1", "110", date(2024, 6, 1))
    with pytest.raises(PermanentMessageError, match="cannot relieve"):
        await apply(taxlot_db, late)
    assert (await gains(client, account))["gains"] == before[0]["gains"]
    async with taxlot_db.sessions() as s:
        assert await repo.get_fills(s, [late.fill_id]) == {}


async def test_joining_a_household_washes_across_it(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym = symbol()
    seller, buyer = uid("A"), uid("C")
    await open_book(taxlot_db, seller, [(sym, "100", "1000.00", "2024-01-10")])
    await open_book(taxlot_db, buyer, [])
    await apply(taxlot_db, fill(seller, sym, "sell", "100", "7.50", date(2024, 6, 3)))
    await apply(taxlot_db, fill(buyer, sym, "buy", "100", "8", date(2024, 6, 20)))
    assert (await gains(client, seller))["gains"][0]["code"] == ""  # separate households
    household = uid("H")
    await in_household(taxlot_db, seller, household)
    await in_household(taxlot_db, buyer, household)
    assert (await gains(client, seller))["gains"][0]["code"] == "W"
    assert (await lots(client, buyer))[0]["cost_basis"] == "1050.00"
    last = (await reconciled(taxlot_db, buyer))[-1]
    assert last["cause"] == "household-change" and last["positions"][0]["cost_basis"] == "1050.00"
    assert last["household_id"] == household


# --- 3. gains by year, unrealized, blocks ----------------------------------------------------


async def equivalence_set(
    db: Database, set_id: str, members: list[str], *, identical: bool, version: int, **more: Any
) -> tuple[int, bool, bool, list[str]]:
    """model-hub-svc's equivalence-set-changed, through the handler; the set as stored
    afterwards: (version, identical, removed, members)."""
    payload = EquivalenceSetChangedV1(
        set_id=set_id,
        name=set_id,
        members=members,
        identical=identical,
        version=version,
        **more,
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await on_equivalence_set_changed(uow, envelope(payload, key=set_id, tenant="acme"), payload)
    async with db.sessions() as s:
        [row] = [r for r in await repo.equivalence_sets(s) if r.set_id == set_id]
    return (row.version, row.identical, row.removed, row.members)


async def test_only_identical_equivalence_sets_wash_a_loss_with_another_security(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    """A loss sale of X in one account and a purchase of Y in another account of the
    household 17 days later: washed only when {X, Y} is an equivalence set marked identical
    (a plain set is a substitute, not substantially identical)."""
    outcomes = {}
    for kind in ("no set", "plain set", "identical set"):
        x, y = symbol(), symbol()
        if kind != "no set":
            identical = kind == "identical set"
            stored = await equivalence_set(
                taxlot_db, uid("set"), [x, y], identical=identical, version=1
            )
            assert stored == (1, identical, False, [x, y])
        household = uid("H")
        seller, buyer = uid("A"), uid("C")
        await in_household(taxlot_db, seller, household)
        await in_household(taxlot_db, buyer, household)
        await open_book(taxlot_db, seller, [(x, "100", "1000.00", "2024-01-10")])
        await open_book(taxlot_db, buyer, [])
        await apply(taxlot_db, fill(seller, x, "sell", "100", "7.50", date(2024, 6, 3)))
        # Before the fact: what the household may not buy now without washing the loss.
        blocks = (
            await client.get(
                f"/households/{household}/wash-sale-blocks", params={"on": "2024-06-10"}
            )
        ).json()
        [block] = blocks["buy_blocks"]
        await apply(taxlot_db, fill(buyer, y, "buy", "100", "8", date(2024, 6, 20)))
        [sale] = (await gains(client, seller))["gains"]
        [lot] = await lots(client, buyer)
        outcomes[kind] = (
            sorted(block["symbols"]) == sorted([x, y]),
            block["symbols"] == [x],
            sale["code"],
            sale["adjustment"],
            sale["gain_loss"],
            lot["cost_basis"],
            lot["holding_start"],
        )
    not_washed = (False, True, "", "0.00", "-250.00", "800.00", "2024-06-20")
    assert outcomes == {
        "no set": not_washed,
        "plain set": not_washed,
        # Publication 550 example 1 across securities: $250 disallowed, added to Y's basis,
        # the holding period of X (145 days) tacked on.
        "identical set": (True, False, "W", "250.00", "0.00", "1050.00", "2024-01-27"),
    }


async def test_equivalence_set_versions_newest_wins_and_removal_drops_it(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    x, y = symbol(), symbol()
    set_id = uid("set")
    v2 = (2, True, False, [x, y])
    assert await equivalence_set(taxlot_db, set_id, [x, y], identical=True, version=2) == v2
    # An older version arriving late, and a repeat, change nothing.
    assert await equivalence_set(taxlot_db, set_id, [x], identical=False, version=1) == v2
    assert await equivalence_set(taxlot_db, set_id, [y, x], identical=True, version=2) == v2
    household = uid("H")
    seller, buyer = uid("A"), uid("C")
    await in_household(taxlot_db, seller, household)
    await in_household(taxlot_db, buyer, household)
    await open_book(taxlot_db, seller, [(x, "100", "1000.00", "2024-01-10")])
    await open_book(taxlot_db, buyer, [])
    # Y bought before the loss sale of X (and still held): 10 replacement shares.
    await apply(taxlot_db, fill(buyer, y, "buy", "10", "8", date(2024, 6, 1)))
    await apply(taxlot_db, fill(seller, x, "sell", "100", "7.50", date(2024, 6, 3)))
    [sale] = (await gains(client, seller))["gains"]
    assert (sale["code"], sale["washed_quantity"], sale["adjustment"]) == ("W", "10", "25.00")
    # A late purchase of Y (dated before the sale) replays X and Y together: 5 more shares.
    await apply(taxlot_db, fill(buyer, y, "buy", "5", "8", date(2024, 6, 2)))
    [sale] = (await gains(client, seller))["gains"]
    assert (sale["washed_quantity"], sale["adjustment"]) == ("15", "37.50")
    assert sorted(x["cost_basis"] for x in await lots(client, buyer)) == ["105.00", "52.50"]
    # Removed: a purchase of Y no longer washes the rest of X's loss.
    removed = await equivalence_set(
        taxlot_db, set_id, [x, y], identical=True, version=3, removed=True
    )
    assert removed == (3, True, True, [])
    async with taxlot_db.sessions() as s:
        assert not [m for m in await repo.identical_sets(s) if x in m]
    await apply(taxlot_db, fill(buyer, y, "buy", "20", "8", date(2024, 6, 10)))
    [sale] = (await gains(client, seller))["gains"]
    assert (sale["washed_quantity"], sale["adjustment"]) == ("15", "37.50")
    assert "160.00" in [x["cost_basis"] for x in await lots(client, buyer)]
    # A member that is no symbol is dead-lettered, naming the set.
    with pytest.raises(PermanentMessageError, match="empty symbol"):
        await equivalence_set(taxlot_db, uid("set"), [x, " "], identical=True, version=1)


async def test_realized_gains_by_year(client: httpx.AsyncClient, taxlot_db: Database) -> None:
    sym = symbol()
    account = uid("Y")
    await open_book(taxlot_db, account, [(sym, "10", "1000.00", "2022-01-10")])
    await apply(taxlot_db, fill(account, sym, "sell", "4", "150", date(2024, 3, 1)))
    await apply(taxlot_db, fill(account, sym, "sell", "6", "50", date(2025, 3, 1)))
    assert [g["sold_on"] for g in (await gains(client, account, year=2024))["gains"]] == [
        "2024-03-01"
    ]
    y2025 = await gains(client, account, year=2025)
    assert (y2025["long_term"], y2025["year"]) == ("-300.00", 2025)
    assert (await gains(client, account))["total"] == "-100.00"
    assert (await client.get(f"/accounts/{account}/realized-gains?year=abc")).status_code == 422


async def test_unrealized_from_last_fill_or_security_master(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym, other, unpriced = symbol(), symbol(), symbol()
    account = uid("U")
    await open_book(
        taxlot_db,
        account,
        [
            (sym, "10", "1000.00", "2022-01-10"),
            (other, "5", "100.00", "2023-12-10"),
            (unpriced, "1", "10.00", "2023-12-10"),
        ],
    )
    master = SecuritiesChangedV1(
        securities=[
            SecurityV1(symbol=s, name=s, asset_class="equity", sector="x", price=D(p))
            for s, p in ((sym, "90"), (other, "30"))
        ]
    )
    async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
        await on_securities_changed(uow, envelope(master, key="sm", tenant="acme"), master)
    buyer = uid("Z")
    await open_book(taxlot_db, buyer, [])
    await apply(taxlot_db, fill(buyer, sym, "buy", "1", "95.5", date(2026, 11, 20)))
    by_master = (
        await client.get(f"/accounts/{account}/unrealized", params={"on": "2024-06-01"})
    ).json()
    assert {x["symbol"]: (x["price"], x["unrealized"], x["term"]) for x in by_master["lots"]} == {
        other: ("30", "50.00", "short"),
        sym: ("90", "-100.00", "long"),
    }
    assert by_master["unpriced"] == [unpriced]
    assert (by_master["short_term"], by_master["long_term"]) == ("50.00", "-100.00")
    by_fill = (
        await client.get(
            f"/accounts/{account}/unrealized",
            params={"prices": "from-last-fill", "on": "2024-06-01"},
        )
    ).json()
    values = {x["symbol"]: (x["price"], x["unrealized"]) for x in by_fill["lots"]}
    assert values == {sym: ("95.5", "-45.00"), other: ("30", "50.00")}
    bad = await client.get(f"/accounts/{account}/unrealized", params={"prices": "guess"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.prices"


async def test_wash_sale_blocks_before_the_fact(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym, held = symbol(), symbol()
    household = uid("H")
    taxable, ira = uid("A"), uid("B")
    await in_household(taxlot_db, taxable, household)
    await in_household(taxlot_db, ira, household, "ira")
    await open_book(
        taxlot_db,
        taxable,
        [(sym, "100", "1000.00", "2024-01-10"), (held, "10", "500.00", "2023-01-10")],
    )
    await open_book(taxlot_db, ira, [])
    await apply(taxlot_db, fill(taxable, sym, "sell", "100", "7.50", date(2024, 6, 3)))
    await apply(taxlot_db, fill(ira, held, "buy", "3", "40", date(2024, 6, 5)))
    body = (
        await client.get(f"/households/{household}/wash-sale-blocks", params={"on": "2024-06-10"})
    ).json()
    assert body["accounts"] == sorted([taxable, ira])
    [buy] = body["buy_blocks"]
    assert (buy["symbols"], buy["until"], buy["quantity"], buy["loss"]) == (
        [sym],
        "2024-07-03",
        "100",
        "250.00",
    )
    [sell] = body["sell_blocks"]
    assert (sell["account_id"], sell["lot_id"], sell["washable_quantity"], sell["until"]) == (
        taxable,
        f"opening-{held}-1",
        "3",
        "2024-07-05",
    )
    later = (
        await client.get(f"/households/{household}/wash-sale-blocks", params={"on": "2024-07-06"})
    ).json()
    assert later["buy_blocks"] == [] and later["sell_blocks"] == []
    missing = await client.get(f"/households/{uid('H')}/wash-sale-blocks")
    assert missing.status_code == 404


# --- 4. corporate actions --------------------------------------------------------------------


async def test_a_split_with_cash_in_lieu_applied_once(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym = symbol()
    a, b = uid("A"), uid("B")
    await open_book(taxlot_db, a, [(sym, "15", "1500.00", "2023-01-10")])
    await open_book(taxlot_db, b, [(sym, "4", "300.00", "2024-01-10")])
    action = {
        "action_id": uid("split"),
        "type": "split",
        "symbol": sym,
        "on": "2024-06-03",
        "numerator": 3,
        "denominator": 2,
        "cash_price": "60",
    }
    created = await client.post("/corporate-actions", json=action)
    assert created.status_code == 201, created.text
    result = created.json()
    assert {x["account_id"]: x["cash_change"] for x in result["accounts"]} == {
        a: "30.00",  # 22.5 new shares: 0.5 paid at 60
        b: "0.00",
    }
    [lot] = await lots(client, a)
    # basis 1500 for 22.5 shares: 0.5 carries 33.33, the 22 kept carry the rest
    assert (lot["quantity"], lot["cost_basis"], lot["acquired_on"]) == (
        "22",
        "1466.67",
        "2023-01-10",
    )
    [fraction] = (await gains(client, a))["gains"]
    assert (fraction["cause"], fraction["proceeds"], fraction["cost_basis"], fraction["term"]) == (
        "corporate-action",
        "30.00",
        "33.33",
        "long",
    )
    assert (await lots(client, b))[0]["quantity"] == "6"
    holdings = (await client.get(f"/accounts/{a}/holdings")).json()
    assert holdings["cash"] == "10030.00"
    events = await reconciled(taxlot_db, a)
    assert events[-1]["cause"] == "corporate-action" and events[-1]["fill_ids"] == []
    assert events[-1]["action_id"] == action["action_id"]
    assert plain(events[-1]["positions"]) == [
        {"symbol": sym, "quantity": "22", "cost_basis": "1466.67"}
    ]

    announced = [
        (
            "corporate-actions",
            {
                "action_id": action["action_id"],
                "type": "split",
                "symbol": sym,
                "on": "2024-06-03",
                "new_symbol": None,
                "numerator": 3,
                "denominator": 2,
                "ratio": None,
                "cash_per_share": None,
                "basis_percent": None,
                "accounts_affected": 2,
            },
        )
    ]
    assert await recorded(taxlot_db, action["action_id"]) == announced

    again = await client.post("/corporate-actions", json=action)
    assert again.status_code == 200 and again.json()["repeated"] is True
    assert (await client.get(f"/accounts/{a}/holdings")).json()["cash"] == "10030.00"
    assert len(await reconciled(taxlot_db, a)) == len(events)
    assert await recorded(taxlot_db, action["action_id"]) == announced  # once, not again
    other = await client.post(
        "/corporate-actions", json={**action, "numerator": 2, "denominator": 1}
    )
    assert other.status_code == 409

    # An opening balance stated after the split already reflects it: a lot acquired before
    # the split would be split twice, so it is refused; one acquired after it is not split.
    late_opener = uid("O")
    opening: dict[str, Any] = {
        "as_of": "2024-07-01",
        "cash": "0",
        "positions": [
            {"symbol": sym, "quantity": "3", "cost_basis": "90", "acquired_on": "2024-01-10"}
        ],
    }
    refused = await client.post(f"/accounts/{late_opener}/holdings", json=opening)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["positions[0].symbol"]
    opening["positions"][0]["acquired_on"] = "2024-06-05"
    accepted = await client.post(f"/accounts/{late_opener}/holdings", json=opening)
    assert accepted.status_code == 201, accepted.text
    assert (await lots(client, late_opener))[0]["quantity"] == "3"

    # A fill after the split replays with it: the post-split shares can be sold.
    await apply(taxlot_db, fill(a, sym, "sell", "22", "70", date(2024, 6, 10)))
    assert await lots(client, a) == []


async def test_corporate_action_refusals_name_the_field(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    nobody = symbol()
    base = {"action_id": uid("ca"), "symbol": nobody, "on": "2024-06-03"}
    cases = [
        ({**base, "type": "cash-dividend", "per_share": "0.5"}, "symbol"),
        ({**base, "type": "split", "numerator": 0, "denominator": 1}, "numerator"),
        ({**base, "type": "reverse-split", "numerator": 10, "denominator": 1}, "numerator"),
        (
            {**base, "type": "spin-off", "new_symbol": "Y", "ratio": "1", "basis_percent": "120"},
            "basis_percent",
        ),
        ({**base, "type": "cash-dividend", "per_share": "1", "on": "2999-01-01"}, "on"),
        ({**base, "type": "merger"}, "type"),
    ]
    for body, field in cases:
        response = await client.post("/corporate-actions", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        fields = [e["field"] for e in response.json().get("errors", [])]
        assert any(f == field or f.endswith("." + field) for f in fields), (field, fields)
    # An opening balance stated after the action date already reflects it.
    sym = symbol()
    account = uid("O")
    await open_book(taxlot_db, account, [(sym, "10", "100.00", "2023-01-10")])  # as of 2024-02-15
    early = {
        **base,
        "symbol": sym,
        "type": "split",
        "numerator": 2,
        "denominator": 1,
        "on": "2023-06-01",
    }
    response = await client.post("/corporate-actions", json=early)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "on"
    assert (await lots(client, account))[0]["quantity"] == "10"
    assert await recorded(taxlot_db, base["action_id"]) == []  # refused: nothing announced


async def test_dividend_mergers_spin_off_and_symbol_change(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym, spun, renamed, acquirer = symbol(), symbol(), symbol(), symbol()
    account = uid("C")
    await open_book(taxlot_db, account, [(sym, "10", "1000.00", "2023-01-10")], cash="0.00")

    async def act(kind: str, on: str, **terms: Any) -> dict[str, Any]:
        body = {"action_id": uid(kind), "type": kind, "on": on, "symbol": sym, **terms}
        response = await client.post("/corporate-actions", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    dividend = await act("cash-dividend", "2024-03-01", per_share="0.25")
    assert dividend["accounts"] == [
        {"account_id": account, "cash_change": "2.50", "realized_lots": 0}
    ]
    [(_, paid)] = await recorded(taxlot_db, dividend["action_id"])
    assert (paid["type"], paid["cash_per_share"], paid["accounts_affected"]) == (
        "cash-dividend",
        "0.25",
        1,
    )
    spin = await act("spin-off", "2024-04-01", new_symbol=spun, ratio="0.5", basis_percent="20")
    [(_, spin_off)] = await recorded(taxlot_db, spin["action_id"])
    assert (spin_off["new_symbol"], spin_off["ratio"], spin_off["basis_percent"]) == (
        spun,
        "0.5",
        "20",
    )
    held = {
        x["symbol"]: (x["quantity"], x["cost_basis"], x["holding_start"])
        for x in await lots(client, account)
    }
    assert held == {sym: ("10", "800.00", "2023-01-10"), spun: ("5", "200.00", "2023-01-10")}
    await act("symbol-change", "2024-05-01", new_symbol=renamed)
    sym_lots = [x for x in await lots(client, account) if x["symbol"] == renamed]
    assert [(x["quantity"], x["cost_basis"]) for x in sym_lots] == [("10", "800.00")]
    body = {
        "action_id": uid("m"),
        "type": "stock-merger",
        "on": "2024-06-01",
        "symbol": renamed,
        "new_symbol": acquirer,
        "ratio": "2",
    }
    assert (await client.post("/corporate-actions", json=body)).status_code == 201
    body = {
        "action_id": uid("c"),
        "type": "cash-merger",
        "on": "2024-07-01",
        "symbol": spun,
        "cash_per_share": "50",
    }
    merged = (await client.post("/corporate-actions", json=body)).json()
    assert merged["accounts"] == [
        {"account_id": account, "cash_change": "250.00", "realized_lots": 1}
    ]
    assert {x["symbol"]: (x["quantity"], x["cost_basis"]) for x in await lots(client, account)} == {
        acquirer: ("20", "800.00")
    }
    [sale] = (await gains(client, account))["gains"]
    assert (sale["symbol"], sale["gain"], sale["term"]) == (spun, "50.00", "long")
    assert (await client.get(f"/accounts/{account}/holdings")).json()["cash"] == "252.50"


# --- 5. sleeves ---------------------------------------------------------------------------------


async def test_sleeve_transfer_moves_lots_without_a_taxable_event(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym = symbol()
    account = uid("A")
    await open_book(
        taxlot_db, account, [(sym, "10", "1000.00", "2024-01-10"), (sym, "5", "600", "2024-02-01")]
    )
    transfer = {
        "transfer_id": uid("t"),
        "symbol": sym,
        "quantity": "12",
        "to_sleeve": "growth",
        "on": "2024-06-01",
    }
    response = await client.post(f"/accounts/{account}/sleeve-transfers", json=transfer)
    assert response.status_code == 201, response.text
    moved = response.json()["moved"]
    # FIFO: the whole first lot and 2 shares of the second, basis and dates kept.
    assert [(m["quantity"], m["cost_basis"], m["acquired_on"], m["sleeve"]) for m in moved] == [
        ("10", "1000.00", "2024-01-10", "growth"),
        ("2", "240.00", "2024-02-01", "growth"),
    ]
    book = await lots(client, account)
    assert sorted((x["sleeve"], x["quantity"]) for x in book) == [
        ("", "3"),
        ("growth", "10"),
        ("growth", "2"),
    ]
    assert (await gains(client, account))["gains"] == []  # no taxable event
    again = await client.post(f"/accounts/{account}/sleeve-transfers", json=transfer)
    assert again.status_code == 200 and again.json()["repeated"] is True
    other = await client.post(
        f"/accounts/{account}/sleeve-transfers", json={**transfer, "quantity": "1"}
    )
    assert other.status_code == 409
    too_much = await client.post(
        f"/accounts/{account}/sleeve-transfers",
        json={**transfer, "transfer_id": uid("t"), "quantity": "4", "to_sleeve": "income"},
    )
    assert too_much.status_code == 422 and too_much.json()["errors"][0]["field"] == "quantity"
    snap = (await reconciled(taxlot_db, account))[-1]
    assert snap["cause"] == "sleeve-transfer"
    assert sorted(lot["sleeve_id"] or "" for p in snap["positions"] for lot in p["lots"]) == [
        "",
        "growth",
        "growth",
    ]
    # A sell in the growth sleeve relieves growth lots only (FIFO within the sleeve).
    await apply(
        taxlot_db, fill(account, sym, "sell", "11", "130", date(2024, 7, 1)), sleeve_id="growth"
    )
    assert sorted((x["sleeve"], x["quantity"]) for x in await lots(client, account)) == [
        ("", "3"),
        ("growth", "1"),
    ]
    sold = (await gains(client, account))["gains"]
    assert sorted((g["quantity"], g["cost_basis"]) for g in sold) == [
        ("1", "120.00"),
        ("10", "1000.00"),
    ]
    # A late transfer (dated before the sale) replays: it would leave the sale short
    # (growth would hold nothing; the 3 unassigned shares do not make 11).
    late = await client.post(
        f"/accounts/{account}/sleeve-transfers",
        json={
            **transfer,
            "transfer_id": uid("t"),
            "quantity": "12",
            "on": "2024-06-15",
            "from_sleeve": "growth",
            "to_sleeve": "income",
        },
    )
    assert late.status_code == 422, late.text
    assert "cannot relieve 11 shares" in late.json()["errors"][0]["message"]
