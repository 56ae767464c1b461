"""The backtest's terminal table."""

from __future__ import annotations

from ballast_engine.backtest.runner import PUBLISHED_TAX_ALPHA, BacktestResult


def table(result: BacktestResult) -> str:
    """One row per strategy: tax alpha (both ways) next to the published figure, tracking
    error, turnover, harvested losses and wash-sale violations."""
    cfg, stats = result.config, result.market_stats
    head = (
        f"Backtest: {result.market.stocks} stocks, {cfg.market.sectors} sectors, "
        f"{result.market.steps} months from {result.market.dates[0]}, seed {cfg.market.seed}; "
        f"${cfg.deposits.initial:,.0f} then ${cfg.deposits.monthly:,.0f}/month; "
        f"rates {cfg.taxes.short_term_rate:.0%} short / {cfg.taxes.long_term_rate:.0%} long, "
        f"{cfg.taxes.credit.value} credit"
    )
    market = (
        f"Market: index vol {stats.index_vol:.1%}/yr, stock vol median "
        f"{stats.stock_vol_median:.1%} (p10 {stats.stock_vol_p10:.1%}, p90 "
        f"{stats.stock_vol_p90:.1%}), correlation within sector "
        f"{stats.correlation_within_sector:.2f} / across {stats.correlation_across_sectors:.2f}, "
        f"dispersion {stats.dispersion:.1%}/month"
    )
    cols = (
        f"{'strategy':<30} {'tax alpha':>10} {'tax alpha':>10} {'published':>10} "
        f"{'tracking':>9} {'active':>8} {'turnover':>9} {'harvested':>10} {'wash-sale':>10}"
    )
    sub = (
        f"{'':<30} {'liquidated':>10} {'kept':>10} {'(CBL)':>10} "
        f"{'error/yr':>9} {'ret./yr':>8} {'/yr':>9} {'% deposits':>10} {'violations':>10}"
    )
    lines = [head, market, "", cols, sub, "-" * len(cols)]
    for r in result.results:
        m = r.metrics
        published = PUBLISHED_TAX_ALPHA.get(r.name)
        lines.append(
            f"{r.label:<30} {_pct(m.tax_alpha_liquidated):>10} "
            f"{_pct(m.tax_alpha_not_liquidated):>10} "
            f"{(f'{published:.2%}' if published is not None else '—'):>10} "
            f"{_pct(m.tracking_error):>9} {_pct(m.active_return):>8} {m.turnover:>9.1%} "
            f"{m.harvested_losses / m.contributions:>10.1%} {r.wash.violations:>10,}"
        )
    for name, reason in result.skipped.items():
        lines.append(f"{name:<30} skipped: {reason}")
    lines.append(
        "tax alpha = after-tax IRR minus the index's (annualized); 'liquidated': every lot sold"
        " and taxed at the end; 'kept': the final value as it stands; active return: the "
        "holdings' pre-tax return over the index's (tracking, inside the tax alpha). Published: "
        "Chaudhuri, Burnham and Lo (FAJ 2020), CRSP 1926-2018."
    )
    return "\n".join(lines)


def _pct(rate: float) -> str:
    """A rate in percent to 2 decimals, without a "-0.00%" for a rounding-size negative."""
    return f"{(0.0 if abs(rate) < 5e-5 else rate):.2%}"
