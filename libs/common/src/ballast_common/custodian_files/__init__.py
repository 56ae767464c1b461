"""The custodian's daily files (`docs/custodian-files.md`): adapters from each custodian's
format to the canonical rows of `contracts/custodian_files.py`, the streaming check of a file
set, and a generator of file sets for tests, demos and benchmarks."""

from ballast_common.custodian_files import northwind as _northwind  # registers its adapter
from ballast_common.custodian_files.adapters import (
    ADAPTERS,
    BALLAST,
    CustodianFormat,
    FileLayout,
    SignedColumn,
    adapter_for,
    register,
)
from ballast_common.custodian_files.validation import (
    FileSummary,
    Problem,
    Report,
    UnknownSecurity,
    check_file_set,
    read_lot_keys,
)
from ballast_common.custodian_files.writer import CsvOut, FileSetWriter, write_manifest

NORTHWIND = _northwind.NORTHWIND

__all__ = [
    "ADAPTERS",
    "BALLAST",
    "NORTHWIND",
    "CsvOut",
    "CustodianFormat",
    "FileLayout",
    "FileSetWriter",
    "FileSummary",
    "Problem",
    "Report",
    "SignedColumn",
    "UnknownSecurity",
    "adapter_for",
    "check_file_set",
    "read_lot_keys",
    "register",
    "write_manifest",
]
