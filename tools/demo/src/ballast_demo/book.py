"""A realistic demo book: securities, four models, households and accounts, opening holdings.

Deterministic for a given seed. Prices are round figures near late-2025 levels; they are
illustrative, not market data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

# symbol: (name, asset class, sector, price, fractional eligible)
SECURITIES: dict[str, tuple[str, str, str, str]] = {
    "AAPL": ("Apple Inc.", "US Equity", "Information Technology", "229.87"),
    "MSFT": ("Microsoft Corp.", "US Equity", "Information Technology", "418.16"),
    "NVDA": ("NVIDIA Corp.", "US Equity", "Information Technology", "135.58"),
    "AVGO": ("Broadcom Inc.", "US Equity", "Information Technology", "171.23"),
    "ORCL": ("Oracle Corp.", "US Equity", "Information Technology", "166.41"),
    "CRM": ("Salesforce Inc.", "US Equity", "Information Technology", "301.12"),
    "ADBE": ("Adobe Inc.", "US Equity", "Information Technology", "452.90"),
    "CSCO": ("Cisco Systems Inc.", "US Equity", "Information Technology", "57.84"),
    "AMD": ("Advanced Micro Devices", "US Equity", "Information Technology", "141.86"),
    "INTU": ("Intuit Inc.", "US Equity", "Information Technology", "641.35"),
    "UNH": ("UnitedHealth Group", "US Equity", "Health Care", "561.40"),
    "JNJ": ("Johnson & Johnson", "US Equity", "Health Care", "155.22"),
    "LLY": ("Eli Lilly & Co.", "US Equity", "Health Care", "847.60"),
    "ABBV": ("AbbVie Inc.", "US Equity", "Health Care", "184.73"),
    "MRK": ("Merck & Co.", "US Equity", "Health Care", "100.15"),
    "TMO": ("Thermo Fisher Scientific", "US Equity", "Health Care", "559.98"),
    "ABT": ("Abbott Laboratories", "US Equity", "Health Care", "115.37"),
    "PFE": ("Pfizer Inc.", "US Equity", "Health Care", "28.12"),
    "AMGN": ("Amgen Inc.", "US Equity", "Health Care", "301.45"),
    "JPM": ("JPMorgan Chase & Co.", "US Equity", "Financials", "221.49"),
    "BAC": ("Bank of America", "US Equity", "Financials", "42.31"),
    "WFC": ("Wells Fargo & Co.", "US Equity", "Financials", "64.87"),
    "GS": ("Goldman Sachs Group", "US Equity", "Financials", "519.66"),
    "BLK": ("BlackRock Inc.", "US Equity", "Financials", "951.20"),
    "SCHW": ("Charles Schwab Corp.", "US Equity", "Financials", "72.05"),
    "V": ("Visa Inc.", "US Equity", "Financials", "285.33"),
    "MA": ("Mastercard Inc.", "US Equity", "Financials", "501.48"),
    "AMZN": ("Amazon.com Inc.", "US Equity", "Consumer Discretionary", "189.71"),
    "TSLA": ("Tesla Inc.", "US Equity", "Consumer Discretionary", "251.44"),
    "HD": ("Home Depot Inc.", "US Equity", "Consumer Discretionary", "401.16"),
    "MCD": ("McDonald's Corp.", "US Equity", "Consumer Discretionary", "289.52"),
    "NKE": ("Nike Inc.", "US Equity", "Consumer Discretionary", "79.95"),
    "LOW": ("Lowe's Companies", "US Equity", "Consumer Discretionary", "261.08"),
    "TJX": ("TJX Companies", "US Equity", "Consumer Discretionary", "114.62"),
    "GOOGL": ("Alphabet Inc. Class A", "US Equity", "Communication Services", "165.39"),
    "META": ("Meta Platforms Inc.", "US Equity", "Communication Services", "563.27"),
    "NFLX": ("Netflix Inc.", "US Equity", "Communication Services", "701.94"),
    "DIS": ("Walt Disney Co.", "US Equity", "Communication Services", "95.41"),
    "VZ": ("Verizon Communications", "US Equity", "Communication Services", "42.18"),
    "CAT": ("Caterpillar Inc.", "US Equity", "Industrials", "361.70"),
    "HON": ("Honeywell International", "US Equity", "Industrials", "211.05"),
    "UNP": ("Union Pacific Corp.", "US Equity", "Industrials", "239.82"),
    "GE": ("GE Aerospace", "US Equity", "Industrials", "174.60"),
    "RTX": ("RTX Corp.", "US Equity", "Industrials", "120.33"),
    "LMT": ("Lockheed Martin Corp.", "US Equity", "Industrials", "541.17"),
    "PG": ("Procter & Gamble Co.", "US Equity", "Consumer Staples", "170.44"),
    "KO": ("Coca-Cola Co.", "US Equity", "Consumer Staples", "64.92"),
    "PEP": ("PepsiCo Inc.", "US Equity", "Consumer Staples", "165.18"),
    "COST": ("Costco Wholesale Corp.", "US Equity", "Consumer Staples", "899.31"),
    "WMT": ("Walmart Inc.", "US Equity", "Consumer Staples", "80.27"),
    "XOM": ("Exxon Mobil Corp.", "US Equity", "Energy", "115.06"),
    "CVX": ("Chevron Corp.", "US Equity", "Energy", "155.87"),
    "COP": ("ConocoPhillips", "US Equity", "Energy", "109.64"),
    "NEE": ("NextEra Energy Inc.", "US Equity", "Utilities", "75.28"),
    "DUK": ("Duke Energy Corp.", "US Equity", "Utilities", "110.42"),
    "PLD": ("Prologis Inc.", "US Equity", "Real Estate", "114.90"),
    "AMT": ("American Tower Corp.", "US Equity", "Real Estate", "209.57"),
    "LIN": ("Linde plc", "US Equity", "Materials", "459.83"),
    "SHW": ("Sherwin-Williams Co.", "US Equity", "Materials", "360.12"),
    "VTI": ("Vanguard Total Stock Market ETF", "US Equity", "ETF - Broad Market", "285.19"),
    "VEA": (
        "Vanguard FTSE Developed Markets ETF",
        "International Equity",
        "ETF - Developed",
        "50.11",
    ),
    "VWO": (
        "Vanguard FTSE Emerging Markets ETF",
        "International Equity",
        "ETF - Emerging",
        "45.37",
    ),
    "VNQ": ("Vanguard Real Estate ETF", "Real Estate", "ETF - REIT", "90.22"),
    "AGG": (
        "iShares Core U.S. Aggregate Bond ETF",
        "Fixed Income",
        "ETF - Aggregate Bond",
        "99.84",
    ),
    "TIP": ("iShares TIPS Bond ETF", "Fixed Income", "ETF - Inflation Protected", "109.95"),
    "SHY": ("iShares 1-3 Year Treasury Bond ETF", "Fixed Income", "ETF - Short Treasury", "82.13"),
    "LQD": (
        "iShares iBoxx $ Inv Grade Corporate Bond ETF",
        "Fixed Income",
        "ETF - Corporate Bond",
        "108.47",
    ),
    "SCHD": ("Schwab U.S. Dividend Equity ETF", "US Equity", "ETF - Dividend", "28.06"),
}

_CORE = [
    "AAPL",
    "MSFT",
    "NVDA",
    "AMZN",
    "GOOGL",
    "META",
    "AVGO",
    "JPM",
    "LLY",
    "UNH",
    "V",
    "XOM",
    "MA",
    "HD",
    "PG",
    "COST",
    "JNJ",
    "ABBV",
    "MRK",
    "CVX",
    "KO",
    "PEP",
    "ORCL",
    "CRM",
    "BAC",
    "MCD",
    "CSCO",
    "TMO",
    "LIN",
    "PFE",
]
_DIVIDEND = [
    "JNJ",
    "PG",
    "KO",
    "PEP",
    "XOM",
    "CVX",
    "ABBV",
    "MRK",
    "HD",
    "MCD",
    "LMT",
    "UNP",
    "DUK",
    "NEE",
    "CSCO",
    "AMGN",
    "PLD",
    "WMT",
    "HON",
    "SCHD",
]
_TECH = [
    "AAPL",
    "MSFT",
    "NVDA",
    "AVGO",
    "AMD",
    "ADBE",
    "CRM",
    "INTU",
    "ORCL",
    "GOOGL",
    "META",
    "NFLX",
    "AMZN",
    "TSLA",
    "MA",
]


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    name: str
    weights: dict[str, Decimal]
    share: float  # of accounts following it


def _equal(symbols: list[str]) -> dict[str, Decimal]:
    """Equal weights to 4 decimals, the rounding remainder on the first name."""
    each = (Decimal(1) / len(symbols)).quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)
    weights = dict.fromkeys(symbols, each)
    weights[symbols[0]] += Decimal(1) - each * len(symbols)
    return weights


MODELS = [
    ModelSpec("us-large-core", "US Large Cap Core", _equal(_CORE), 0.40),
    ModelSpec("dividend-growth", "Dividend Growth", _equal(_DIVIDEND), 0.25),
    ModelSpec(
        "balanced-60-40",
        "Balanced 60/40 ETF",
        {
            "VTI": Decimal("0.35"),
            "VEA": Decimal("0.15"),
            "VWO": Decimal("0.05"),
            "VNQ": Decimal("0.05"),
            "AGG": Decimal("0.25"),
            "TIP": Decimal("0.05"),
            "SHY": Decimal("0.05"),
            "LQD": Decimal("0.05"),
        },
        0.25,
    ),
    ModelSpec("tech-leaders", "Technology Leaders", _equal(_TECH), 0.10),
]


def changed_core_model() -> ModelSpec:
    """The demo's model change: the committee replaces PFE and CSCO with AMD and NFLX; the
    model stays equally weighted."""
    symbols = [s for s in _CORE if s not in ("PFE", "CSCO")] + ["AMD", "NFLX"]
    return ModelSpec("us-large-core", "US Large Cap Core", _equal(symbols), 0.40)


@dataclass
class Account:
    account_id: str
    household_id: str
    name: str
    account_type: str
    model_id: str
    cash: Decimal
    positions: dict[str, Decimal] = field(default_factory=dict)


_FIRST = [
    "Jordan",
    "Avery",
    "Morgan",
    "Riley",
    "Casey",
    "Taylor",
    "Quinn",
    "Harper",
    "Rowan",
    "Emerson",
    "Sasha",
    "Parker",
    "Reese",
    "Dakota",
    "Elliot",
    "Hayden",
    "Jamie",
    "Kendall",
]
_LAST = [
    "Lee",
    "Patel",
    "Garcia",
    "Nguyen",
    "Smith",
    "Okafor",
    "Kim",
    "Rossi",
    "Cohen",
    "Silva",
    "Novak",
    "Haddad",
    "Larsen",
    "Moreau",
    "Tanaka",
    "Walsh",
    "Ibrahim",
    "Schmidt",
]
_KINDS = [
    ("taxable", "Individual"),
    ("taxable", "Joint"),
    ("ira", "IRA"),
    ("taxable", "Trust"),
    ("ira", "Roth IRA"),
]


def build_accounts(count: int, seed: int = 7) -> list[Account]:
    """`count` accounts over the models, in households of one to three accounts, each holding
    its model in whole shares with a little drift and a little cash."""
    rng = random.Random(seed)
    prices = {s: Decimal(v[3]) for s, v in SECURITIES.items()}
    accounts: list[Account] = []
    household = 0
    while len(accounts) < count:
        household += 1
        family = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        for _ in range(min(rng.choice([1, 1, 2, 2, 3]), count - len(accounts))):
            model = rng.choices(MODELS, weights=[m.share for m in MODELS])[0]
            kind, label = rng.choice(_KINDS)
            value = Decimal(
                str(round(min(max(rng.lognormvariate(12.9, 0.8), 50_000), 4_000_000), 2))
            )
            cash = (value * Decimal(str(rng.uniform(0.003, 0.02)))).quantize(Decimal("0.01"))
            positions = {}
            for symbol, weight in model.weights.items():
                tilt = Decimal(str(rng.uniform(0.9, 1.1)))
                shares = (value * weight * tilt / prices[symbol]).to_integral_value(ROUND_FLOOR)
                if shares > 0:
                    positions[symbol] = shares
            accounts.append(
                Account(
                    account_id=f"ACC-{len(accounts) + 1:06d}",
                    household_id=f"HH-{household:05d}",
                    name=f"{family} {label}",
                    account_type=kind,
                    model_id=model.model_id,
                    cash=cash,
                    positions=positions,
                )
            )
    return accounts


def security_rows() -> list[dict[str, object]]:
    return [
        {
            "symbol": s,
            "name": n,
            "asset_class": a,
            "sector": sec,
            "price": p,
            "fractional_eligible": a != "Fixed Income",
        }
        for s, (n, a, sec, p) in SECURITIES.items()
    ]


def model_body(model: ModelSpec) -> dict[str, object]:
    return {
        "name": model.name,
        "tenant": "demo",
        "targets": [{"symbol": s, "weight": str(w)} for s, w in model.weights.items()],
    }


def account_body(account: Account) -> dict[str, object]:
    return {
        "account_id": account.account_id,
        "tenant": "demo",
        "household_id": account.household_id,
        "name": account.name,
        "account_type": account.account_type,
        "model_id": account.model_id,
        "auto_approve": True,
    }


def holdings_body(account: Account, as_of: str) -> dict[str, object]:
    prices = {s: Decimal(v[3]) for s, v in SECURITIES.items()}
    return {
        "account_id": account.account_id,
        "tenant": "demo",
        "as_of": as_of,
        "cash": str(account.cash),
        "positions": [
            {
                "symbol": s,
                "quantity": str(q),
                "cost_basis": str((q * prices[s] * Decimal("0.85")).quantize(Decimal("0.01"))),
                "acquired_on": "2024-03-15",
            }
            for s, q in account.positions.items()
        ],
    }
