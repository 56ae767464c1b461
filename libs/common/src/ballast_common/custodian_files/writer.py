"""Writing a custodian's daily file set in a registered custodian's format, as a stream:
one `CsvOut` per file (its rows counted as they go), then the manifest of what was written
(each file's rows and SHA-256). The generator and the custodian simulator both write through
it, so there is one CSV writer for the file set."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import IO

from ballast_common.contracts.custodian_files import MANIFEST
from ballast_common.custodian_files.adapters import BALLAST, CustodianFormat


class CsvOut:
    """One file of the set being written in the custodian's format, counting its rows."""

    def __init__(self, folder: Path, adapter: CustodianFormat, canonical: str, day: date):
        self.canonical = canonical
        self.adapter = adapter
        self.path = folder / adapter.file_name(canonical, day)
        self._file: IO[str] = self.path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(adapter.header(canonical))
        self.rows = 0

    def write(self, row: dict[str, str]) -> None:
        """Write one canonical row (column name -> value; a column left out is empty)."""
        self._writer.writerow(self.adapter.encode(self.canonical, row))
        self.rows += 1

    def close(self) -> None:
        self._file.close()


def write_manifest(
    folder: Path, adapter: CustodianFormat, business_date: date, files: Iterable[CsvOut]
) -> CsvOut:
    """Write the manifest of `files` (closed): each one's name, rows and SHA-256."""
    manifest = CsvOut(folder, adapter, MANIFEST.name, business_date)
    for f in files:
        with f.path.open("rb") as data:
            digest = hashlib.file_digest(data, "sha256").hexdigest()
        manifest.write(
            {
                "file": f.path.name,
                "business_date": business_date.isoformat(),
                "rows": str(f.rows),
                "sha256": digest,
            }
        )
    manifest.close()
    return manifest


class FileSetWriter:
    """A day's file set in `folder`: open each file with `file`, write its rows, then
    `finish` closes them and writes the manifest (a file written again replaces the old)."""

    def __init__(
        self, folder: Path, business_date: date, adapter: CustodianFormat = BALLAST
    ) -> None:
        self.folder = folder
        self.business_date = business_date
        self.adapter = adapter
        self.files: dict[str, CsvOut] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def file(self, canonical: str) -> CsvOut:
        """The open file of `canonical` (opened, with its header, on first use)."""
        out = self.files.get(canonical)
        if out is None:
            out = self.files[canonical] = CsvOut(
                self.folder, self.adapter, canonical, self.business_date
            )
        return out

    def finish(self) -> dict[str, int]:
        """Close every file and write the manifest; the rows written per canonical file."""
        for out in self.files.values():
            out.close()
        write_manifest(self.folder, self.adapter, self.business_date, self.files.values())
        return {name: out.rows for name, out in self.files.items()}
