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
  in the model) goes back to the model security once nothing blocks buying it (the wash-sale
  window of the harvest is over), selling only lots without a gain (reason ``swap-back``).

Buys never spend more than the sale raised. The same input gives the same output.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from ballast_engine.errors import EngineError, EngineInputError, SettingError
from ballast_engine.model import (
    Account,
    AccountFailure,
    Book,
    BookResult,
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
from ballast_engine.tax.choice import estimate_tax
from ballast_engine.tax.harvest import HarvestPolicy, HarvestProposal, propose_harvests
from ballast_engine.tax.model import WASH_WINDOW_DAYS, ZERO, Term, money, shift
from ballast_engine.taxaware import (
    TaxContext,
    _dec,
    _num,
    _qty,
    _unit,
    _usd,
    lot_sales,
    lots_sentence,
    name_lots,
    tax_context,
)

CENT = Decimal("0.01")


def _cents(x: float) -> Decimal:
    return Decimal(repr(round(float(x), 2) + 0.0)).quantize(CENT)


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
    from ballast_engine.validate import check_account

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
    return HarvestPolicy(
        min_loss_percent=_dec(h.min_loss_percent),
        min_loss_dollars=_dec(h.min_loss_dollars),
        schedule=tuple((int(m), _dec(p), _dec(d)) for m, p, d in h.schedule),
        swap_back=h.swap_back,
    )


class _Restr:
    """Do-not-buy / do-not-sell status of symbols in one sleeve (account + sleeve rules,
    the wash-sale buy blocks left out: the harvest handles those itself)."""

    def __init__(self, account: Account, sleeve: Sleeve, ref: Reference):
        from ballast_engine.tactical import Member, _apply_restrictions

        self._rs = account.restrictions + sleeve.restrictions
        self._ref = ref
        self._member = Member
        self._apply = _apply_restrictions
        self._cache: dict[str, tuple[bool, bool]] = {}

    def status(self, symbol: str) -> tuple[bool, bool]:
        """(may not buy, may not sell)."""
        if symbol not in self._cache:
            m = self._member(symbol, 0.0, 0.0, 1.0, False)
            if self._rs:
                self._apply(m, self._rs, self._ref)
            self._cache[symbol] = (m.dnb is not None or m.dnh is not None, m.dns is not None)
        return self._cache[symbol]


def harvest_account(account: Account, ref: Reference, req: Request) -> RebalanceResult:
    """Harvest one validated account (what ``rebalance`` runs for a harvest request)."""
    aid = account.account_id
    if req.amount:
        raise SettingError("a harvest request takes no amount", account=aid, field="amount")
    if account.tax is None:
        return _assemble(
            account,
            ref,
            req,
            {},
            [Notice("not_tax_aware", "the account has no tax settings: nothing to harvest")],
            None,
        )
    ctx = tax_context(account, ref)
    if not ctx.taxable:
        return _assemble(
            account,
            ref,
            req,
            {},
            [Notice("not_taxable", "an IRA realizes no gains or losses: nothing to harvest")],
            ctx,
        )
    settings = ctx.settings.harvest or HarvestSettings()
    policy = policy_of(settings)
    ident = ctx.identity
    sold_keys: set[str] = set()  # harvested (sold at a loss) in this run, any sleeve
    bought_keys: set[str] = set()  # bought in this run, any sleeve
    trades: dict[str, list[Trade]] = {}
    notices: list[Notice] = []
    for sl in account.sleeves:
        sid = sl.sleeve_id
        restr = _Restr(account, sl, ref)
        model = ref.models[sl.model_id]
        held = {h.symbol: h.quantity for h in sl.holdings}
        lots = [
            lot for key, pos in sorted(ctx.positions.items()) if key[0] == sid for lot in pos.lots
        ]
        replacements: dict[str, list[str]] = {}
        for sym in sorted({lot.symbol for lot in lots}):
            named = [e.replacement for e in model.entries if e.symbol == sym and e.replacement]
            for eq in ref.equivalence_sets:
                if sym in eq.members:
                    named.extend(m for m in eq.members if m != sym)
            ok: list[str] = []
            for r in named:
                if r in ok or r not in ctx.prices or ident.identical(r, sym):
                    continue
                if restr.status(r)[0]:
                    continue
                ok.append(r)
            replacements[sym] = ok
        sell_blocked = set(ctx.washable)
        for lot in lots:
            if restr.status(lot.symbol)[1] or ident.key(lot.symbol) in bought_keys:
                sell_blocked.add(lot.lot_id)
        buy_blocked = set(ctx.buy_blocked)
        buy_blocked.update(s for s in ctx.prices if ident.key(s) in sold_keys)
        plan = propose_harvests(
            aid,
            lots,
            ctx.prices,
            ctx.on,
            policy,
            ctx.rates,
            replacements=replacements,
            identity=ident,
            buy_blocked=buy_blocked,
            sell_blocked=sell_blocked,
        )
        out = trades.setdefault(sid, [])
        cash = sl.cash
        for symbol, why in plan.skipped:
            notices.append(
                Notice("harvest_skipped", f"{symbol} is not harvested: {why}", sid, symbol)
            )
        pct, dollars = policy.thresholds(ctx.on)
        for p in plan.proposals:
            pair = _harvest_trades(ctx, ref, account, sl, held, p, pct, dollars, notices)
            if pair is None:
                continue
            out.extend(pair)
            cash += float(pair[0].estimated_value) - float(pair[1].estimated_value)
            sold_keys.add(ident.key(p.sell_symbol))
            bought_keys.add(ident.key(p.buy_symbol))
        if settings.swap_back:
            out.extend(_swap_backs(ctx, ref, sl, restr, held, out, sold_keys, bought_keys))
    return _assemble(account, ref, req, trades, notices, ctx)


def _floor(x: Decimal, unit: Decimal) -> Decimal:
    return (x / unit).to_integral_value(rounding="ROUND_FLOOR") * unit


def _harvest_trades(
    ctx: TaxContext,
    ref: Reference,
    account: Account,
    sl: Sleeve,
    held: dict[str, float],
    p: HarvestProposal,
    pct: Decimal,
    dollars: Decimal,
    notices: list[Notice],
) -> tuple[Trade, Trade] | None:
    st = sl.settings
    sid = sl.sleeve_id
    sym, repl = p.sell_symbol, p.buy_symbol
    sec, rsec = ref.securities[sym], ref.securities[repl]
    price = ctx.prices[sym]
    unit = _dec(_unit(st.fractional, sec.fractional, st.share_decimals))
    have = _dec(held.get(sym, 0.0))
    qty = p.quantity
    closes = qty >= have - Decimal("0.000001")
    if not closes:
        qty = _floor(qty, unit)
    if qty <= 0:
        notices.append(
            Notice("harvest_skipped", f"{sym} is not harvested: less than one share", sid, sym)
        )
        return None
    by_id = {lot.lot_id: lot for lot in ctx.positions[(sid, sym)].lots}
    picks = name_lots([(by_id[lid], q) for lid, q in p.lots], qty)
    sales = lot_sales(ctx, picks, price)
    proceeds = sum((s.proceeds for s in sales), ZERO)
    loss = -sum((s.gain for s in sales), ZERO)
    tax = sum((s.tax for s in sales), money(ZERO))
    rprice = ctx.prices[repl]
    runit = _dec(_unit(st.fractional, rsec.fractional, st.share_decimals))
    bqty = _floor(proceeds / rprice, runit)
    bval = money(bqty * rprice)
    opens = held.get(repl, 0.0) <= 0
    floor_val = max(st.min_trade_value, st.min_opening_trade_value if opens else 0.0, 0.01)
    if bqty <= 0 or float(bval) < floor_val - 1e-9 or bqty < _dec(st.min_trade_shares):
        notices.append(
            Notice(
                "harvest_skipped",
                f"{sym} is not harvested: the proceeds ({_usd(proceeds)}) buy too little of "
                f"{repl} to meet the sleeve's minimum trade",
                sid,
                sym,
            )
        )
        return None
    if not closes and (
        float(proceeds) < st.min_trade_value - 1e-9 or qty < _dec(st.min_trade_shares)
    ):
        notices.append(
            Notice("harvest_skipped", f"{sym}: the sale is below the minimum trade", sid, sym)
        )
        return None
    swap = p.swap_back_on or shift(ctx.on, WASH_WINDOW_DAYS + 1)
    basis = sum((s.cost_basis for s in sales), ZERO)
    loss_pct = money(loss * 100 / basis) if basis > 0 else ZERO
    sell_text = (
        f"Sell {_qty(qty)} of {sym} (about {_usd(proceeds)}) to harvest a loss of "
        f"{_usd(loss)} ({_num(loss_pct)}% of its basis, past the {_num(pct)}% and "
        f"{_usd(dollars)} thresholds): an estimated {_usd(-tax)} of tax saved; {repl}, "
        "similar but not substantially identical, is bought with the proceeds to keep the "
        "exposure"
        + f", and {sym} may be bought back on or after {swap.isoformat()}."
        + lots_sentence(sales)
    )
    buy_text = (
        f"Buy {_qty(bqty)} of {repl} (about {_usd(bval)}) with the proceeds of the tax-loss "
        f"harvest of {sym}: it keeps the exposure without a wash sale, as it is not "
        f"substantially identical to {sym}."
    )
    sell = Trade(
        account.account_id,
        sid,
        sym,
        Side.SELL,
        qty,
        float(price),
        proceeds,
        Reason.TAX_LOSS_HARVEST,
        sell_text,
        False,
        closes,
        tuple(sales),
        tax,
    )
    buy = Trade(
        account.account_id,
        sid,
        repl,
        Side.BUY,
        bqty,
        float(rprice),
        bval,
        Reason.TAX_LOSS_HARVEST,
        buy_text,
        opens,
        False,
    )
    held[sym] = max(held.get(sym, 0.0) - float(qty), 0.0)
    held[repl] = held.get(repl, 0.0) + float(bqty)
    return sell, buy


def _swap_backs(
    ctx: TaxContext,
    ref: Reference,
    sl: Sleeve,
    restr: _Restr,
    held: dict[str, float],
    done: list[Trade],
    sold_keys: set[str],
    bought_keys: set[str],
) -> list[Trade]:
    """Replacements back to the model security once nothing blocks buying it."""
    ident = ctx.identity
    st = sl.settings
    sid = sl.sleeve_id
    model = ref.models[sl.model_id]
    in_model = {e.symbol for e in model.entries}
    traded = {t.symbol for t in done}
    blocked = {ident.key(s) for s in ctx.buy_blocked}
    out: list[Trade] = []
    for e in model.entries:
        target = e.symbol
        if e.hold or target not in ctx.prices or restr.status(target)[0]:
            continue
        tkey = ident.key(target)
        if tkey in blocked or tkey in sold_keys:
            continue
        for eq in ref.equivalence_sets:
            if target not in eq.members:
                continue
            for r in eq.members:
                key = (sid, r)
                if r == target or r in in_model or r in traded or key not in ctx.positions:
                    continue
                if restr.status(r)[1] or ident.key(r) in bought_keys:
                    continue
                pos = ctx.positions[key]
                lots = [
                    lot
                    for lot in pos.ranked
                    if lot.basis_per_share >= pos.price and lot.lot_id not in ctx.washable
                ]
                if not lots:
                    continue
                qty = sum((lot.quantity for lot in lots), ZERO)
                closes = float(qty) >= pos.qty - 1e-9
                if not closes:
                    qty = _floor(qty, _dec(pos.unit))
                if qty <= 0:
                    continue
                picks = name_lots([(lot, lot.quantity) for lot in lots], qty)
                sales = lot_sales(ctx, picks, pos.price)
                proceeds = sum((s.proceeds for s in sales), ZERO)
                tsec = ref.securities[target]
                tprice = ctx.prices[target]
                tunit = _dec(_unit(st.fractional, tsec.fractional, st.share_decimals))
                bqty = _floor(proceeds / tprice, tunit)
                if bqty <= 0:
                    continue
                bval = money(bqty * tprice)
                tax = sum((s.tax for s in sales), money(ZERO))
                out.append(
                    Trade(
                        ctx.account.account_id,
                        sid,
                        r,
                        Side.SELL,
                        qty,
                        float(pos.price),
                        proceeds,
                        Reason.SWAP_BACK,
                        f"Sell {_qty(qty)} of {r} (about {_usd(proceeds)}), a replacement held "
                        f"for {target}: nothing blocks buying {target} any more (no recent "
                        "loss sale in the household), and these lots are sold without a gain."
                        + lots_sentence(sales),
                        False,
                        closes,
                        tuple(sales),
                        tax,
                    )
                )
                out.append(
                    Trade(
                        ctx.account.account_id,
                        sid,
                        target,
                        Side.BUY,
                        bqty,
                        float(tprice),
                        bval,
                        Reason.SWAP_BACK,
                        f"Buy {_qty(bqty)} of {target} (about {_usd(bval)}) with the proceeds "
                        f"of {r}: back to the model's security after the wash-sale window.",
                        held.get(target, 0.0) <= 0,
                        False,
                    )
                )
                held[r] = max(held.get(r, 0.0) - float(qty), 0.0)
                held[target] = held.get(target, 0.0) + float(bqty)
                traded.update((r, target))
                bought_keys.add(tkey)
                if sum((s.gain for s in sales), ZERO) < 0:
                    sold_keys.add(ident.key(r))
    return out


def _assemble(
    account: Account,
    ref: Reference,
    req: Request,
    trades: dict[str, list[Trade]],
    notices: list[Notice],
    ctx: TaxContext | None,
) -> RebalanceResult:
    from ballast_engine.rebalance import measure_drift

    secs = ref.securities
    sleeves: list[SleeveResult] = []
    projected: list[Sleeve] = []
    all_trades: list[Trade] = []
    for sl in account.sleeves:
        ts = trades.get(sl.sleeve_id, [])
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
        sleeves.append(
            SleeveResult(
                sleeve_id=sl.sleeve_id,
                model_id=sl.model_id,
                trades=tuple(ts),
                cash_before=_cents(sl.cash),
                cash_in=_cents(0.0),
                cash_out=_cents(0.0),
                cash_after=_cents(cash),
                value_before=_cents(value_before),
                value_after=_cents(value_after),
                projected_holdings=post,
                projected_weights=weights,
            )
        )
        projected.append(
            replace(sl, holdings=tuple(Holding(s, q) for s, q in post.items()), cash=cash)
        )
        all_trades.extend(ts)
    plain = replace(account, tax=None)
    before = measure_drift(plain, ref)
    after = measure_drift(replace(plain, sleeves=tuple(projected)), ref)
    buy_v = sum(float(t.estimated_value) for t in all_trades if t.side is Side.BUY)
    sell_v = sum(float(t.estimated_value) for t in all_trades if t.side is Side.SELL)
    acct_value = sum(float(s.value_before) for s in sleeves) + account.cash
    summary = Summary(
        trade_count=len(all_trades),
        buy_count=sum(1 for t in all_trades if t.side is Side.BUY),
        sell_count=sum(1 for t in all_trades if t.side is Side.SELL),
        buy_value=_cents(buy_v),
        sell_value=_cents(sell_v),
        turnover=(buy_v + sell_v) / 2 / acct_value if acct_value > 0 else 0.0,
        account_value=_cents(acct_value),
        cash_before=_cents(sum(sl.cash for sl in account.sleeves) + account.cash),
        cash_after=_cents(sum(float(s.cash_after) for s in sleeves) + account.cash),
        max_drift_before=before.max_abs_drift(),
        max_drift_after=after.max_abs_drift(),
    )
    report = None
    if ctx is not None:
        st_gain = lt_gain = money(ZERO)
        saved = money(ZERO)
        sales: list[LotSale] = [s for t in all_trades for s in t.lots]
        for s in sales:
            if s.term == Term.SHORT.value:
                st_gain += s.gain
            else:
                lt_gain += s.gain
        for t in all_trades:
            if t.reason is Reason.TAX_LOSS_HARVEST and t.estimated_tax is not None:
                saved -= t.estimated_tax
        for b in ctx.blocks:
            notices.insert(0, Notice("wash_sale_buy_block", b.reason, None, "/".join(b.symbols)))
        report = TaxReport(
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
    return RebalanceResult(
        account_id=account.account_id,
        request=req,
        trades=tuple(all_trades),
        sleeves=tuple(sleeves),
        cash_movements=(),
        unallocated_cash_after=_cents(account.cash),
        drift_before=before,
        drift_after=after,
        notices=tuple(notices),
        summary=summary,
        tax=report,
    )


__all__ = ["harvest", "harvest_account", "harvest_book", "policy_of"]
