"""Tax-loss harvesting as a rebalance mode: ``harvest`` (one account), ``harvest_book``
(many), or ``Request(kind="harvest")`` through ``rebalance``.

For each sleeve of a taxable account with tax settings (``Account.tax``), the lots whose
loss reaches both thresholds of ``tax.harvest`` (percent of basis and dollars, by month
if a schedule is given) are sold and the proceeds buy a replacement, so the exposure is
kept:

* the replacement is named by the model (the entry's ``replacement``) or by the security's
  equivalence set (in set order), is never substantially identical to the sold security
  (same symbol or an ``identical`` equivalence set), never buy-blocked by a household loss
  sale of the last 30 days, never do-not-buy / do-not-hold, and never something harvested
  at a loss in the same run (any sleeve);
* a lot a recent purchase would wash (this account's purchases of the last 30 days, the
  household's ``recent_purchases``, a replacement bought in this run) is not harvested,
  and do-not-sell holdings are not either: a harvest never creates a wash sale;
* every trade has reason ``tax-loss-harvest``; the sale names its lots and carries its
  estimated tax (negative: the tax saved), the buy says what it replaces; the result's
  ``tax.tax_saved`` sums the savings;
* with ``swap_back`` on, a replacement (a held equivalent of a model security that is not
  in the model, nor substantially identical to it) goes back to the model security once
  nothing blocks buying it (the wash-sale window of the harvest is over), selling only lots
  without a gain (reason ``swap-back``).

Buys never spend more than the sale raised. The same input gives the same output.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from ballast_engine.account_drift import measure_drift
from ballast_engine.amounts import (
    cents,
    decimal_of,
    floor_decimal,
    number_text,
    share_unit,
    shares_text,
    usd,
)
from ballast_engine.errors import EngineError, EngineInputError, SettingError
from ballast_engine.model import (
    Account,
    AccountDrift,
    AccountFailure,
    Book,
    BookResult,
    DriftLevel,
    HarvestSettings,
    Holding,
    LotSale,
    Notice,
    Reason,
    RebalanceInput,
    RebalanceResult,
    Reference,
    Request,
    RequestKind,
    Side,
    Sleeve,
    SleeveResult,
    Summary,
    TaxReport,
    Trade,
)
from ballast_engine.restrictions import binding
from ballast_engine.tax.choice import estimate_tax
from ballast_engine.tax.harvest import HarvestPolicy, HarvestProposal, propose_harvests
from ballast_engine.tax.model import WASH_WINDOW_DAYS, ZERO, Lot, Term, money, shift
from ballast_engine.taxaware import (
    Position,
    TaxContext,
    lot_sales,
    lots_sentence,
    name_lots,
    tax_context,
)
from ballast_engine.validate import check_account


def _with_date(account: Account, on: date | str | None) -> Account:
    if on is None or account.tax is None:
        return account
    day = on if isinstance(on, str) else on.isoformat()
    return replace(account, tax=replace(account.tax, as_of=day))


def harvest(inp: RebalanceInput, *, on: date | str | None = None) -> RebalanceResult:
    """Harvest one account's losses (see the module docstring).

    Args:
        inp: the account (with ``tax`` settings and lots) and the reference data; the
            request is ignored (a harvest takes no amount).
        on: the trade date; overrides ``account.tax.as_of`` when given.

    Returns:
        a ``RebalanceResult`` like a rebalance's: harvest (and swap-back) trades with lots,
        estimated tax and sentences, projected holdings, drift before and after, notices,
        and the ``tax`` report (``tax_saved``).

    Raises:
        EngineInputError: invalid input, naming account, sleeve, security and field.
    """
    account = _with_date(inp.account, on)
    check_account(inp.reference, account)
    try:
        return harvest_account(account, inp.reference, Request(RequestKind.HARVEST))
    except EngineInputError as exc:
        raise exc.located(account=account.account_id) from None


def harvest_book(book: Book, *, on: date | str | None = None) -> BookResult:
    """``harvest`` every account of a book; a bad account is reported and skipped."""
    results: list[RebalanceResult] = []
    failures: list[AccountFailure] = []
    for acct in book.accounts:
        try:
            results.append(harvest(RebalanceInput(acct, book.reference), on=on))
        except EngineInputError as exc:
            failures.append(
                AccountFailure(acct.account_id, exc.one_line(), exc.code, exc.to_dict())
            )
        except EngineError as exc:  # pragma: no cover - defensive
            failures.append(AccountFailure(acct.account_id, str(exc), "engine_error", {}))
    return BookResult(tuple(results), tuple(failures))


def policy_of(h: HarvestSettings) -> HarvestPolicy:
    """The tax engine's harvest policy for an account's harvest settings."""
    return HarvestPolicy(
        min_loss_percent=decimal_of(h.min_loss_percent),
        min_loss_dollars=decimal_of(h.min_loss_dollars),
        schedule=tuple((int(m), decimal_of(p), decimal_of(d)) for m, p, d in h.schedule),
        swap_back=h.swap_back,
    )


class _SleeveRestrictions:
    """Do-not-buy / do-not-sell status of symbols in one sleeve (account + sleeve rules,
    the wash-sale buy blocks left out: the harvest handles those itself)."""

    def __init__(self, account: Account, sleeve: Sleeve, ref: Reference):
        self._rs = account.restrictions + sleeve.restrictions
        self._ref = ref
        self._cache: dict[str, tuple[bool, bool]] = {}

    def _status(self, symbol: str) -> tuple[bool, bool]:
        b = binding(symbol, self._rs, self._ref)
        status = self._cache[symbol] = (b.blocks_buying, b.blocks_selling)
        return status

    def may_not_buy(self, symbol: str) -> bool:
        return (self._cache.get(symbol) or self._status(symbol))[0]

    def may_not_sell(self, symbol: str) -> bool:
        return (self._cache.get(symbol) or self._status(symbol))[1]


@dataclass(slots=True)
class _HarvestRun:
    """One account's harvest as it goes, sleeve by sleeve."""

    ctx: TaxContext
    ref: Reference
    account: Account
    policy: HarvestPolicy
    sold_keys: set[str] = field(default_factory=set)  # harvested at a loss, any sleeve
    bought_keys: set[str] = field(default_factory=set)  # bought in this run, any sleeve
    trades: dict[str, list[Trade]] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)


def harvest_account(account: Account, ref: Reference, req: Request) -> RebalanceResult:
    """Harvest one validated account (what ``rebalance`` runs for a harvest request)."""
    aid = account.account_id
    if req.amount:
        raise SettingError("a harvest request takes no amount", account=aid, field="amount")
    if account.tax is None:
        nothing = Notice("not_tax_aware", "the account has no tax settings: nothing to harvest")
        return _assemble(account, ref, req, {}, [nothing], None)
    ctx = tax_context(account, ref)
    if not ctx.taxable:
        nothing = Notice("not_taxable", "an IRA realizes no gains or losses: nothing to harvest")
        return _assemble(account, ref, req, {}, [nothing], ctx)
    settings = ctx.settings.harvest or HarvestSettings()
    run = _HarvestRun(ctx, ref, account, policy_of(settings))
    for sl in account.sleeves:
        _harvest_sleeve(run, sl, settings.swap_back)
    return _assemble(account, ref, req, run.trades, run.notices, ctx)


def _harvest_sleeve(run: _HarvestRun, sl: Sleeve, swap_back: bool) -> None:
    """Harvest one sleeve's losses (and swap replacements back): its trades and notices
    added to the run."""
    ctx, ident, sid = run.ctx, run.ctx.identity, sl.sleeve_id
    restr = _SleeveRestrictions(run.account, sl, run.ref)
    held = {h.symbol: h.quantity for h in sl.holdings}
    lots = [lot for key, pos in sorted(ctx.positions.items()) if key[0] == sid for lot in pos.lots]
    replacements = _replacements(ctx, run.ref, sl, restr, lots)
    sell_blocked = set(ctx.washable)
    for lot in lots:
        if restr.may_not_sell(lot.symbol) or ident.key(lot.symbol) in run.bought_keys:
            sell_blocked.add(lot.lot_id)
    buy_blocked = set(ctx.buy_blocked)
    buy_blocked.update(s for s in ctx.prices if ident.key(s) in run.sold_keys)
    plan = propose_harvests(
        run.account.account_id,
        lots,
        ctx.prices,
        ctx.on,
        run.policy,
        ctx.rates,
        replacements=replacements,
        identity=ident,
        buy_blocked=buy_blocked,
        sell_blocked=sell_blocked,
    )
    out = run.trades.setdefault(sid, [])
    for symbol, why in plan.skipped:
        run.notices.append(
            Notice("harvest_skipped", f"{symbol} is not harvested: {why}", sid, symbol)
        )
    pct, dollars = run.policy.thresholds(ctx.on)
    for p in plan.proposals:
        pair = _harvest_trades(run, sl, held, p, pct, dollars)
        if pair is None:
            continue
        out.extend(pair)
        run.sold_keys.add(ident.key(p.sell_symbol))
        run.bought_keys.add(ident.key(p.buy_symbol))
    if swap_back:
        out.extend(_swap_backs(run, sl, restr, held, out))


def _replacements(
    ctx: TaxContext, ref: Reference, sl: Sleeve, restr: _SleeveRestrictions, lots: list[Lot]
) -> dict[str, list[str]]:
    """Per held symbol, the replacements a harvest may buy, best first: the model's, then
    its equivalence set's, leaving out what is unpriced, substantially identical or
    restricted."""
    model = ref.models[sl.model_id]
    replacements: dict[str, list[str]] = {}
    for sym in sorted({lot.symbol for lot in lots}):
        named = [e.replacement for e in model.entries if e.symbol == sym and e.replacement]
        for eq in ref.equivalence_sets:
            if sym in eq.members:
                named.extend(m for m in eq.members if m != sym)
        ok: list[str] = []
        for r in named:
            if r in ok or r not in ctx.prices or ctx.identity.identical(r, sym):
                continue
            if restr.may_not_buy(r):
                continue
            ok.append(r)
        replacements[sym] = ok
    return replacements


# --------------------------------------------------------------------------------------------
# A harvest: the sale at a loss and the replacement bought with its proceeds


def _harvest_trades(
    run: _HarvestRun,
    sl: Sleeve,
    held: dict[str, float],
    p: HarvestProposal,
    pct: Decimal,
    dollars: Decimal,
) -> tuple[Trade, Trade] | None:
    """The sale and the replacement buy of one proposal, or ``None`` (with a notice) when
    the sleeve's share increment or minimums rule it out; ``held`` follows the trades."""
    ctx, st, sid = run.ctx, sl.settings, sl.sleeve_id
    sym, repl = p.sell_symbol, p.buy_symbol
    qty, closes = _harvest_quantity(run, sl, held, p)
    if qty <= 0:
        run.notices.append(
            Notice("harvest_skipped", f"{sym} is not harvested: less than one share", sid, sym)
        )
        return None
    by_id = {lot.lot_id: lot for lot in ctx.positions[(sid, sym)].lots}
    sales = lot_sales(ctx, name_lots([(by_id[lid], q) for lid, q in p.lots], qty), ctx.prices[sym])
    proceeds = sum((s.proceeds for s in sales), ZERO)
    rprice = ctx.prices[repl]
    runit = decimal_of(
        share_unit(st.fractional, run.ref.securities[repl].fractional, st.share_decimals)
    )
    bqty = floor_decimal(proceeds / rprice, runit)
    bval = money(bqty * rprice)
    opens = held.get(repl, 0.0) <= 0
    floor_val = max(st.min_trade_value, st.min_opening_trade_value if opens else 0.0, 0.01)
    if bqty <= 0 or float(bval) < floor_val - 1e-9 or bqty < decimal_of(st.min_trade_shares):
        run.notices.append(
            Notice(
                "harvest_skipped",
                f"{sym} is not harvested: the proceeds ({usd(proceeds)}) buy too little of "
                f"{repl} to meet the sleeve's minimum trade",
                sid,
                sym,
            )
        )
        return None
    if not closes and (
        float(proceeds) < st.min_trade_value - 1e-9 or qty < decimal_of(st.min_trade_shares)
    ):
        run.notices.append(
            Notice("harvest_skipped", f"{sym}: the sale is below the minimum trade", sid, sym)
        )
        return None
    sell = _harvest_sell(run, sid, p, qty, closes, sales, proceeds, (pct, dollars))
    buy = Trade(
        run.account.account_id,
        sid,
        repl,
        Side.BUY,
        bqty,
        float(rprice),
        bval,
        Reason.TAX_LOSS_HARVEST,
        f"Buy {shares_text(bqty)} of {repl} (about {usd(bval)}) with the proceeds of the "
        f"tax-loss harvest of {sym}: it keeps the exposure without a wash sale, as it is not "
        f"substantially identical to {sym}.",
        opens,
        False,
    )
    held[sym] = max(held.get(sym, 0.0) - float(qty), 0.0)
    held[repl] = held.get(repl, 0.0) + float(bqty)
    return sell, buy


def _harvest_quantity(
    run: _HarvestRun, sl: Sleeve, held: dict[str, float], p: HarvestProposal
) -> tuple[Decimal, bool]:
    """Shares of the proposal the sleeve sells (whole increments unless the sale closes the
    position) and whether it closes it."""
    st = sl.settings
    sec = run.ref.securities[p.sell_symbol]
    unit = decimal_of(share_unit(st.fractional, sec.fractional, st.share_decimals))
    have = decimal_of(held.get(p.sell_symbol, 0.0))
    qty = p.quantity
    closes = qty >= have - Decimal("0.000001")
    if not closes:
        qty = floor_decimal(qty, unit)
    return qty, closes


def _harvest_sell(
    run: _HarvestRun,
    sid: str,
    p: HarvestProposal,
    qty: Decimal,
    closes: bool,
    sales: list[LotSale],
    proceeds: Decimal,
    thresholds: tuple[Decimal, Decimal],
) -> Trade:
    """The harvest's sale, with its lots, the tax it saves and why (``thresholds``: the
    loss percent and dollars it passed)."""
    ctx = run.ctx
    sym, repl = p.sell_symbol, p.buy_symbol
    pct, dollars = thresholds
    loss = -sum((s.gain for s in sales), ZERO)
    tax = sum((s.tax for s in sales), money(ZERO))
    swap = p.swap_back_on or shift(ctx.on, WASH_WINDOW_DAYS + 1)
    basis = sum((s.cost_basis for s in sales), ZERO)
    loss_pct = money(loss * 100 / basis) if basis > 0 else ZERO
    text = (
        f"Sell {shares_text(qty)} of {sym} (about {usd(proceeds)}) to harvest a loss of "
        f"{usd(loss)} ({number_text(loss_pct)}% of its basis, past the {number_text(pct)}% and "
        f"{usd(dollars)} thresholds): an estimated {usd(-tax)} of tax saved; {repl}, "
        "similar but not substantially identical, is bought with the proceeds to keep the "
        "exposure"
        + f", and {sym} may be bought back on or after {swap.isoformat()}."
        + lots_sentence(sales)
    )
    return Trade(
        run.account.account_id,
        sid,
        sym,
        Side.SELL,
        qty,
        float(ctx.prices[sym]),
        proceeds,
        Reason.TAX_LOSS_HARVEST,
        text,
        False,
        closes,
        tuple(sales),
        tax,
    )


# --------------------------------------------------------------------------------------------
# Swap-backs: a replacement back to the model's security after the wash-sale window


def _swap_backs(
    run: _HarvestRun,
    sl: Sleeve,
    restr: _SleeveRestrictions,
    held: dict[str, float],
    done: list[Trade],
) -> list[Trade]:
    """Replacements back to the model security once nothing blocks buying it."""
    ctx, ref, sid = run.ctx, run.ref, sl.sleeve_id
    ident = ctx.identity
    model = ref.models[sl.model_id]
    in_model = {e.symbol for e in model.entries}
    traded = {t.symbol for t in done}
    blocked = {ident.key(s) for s in ctx.buy_blocked}
    out: list[Trade] = []
    for e in model.entries:
        target = e.symbol
        if e.hold or target not in ctx.prices or restr.may_not_buy(target):
            continue
        tkey = ident.key(target)
        if tkey in blocked or tkey in run.sold_keys:
            continue
        for eq in ref.equivalence_sets:
            if target not in eq.members:
                continue
            for r in eq.members:
                key = (sid, r)
                if r == target or r in in_model or r in traded or key not in ctx.positions:
                    continue
                if restr.may_not_sell(r) or ident.key(r) in run.bought_keys:
                    continue
                if ident.key(r) == tkey:  # substantially identical: a sale at a loss would wash
                    continue
                pair = _swap_back_pair(run, sl, ctx.positions[key], target, held)
                if pair is None:
                    continue
                sell, buy = pair
                out.extend(pair)
                held[r] = max(held.get(r, 0.0) - float(sell.quantity), 0.0)
                held[target] = held.get(target, 0.0) + float(buy.quantity)
                traded.update((r, target))
                run.bought_keys.add(tkey)
                if sum((s.gain for s in sell.lots), ZERO) < 0:
                    run.sold_keys.add(ident.key(r))
    return out


def _swap_back_pair(
    run: _HarvestRun, sl: Sleeve, pos: Position, target: str, held: dict[str, float]
) -> tuple[Trade, Trade] | None:
    """Sell the replacement's lots that carry no gain (and no washable loss), buy the model
    security with the proceeds; ``None`` when there is nothing to swap."""
    ctx, st, sid, r = run.ctx, sl.settings, sl.sleeve_id, pos.key[1]
    lots = [
        lot
        for lot in pos.ranked
        if lot.basis_per_share >= pos.price and lot.lot_id not in ctx.washable
    ]
    if not lots:
        return None
    qty = sum((lot.quantity for lot in lots), ZERO)
    closes = float(qty) >= pos.qty - 1e-9
    if not closes:
        qty = floor_decimal(qty, decimal_of(pos.unit))
    if qty <= 0:
        return None
    sales = lot_sales(ctx, name_lots([(lot, lot.quantity) for lot in lots], qty), pos.price)
    proceeds = sum((s.proceeds for s in sales), ZERO)
    tprice = ctx.prices[target]
    tsec = run.ref.securities[target]
    bqty = floor_decimal(
        proceeds / tprice,
        decimal_of(share_unit(st.fractional, tsec.fractional, st.share_decimals)),
    )
    if bqty <= 0:
        return None
    bval = money(bqty * tprice)
    sell = Trade(
        ctx.account.account_id,
        sid,
        r,
        Side.SELL,
        qty,
        float(pos.price),
        proceeds,
        Reason.SWAP_BACK,
        f"Sell {shares_text(qty)} of {r} (about {usd(proceeds)}), a replacement held "
        f"for {target}: nothing blocks buying {target} any more (no recent "
        "loss sale in the household), and these lots are sold without a gain."
        + lots_sentence(sales),
        False,
        closes,
        tuple(sales),
        sum((s.tax for s in sales), money(ZERO)),
    )
    buy = Trade(
        ctx.account.account_id,
        sid,
        target,
        Side.BUY,
        bqty,
        float(tprice),
        bval,
        Reason.SWAP_BACK,
        f"Buy {shares_text(bqty)} of {target} (about {usd(bval)}) with the proceeds "
        f"of {r}: back to the model's security after the wash-sale window.",
        held.get(target, 0.0) <= 0,
        False,
    )
    return sell, buy


# --------------------------------------------------------------------------------------------
# The result


def _assemble(
    account: Account,
    ref: Reference,
    req: Request,
    trades: dict[str, list[Trade]],
    notices: list[Notice],
    ctx: TaxContext | None,
) -> RebalanceResult:
    """The harvest's result: sleeves after the trades, drift before and after (as measured,
    tax set aside), the summary and the tax report."""
    sleeves: list[SleeveResult] = []
    projected: list[Sleeve] = []
    all_trades: list[Trade] = []
    for sl in account.sleeves:
        ts = trades.get(sl.sleeve_id, [])
        result, after = _sleeve_after(sl, ts, ref)
        sleeves.append(result)
        projected.append(after)
        all_trades.extend(ts)
    plain = replace(account, tax=None)
    before = measure_drift(plain, ref)
    after_drift = measure_drift(replace(plain, sleeves=tuple(projected)), ref)
    report = None
    if ctx is not None:
        notices = [
            Notice("wash_sale_buy_block", b.reason, None, "/".join(b.symbols))
            for b in reversed(ctx.blocks)
        ] + notices
        report = _harvest_report(ctx, all_trades, notices)
    return RebalanceResult(
        account_id=account.account_id,
        request=req,
        trades=tuple(all_trades),
        sleeves=tuple(sleeves),
        cash_movements=(),
        unallocated_cash_after=cents(account.cash),
        drift_before=before,
        drift_after=after_drift,
        notices=tuple(notices),
        summary=_harvest_summary(account, all_trades, sleeves, before, after_drift),
        tax=report,
    )


def _sleeve_after(sl: Sleeve, ts: list[Trade], ref: Reference) -> tuple[SleeveResult, Sleeve]:
    """A sleeve's result after its trades, and the sleeve as it would then be."""
    secs = ref.securities
    qty = {h.symbol: h.quantity for h in sl.holdings}
    cash = sl.cash
    for t in ts:
        q = float(t.quantity)
        if t.side is Side.BUY:
            qty[t.symbol] = qty.get(t.symbol, 0.0) + q
            cash -= float(t.estimated_value)
        else:
            qty[t.symbol] = qty.get(t.symbol, 0.0) - q
            cash += float(t.estimated_value)
    post = {s: q for s, q in qty.items() if q > 1e-12}
    value_before = sl.cash + sum(h.quantity * secs[h.symbol].price for h in sl.holdings)
    value_after = cash + sum(q * secs[s].price for s, q in post.items())
    tot = value_after if value_after > 0 else 1.0
    weights = {s: q * secs[s].price / tot for s, q in post.items()}
    weights["CASH"] = cash / tot
    result = SleeveResult(
        sleeve_id=sl.sleeve_id,
        model_id=sl.model_id,
        trades=tuple(ts),
        cash_before=cents(sl.cash),
        cash_in=cents(0.0),
        cash_out=cents(0.0),
        cash_after=cents(cash),
        value_before=cents(value_before),
        value_after=cents(value_after),
        projected_holdings=post,
        projected_weights=weights,
    )
    after = replace(sl, holdings=tuple(Holding(s, q) for s, q in post.items()), cash=cash)
    return result, after


def _harvest_summary(
    account: Account,
    trades: list[Trade],
    sleeves: list[SleeveResult],
    before: AccountDrift,
    after: AccountDrift,
) -> Summary:
    """Counts and values of the harvest's trades, turnover, cash and drift."""
    buy_v = sum(float(t.estimated_value) for t in trades if t.side is Side.BUY)
    sell_v = sum(float(t.estimated_value) for t in trades if t.side is Side.SELL)
    acct_value = sum(float(s.value_before) for s in sleeves) + account.cash
    return Summary(
        trade_count=len(trades),
        buy_count=sum(1 for t in trades if t.side is Side.BUY),
        sell_count=sum(1 for t in trades if t.side is Side.SELL),
        buy_value=cents(buy_v),
        sell_value=cents(sell_v),
        turnover=(buy_v + sell_v) / 2 / acct_value if acct_value > 0 else 0.0,
        account_value=cents(acct_value),
        cash_before=cents(sum(sl.cash for sl in account.sleeves) + account.cash),
        cash_after=cents(sum(float(s.cash_after) for s in sleeves) + account.cash),
        max_drift_before=before.max_abs_drift(),
        max_drift_after=after.max_abs_drift(),
        max_security_drift_before=before.max_abs_drift(DriftLevel.SECURITY),
        max_security_drift_after=after.max_abs_drift(DriftLevel.SECURITY),
    )


def _harvest_report(ctx: TaxContext, trades: list[Trade], notices: list[Notice]) -> TaxReport:
    """The harvest's tax report: gains by term, the estimated tax and the tax saved."""
    st_gain = lt_gain = money(ZERO)
    saved = money(ZERO)
    for s in (s for t in trades for s in t.lots):
        if s.term == Term.SHORT.value:
            st_gain += s.gain
        else:
            lt_gain += s.gain
    for t in trades:
        if t.reason is Reason.TAX_LOSS_HARVEST and t.estimated_tax is not None:
            saved -= t.estimated_tax
    return TaxReport(
        as_of=ctx.on.isoformat(),
        account_type=ctx.settings.account_type,
        short_term_gain=st_gain,
        long_term_gain=lt_gain,
        estimated_tax=estimate_tax(st_gain, lt_gain, ctx.rates),
        budget_limit=None,
        budget_remaining_before=None,
        budget_remaining_after=None,
        budget_hard=None,
        buy_blocked=tuple(sorted(ctx.buy_blocked)),
        sell_blocked_lots=tuple(sorted(ctx.washable)),
        warnings=tuple(n.message for n in notices if n.code != "wash_sale_buy_block"),
        tax_saved=saved,
    )


__all__ = ["harvest", "harvest_account", "harvest_book", "policy_of"]
