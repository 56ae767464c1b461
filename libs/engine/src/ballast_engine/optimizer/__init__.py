"""The tax-aware direct-index optimizer: one sleeve, one linear program, whole shares.

The entry point (stable; the backtest and rebalance-svc call it)::

    from ballast_engine.optimizer import LotArrays, PlainSettings, SleeveProblem, optimize

    problem = SleeveProblem(
        names=np.array(["AAPL", "MSFT", ...]),      # (N,) symbols
        index_weights=np.array([...]),              # (N,) the index's weights, sum 1
        prices=np.array([...]),                     # (N,) > 0
        sectors=np.array([0, 3, ...]),              # (N,) int codes into sector_names
        sector_names=("Tech", "Energy", ...),
        exposures=np.zeros((N, K)),                 # (N, K) factor exposures (z-scores)
        factor_names=("value", "momentum", ...),
        factor_cov=np.eye(K) * 0.02,                # (K, K) annual factor covariance
        specific_vol=np.full(N, 0.25),              # (N,) annual specific volatility
        lots=LotArrays(
            name=np.array([0, 0, 1, ...]),          # (L,) index into names
            quantity=np.array([...]),               # (L,) shares > 0
            basis=np.array([...]),                  # (L,) total cost basis, dollars
            holding_start=np.array([...], "datetime64[D]"),  # (L,) start of holding period
            lot_ids=("L-1", "L-2", ...),
            sell_blocked=None,                      # (L,) bool: loss would be washed
        ),
        cash=10_000.0,
        on=date(2026, 12, 6),                       # trade date: terms, harvest thresholds
        # optional, with defaults: equivalence (N,) int set id or -1, identical (N,) bool
        # (the set is substantially identical), buy_blocked (N,) bool, excluded (N,) bool,
        # redistribution "pro_rata" | "sector" | "equivalence", short_term_rate 0.37,
        # long_term_rate 0.20, realized_to_date 0.0, cash_reserve 0.0, fractional False,
        # share_decimals 3, min_trade_value 0.0, cost_rate 0.0005 (transaction cost per $),
        # account_id "", sleeve_id "main"
    )
    result = optimize(problem, PlainSettings(tax_sensitivity="high", tracking_tolerance=0.01,
                                             gain_budget=5_000, harvesting=True,
                                             tilts={"value": 0.1}))
    result.trades            # OptimizedTrade: buy per name, sell per lot, reason + sentence
    result.estimated_tax     # Decimal, terms netted (ballast_engine.tax.estimate_tax)
    result.tracking_error_before, result.tracking_error_after   # ex-ante, factor model
    result.turnover, result.relaxations, result.explanation, result.solver  # "glop"|"rules"

``problem_from_lots`` builds a problem from the tax engine's ``Lot`` objects and its wash-sale
windows (``ballast_engine.tax.wash.buy_blocks``/``sell_blocks``), for callers holding a
ledger rather than arrays. The formulation is documented in ``optimizer.formulation``;
the plain-English calibration in ``optimizer.settings`` and docs/optimizer.md.
"""

from ballast_engine.optimizer.problem import (
    LotArrays,
    OptimizerInputError,
    SleeveProblem,
    problem_from_lots,
)
from ballast_engine.optimizer.result import OptimizedSleeve, OptimizedTrade, Relaxation
from ballast_engine.optimizer.settings import CALIBRATION, PlainSettings, SolverSettings
from ballast_engine.optimizer.solve import optimize

__all__ = [
    "CALIBRATION",
    "LotArrays",
    "OptimizedSleeve",
    "OptimizedTrade",
    "OptimizerInputError",
    "PlainSettings",
    "Relaxation",
    "SleeveProblem",
    "SolverSettings",
    "optimize",
    "problem_from_lots",
]
