"""Northwind Clearing (a made-up custodian): its own file names and column names, US dates
(MM/DD/YYYY), two-letter transaction codes, and sells, transfers out and cash going out
written negative. A new custodian is a file like this one."""

from __future__ import annotations

from ballast_common.custodian_files.adapters import (
    CustodianFormat,
    FileLayout,
    SignedColumn,
    register,
)

# fmt: off
NORTHWIND = CustodianFormat(
    "northwind",
    (
        FileLayout("manifest.csv", "NWC_CTL_{date}.csv", {
            "file": "FileName", "business_date": "AsOf", "rows": "RecordCount",
            "sha256": "SHA256"}),
        FileLayout("prices.csv", "NWC_PRC_{date}.csv", {
            "symbol": "Ticker", "price": "ClosePx", "as_of": "AsOf", "cusip": "CUSIP",
            "name": "SecurityName"}),
        FileLayout("cash.csv", "NWC_CSH_{date}.csv", {
            "account_id": "AcctNo", "amount": "CashBal", "as_of": "AsOf"}),
        FileLayout("positions.csv", "NWC_POS_{date}.csv", {
            "account_id": "AcctNo", "symbol": "Ticker", "quantity": "Qty", "as_of": "AsOf"}),
        FileLayout("lots.csv", "NWC_LOT_{date}.csv", {
            "account_id": "AcctNo", "symbol": "Ticker", "lot_id": "LotRef", "quantity": "Qty",
            "acquired_on": "OpenDate", "cost_basis": "TotalCost", "as_of": "AsOf"}),
        FileLayout("transactions.csv", "NWC_TXN_{date}.csv", {
            "transaction_id": "TxnRef", "account_id": "AcctNo", "type": "TxnCode",
            "symbol": "Ticker", "quantity": "Qty", "amount": "NetAmt", "price": "Px",
            "trade_date": "TradeDate", "settle_date": "SettleDate", "lot_id": "LotRef",
            "description": "Memo"}),
        FileLayout("corporate_actions.csv", "NWC_CA_{date}.csv", {
            "action_id": "EventRef", "type": "EventCode", "symbol": "Ticker",
            "effective_date": "ExDate", "new_symbol": "NewTicker", "numerator": "RateNew",
            "denominator": "RateOld", "ratio": "ShareRatio", "cash_per_share": "CashRate",
            "basis_percent": "BasisPct"}),
    ),
    date_format="%m/%d/%Y",
    date_shown="MM/DD/YYYY",
    file_date_format="%Y%m%d",
    codes={"type": {
        "by": "buy", "sl": "sell", "dv": "dividend", "fe": "fee", "dp": "deposit",
        "wd": "withdrawal", "ti": "transfer_in", "to": "transfer_out",
        "sp": "split", "rs": "reverse-split", "sc": "symbol-change", "cm": "cash-merger",
        "sm": "stock-merger", "so": "spin-off", "cd": "cash-dividend",
    }},
    signed=(
        SignedColumn("quantity", frozenset({"sell", "transfer_out"})),
        SignedColumn("amount", frozenset({"buy", "fee", "withdrawal"})),
    ),
)
# fmt: on

register("northwind", NORTHWIND)
