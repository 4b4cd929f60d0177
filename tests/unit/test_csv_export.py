"""CSV export (api.csv_export): quoting, and no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io

from api.csv_export import cell, to_csv


def test_formula_starts_are_neutralised_and_numbers_stay_numbers() -> None:
    for dangerous in ("=1+1", "+1", "-2", "@SUM(A1)", "\t=x", "\r=x", '=HYPERLINK("http://x")'):
        assert cell(dangerous) == "'" + dangerous
    assert cell("Ada") == "Ada" and cell("a=b") == "a=b"
    assert cell(-2) == "-2" and cell(1.5) == "1.5"  # numbers are data, not formulas
    assert cell(None) == "" and cell(True) == "yes" and cell(False) == "no"


def test_quoting_round_trips_through_a_csv_reader() -> None:
    text = to_csv(("name", "note"), [('Ada "the first", L.', "line\nbreak"), ("=cmd", 3)])
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["name", "note"],
        ['Ada "the first", L.', "line\nbreak"],
        ["'=cmd", "3"],
    ]
