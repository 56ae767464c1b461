"""`ballast book load`: what it refuses before talking to any service, and how it reads
the services' answers."""

from datetime import date
from pathlib import Path

import pytest
from ballast_cli import book
from ballast_cli.main import main

REQUIRED = ("prices.csv", "households.csv", "accounts.csv", "cash.csv", "positions.csv",
            "lots.csv")  # fmt: skip


def folder(tmp_path: Path, name: str = "2026-12-04", files: tuple[str, ...] = REQUIRED) -> Path:
    day = tmp_path / name
    day.mkdir()
    for f in files:
        (day / f).write_text("a,b\n1,2\n")
    return day


def test_the_folder_name_is_the_as_of_date_and_the_load_id_follows_the_contents(tmp_path):
    day = folder(tmp_path)
    first = book.discover(day)
    assert first.as_of == date(2026, 12, 4) and set(first.files) == set(REQUIRED)
    assert first.load_id.startswith("2026-12-04-") and book.discover(day).load_id == first.load_id
    (day / "cash.csv").write_text("a,b\n1,3\n")
    assert book.discover(day).load_id != first.load_id  # another file set, another load
    assert book.discover(day, date(2026, 12, 5)).as_of == date(2026, 12, 5)


@pytest.mark.parametrize(
    ("name", "files", "message"),
    [
        ("2026-12-04", (*REQUIRED, "acounts.csv"), "acounts.csv is not a file of the book"),
        ("2026-12-04", REQUIRED[1:], "required file(s) missing: prices.csv"),
        ("latest", REQUIRED, "name the folder by its as-of date"),
        ("2026-13-04", REQUIRED, "2026-13-04 is not a date"),
    ],
)
def test_a_file_set_that_cannot_be_a_book_is_refused_naming_why(tmp_path, name, files, message):
    with pytest.raises(book.BookLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        book.discover(folder(tmp_path, name, files))


def test_a_folder_that_is_not_a_book_is_bad_input_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["book", "load", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ballast book load: error: ") and "is not a folder" in err


def test_a_service_that_is_not_running_is_named_exit_3(tmp_path, capsys):
    day = folder(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        # nothing listens on ports 2-5
        main(["book", "load", str(day), "--port-base", "1", "--token", "t", "--retry-for", "0"])
    assert exit_.value.code == 3
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress display
    assert last.startswith(
        "ballast book load: error: cannot reach model-hub-svc at http://127.0.0.1:3"
    )


def test_problems_read_back_as_file_line_and_column():
    problem = book._problem_of({"field": "lots.csv:17 quantity", "message": "must be > 0"}, "t")
    assert (problem["file"], problem["line"], problem["column"]) == ("lots.csv", 17, "quantity")
    whole = book._problem_of({"field": "cash.csv", "message": "required"}, "t")
    assert (whole["file"], whole["line"], whole["column"]) == ("cash.csv", 0, "")
    assert "lots.csv:17 quantity: must be > 0" in book._lines([problem])
    assert book._lines([whole]) == "  cash.csv: required"
