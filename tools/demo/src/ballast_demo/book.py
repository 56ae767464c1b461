"""A realistic demo book: securities, four models, households and accounts, opening holdings.

Deterministic for a given seed. Prices are round figures near late-2025 levels; they are
illustrative, not market data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

from ballast_engine.model import EquivalenceSet
from ballast_engine.sleeves import SleeveModel, equivalents_by_symbol
from ballast_engine.sleeves import home_sleeve as engine_home_sleeve

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
    "ITOT": (
        "iShares Core S&P Total U.S. Stock Market ETF",
        "US Equity",
        "ETF - Broad Market",
        "131.44",
    ),
}

# Substitutes the overlay manager accepts: holding one counts toward the other's target, and
# tax-loss harvesting swaps into it (none is substantially identical to its partner: the
# funds track different indexes, the companies are different companies).
EQUIVALENCE_SETS = {
    "us-total-market": ("US total market funds", ["VTI", "ITOT"], False),
    "home-improvement": ("Home improvement retail", ["HD", "LOW"], False),
    "life-science-tools": ("Life science tools and diagnostics", ["TMO", "ABT"], False),
}
# A list restrictions can name: clients who want no fossil-fuel producers.
SECURITY_LISTS = {"fossil-fuels": ("Fossil-fuel producers", ["XOM", "CVX", "COP"])}

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


_MODEL_SYMBOLS = {m.model_id: set(m.weights) for m in MODELS}
_EQUIVALENTS = equivalents_by_symbol(
    EquivalenceSet(set_id, tuple(members)) for set_id, (_, members, _) in EQUIVALENCE_SETS.items()
)


def changed_core_model() -> ModelSpec:
    """The demo's model change: the committee replaces PFE and CSCO with AMD and NFLX; the
    model stays equally weighted."""
    symbols = [s for s in _CORE if s not in ("PFE", "CSCO")] + ["AMD", "NFLX"]
    return ModelSpec("us-large-core", "US Large Cap Core", _equal(symbols), 0.40)


@dataclass(frozen=True)
class OpeningLot:
    quantity: Decimal
    cost_basis: Decimal
    acquired_on: str
    sleeve: str = ""  # a UMA's: the sleeve holding the lot


@dataclass
class Account:
    account_id: str
    household_id: str
    name: str
    account_type: str
    model_id: str | None
    cash: Decimal
    positions: dict[str, Decimal] = field(default_factory=dict)
    # Instructions (build_accounts(..., instructions=True)); an SMA without them otherwise.
    sleeves: list[tuple[str, str, Decimal]] = field(default_factory=list)  # id, model, weight
    restrictions: list[dict[str, str]] = field(default_factory=list)
    tax_settings: dict[str, object] | None = None
    lots: dict[str, list[OpeningLot]] = field(default_factory=dict)
    # A UMA's: the shares of each symbol each sleeve bought, and each sleeve's cash.
    sleeve_shares: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    sleeve_cash: dict[str, Decimal] = field(default_factory=dict)

    @property
    def is_uma(self) -> bool:
        return bool(self.sleeves)


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


# A UMA's strategy in the demo: core equity, dividend income and a balanced ETF sleeve.
UMA_SLEEVES = [
    ("core", "us-large-core", Decimal("0.5")),
    ("income", "dividend-growth", Decimal("0.2")),
    ("balanced", "balanced-60-40", Decimal("0.3")),
]


def build_accounts(count: int, seed: int = 7, *, instructions: bool = False) -> list[Account]:
    """`count` accounts over the models, in households of one to three accounts, each holding
    its model in whole shares with a little drift and a little cash.

    With `instructions`, the book looks like a real overlay manager's: about one account in
    ten is a UMA (three sleeves), some balanced accounts hold ITOT in place of VTI, about 10%
    exclude fossil fuels, a few may not sell a concentrated AAPL position, taxable accounts
    have tax settings, and positions are several tax lots bought since 2022 (some at a loss)."""
    rng = random.Random(seed)
    prices = {s: Decimal(v[3]) for s, v in SECURITIES.items()}
    models = {m.model_id: m for m in MODELS}
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
            uma = instructions and value >= 250_000 and rng.random() < 0.12
            sleeves = UMA_SLEEVES if uma else [("main", model.model_id, Decimal(1))]
            positions: dict[str, Decimal] = {}
            by_sleeve: dict[str, dict[str, Decimal]] = {}
            for sleeve_id, model_id, sleeve_weight in sleeves:
                for symbol, weight in models[model_id].weights.items():
                    tilt = Decimal(str(rng.uniform(0.9, 1.1)))
                    dollars = value * sleeve_weight * weight * tilt
                    shares = (dollars / prices[symbol]).to_integral_value(ROUND_FLOOR)
                    if shares > 0:
                        positions[symbol] = positions.get(symbol, Decimal(0)) + shares
                        by_sleeve.setdefault(symbol, {})[sleeve_id] = shares
            account = Account(
                account_id=f"ACC-{len(accounts) + 1:06d}",
                household_id=f"HH-{household:05d}",
                name=f"{family} {label}",
                account_type=kind,
                model_id=None if uma else model.model_id,
                cash=cash,
                positions=positions,
                sleeves=list(UMA_SLEEVES) if uma else [],
                sleeve_shares=by_sleeve if uma else {},
                sleeve_cash=_by_weight(cash, UMA_SLEEVES) if uma else {},
            )
            if instructions:
                _add_instructions(account, rng, prices)
            accounts.append(account)
    return accounts


def home_sleeve(account: Account, symbol: str) -> str:
    """The sleeve of a UMA's lot that no sleeve bought, by the engine's rule (the first
    sleeve whose model holds the symbol, else an equivalent, else the first); an SMA's lots
    name no sleeve."""
    if not account.sleeves:
        return ""
    sleeves = [SleeveModel(i, _MODEL_SYMBOLS[m]) for i, m, _ in account.sleeves]
    return engine_home_sleeve(symbol, sleeves, _EQUIVALENTS)


def _by_weight(cash: Decimal, sleeves: list[tuple[str, str, Decimal]]) -> dict[str, Decimal]:
    """A UMA's cash shared by its sleeves' weights, in cents (the rest to the first)."""
    parts = {s: (cash * w).quantize(Decimal("0.01"), ROUND_FLOOR) for s, _, w in sleeves}
    parts[sleeves[0][0]] += cash - sum(parts.values())
    return parts


def _in_sleeves(lots: list[OpeningLot], shares: dict[str, Decimal]) -> list[OpeningLot]:
    """A UMA's lots of one symbol handed to the sleeves that bought its shares, in sleeve
    order, a lot split where a sleeve's shares end inside it (basis pro rata, in cents; the
    last sleeve takes what is left)."""
    out: list[OpeningLot] = []
    sleeves = list(shares)
    wanted = dict(shares)
    for lot in lots:
        left, basis_left = lot.quantity, lot.cost_basis
        while left > 0:
            while wanted[sleeves[0]] <= 0 and len(sleeves) > 1:
                sleeves.pop(0)
            sleeve = sleeves[0]
            take = min(left, wanted[sleeve]) if len(sleeves) > 1 else left
            if take == left:
                basis = basis_left
            else:
                basis = (lot.cost_basis * take / lot.quantity).quantize(Decimal("0.01"))
            out.append(OpeningLot(take, basis, lot.acquired_on, sleeve))
            wanted[sleeve] -= take
            left, basis_left = left - take, basis_left - basis
    return out


def _add_instructions(account: Account, rng: random.Random, prices: dict[str, Decimal]) -> None:
    if "VTI" in account.positions and rng.random() < 0.3:  # transferred in holding ITOT
        vti = account.positions.pop("VTI")
        account.positions["ITOT"] = (vti * prices["VTI"] / prices["ITOT"]).to_integral_value(
            ROUND_FLOOR
        )
        if account.sleeve_shares:  # VTI is in one sleeve's model: ITOT stays there
            [sleeve] = account.sleeve_shares.pop("VTI")
            account.sleeve_shares["ITOT"] = {sleeve: account.positions["ITOT"]}
    if rng.random() < 0.1:
        account.restrictions.append(
            {
                "kind": "do_not_buy",
                "scope": "list",
                "value": "fossil-fuels",
                "source": "client",
                "reason": "client asked to own no fossil-fuel producers",
            }
        )
    if "AAPL" in account.positions and rng.random() < 0.04:
        account.restrictions.append(
            {
                "kind": "do_not_sell",
                "scope": "security",
                "value": "AAPL",
                "source": "client",
                "reason": "concentrated low-basis position the client keeps",
            }
        )
    if account.account_type == "taxable":
        account.tax_settings = {
            "relief_method": rng.choice(["mintax", "mintax", "hifo", "fifo"]),
            "short_term_rate": "0.37",
            "long_term_rate": "0.20",
            "avoid_short_term_gains": rng.random() < 0.25,
            "harvest": rng.random() < 0.5,
        }
        if rng.random() < 0.1:
            account.tax_settings["gain_budget"] = str(rng.choice([2_500, 5_000, 10_000]))
    for symbol, quantity in account.positions.items():
        account.lots[symbol] = _opening_lots(quantity, prices[symbol], rng)
        if account.sleeve_shares:
            account.lots[symbol] = _in_sleeves(account.lots[symbol], account.sleeve_shares[symbol])


def _opening_lots(quantity: Decimal, price: Decimal, rng: random.Random) -> list[OpeningLot]:
    """One to three lots bought between 2022 and October 2026, at 60% to 125% of today's
    price (so some sit at a loss)."""
    count = min(int(quantity), rng.choice([1, 2, 2, 3]))
    sizes = [quantity // count] * count
    sizes[0] += quantity - sum(sizes)
    lots = []
    for size in sizes:
        year = rng.choice([2022, 2023, 2024, 2025, 2026])
        month = rng.randint(1, 10 if year == 2026 else 12)
        factor = Decimal(str(round(rng.uniform(0.6, 1.25), 4)))
        basis = (size * price * factor).quantize(Decimal("0.01"))
        lots.append(OpeningLot(size, basis, f"{year}-{month:02d}-{rng.randint(1, 28):02d}"))
    return lots


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
        "targets": [{"symbol": s, "weight": str(w)} for s, w in model.weights.items()],
    }
