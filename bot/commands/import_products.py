"""Import or update the product catalogue from a CSV file (sku,name,description,price,currency,stock,active)."""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bot.configuration.config import Config
from bot.persistence.crm import ProductInput, ProductRepo
from bot.persistence.database import Database
from bot.texts import plural
from bot.tools.money import PriceError, parse_price

REQUIRED = ("sku", "name", "price")
KNOWN = ("sku", "name", "description", "price", "currency", "stock", "active")
_TRUE = {"1", "true", "yes", "y", "si", "sì", "x", "on"}
_FALSE = {"0", "false", "no", "n", "off"}
_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class UnusableFile(Exception):
    """The file as a whole cannot be read as a catalogue; the message says why and what to fix."""


@dataclass
class ImportReport:
    """What an import did: products to store, and the rows left out with their line numbers and reasons."""

    products: list[ProductInput] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)


def _row(values: dict[str, str]) -> tuple[ProductInput | None, list[str]]:
    problems: list[str] = []
    sku = values.get("sku", "").strip()
    name = " ".join(values.get("name", "").split())
    description = values.get("description", "").strip()
    if not sku:
        problems.append("the sku is empty")
    elif not _SKU.match(sku):
        problems.append(f"sku {sku!r} may only hold letters, digits and . _ / - (at most 64)")
    if not name:
        problems.append("the name is empty")
    elif len(name) > 200:
        problems.append("the name is longer than 200 characters")
    if len(description) > 4000:
        problems.append("the description is longer than 4000 characters")
    price = 0
    try:
        price = parse_price(values.get("price", ""))
    except PriceError as exc:
        problems.append(str(exc))
    currency = (values.get("currency") or "EUR").strip().upper() or "EUR"
    if not _CURRENCY.match(currency):
        problems.append(f"currency {currency!r} is not a three-letter code like EUR")
    stock = 0
    raw_stock = (values.get("stock") or "0").strip() or "0"
    if not re.fullmatch(r"\d{1,9}", raw_stock):
        problems.append(f"stock {raw_stock!r} is not a whole number of 0 or more")
    else:
        stock = int(raw_stock)
    raw_active = (values.get("active") or "1").strip().lower() or "1"
    if raw_active not in _TRUE | _FALSE:
        problems.append(f"active {raw_active!r} should be 1 or 0")
    if problems:
        return None, problems
    return ProductInput(sku, name, description, price, currency, stock, raw_active in _TRUE), []


def parse_catalogue(text: str) -> ImportReport:
    """Read CSV text (comma or semicolon separated, header first); raises UnusableFile when it cannot be used."""
    if not text.strip():
        raise UnusableFile("the file is empty")
    first_line = text.lstrip().splitlines()[0]
    # Spreadsheets set to Italian, German or French save CSV with semicolons.
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise UnusableFile(f"the header row cannot be read ({exc})") from exc
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UnusableFile(
            f"the header row lacks {', '.join(missing)}; the first line must name the columns: {','.join(KNOWN)}"
        )
    report = ImportReport(unknown_columns=[h for h in header if h and h not in KNOWN])
    seen: dict[str, int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.rejected.append((reader.line_num, f"unreadable CSV ({exc})"))
            continue
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            report.rejected.append((line, f"{len(cells)} values but the header names {len(header)} columns"))
            continue
        values = dict(zip(header, cells, strict=False))
        product, problems = _row(values)
        if product is None:
            report.rejected.append((line, "; ".join(problems)))
            continue
        if product.sku in seen:
            report.rejected.append((line, f"sku {product.sku} is already on line {seen[product.sku]}"))
            continue
        seen[product.sku] = line
        report.products.append(product)
    return report


async def run(config: Config, argv: list[str]) -> int:
    """Import products from a CSV file: python run.py import-products FILE.csv."""
    parser = argparse.ArgumentParser(
        prog="run.py import-products",
        description="Add or update products by sku from a CSV file with the header "
        f"{','.join(KNOWN)} (price like 12.50; currency defaults to EUR, stock to 0, active to 1).",
    )
    parser.add_argument("file", type=Path, help="the CSV file")
    args = parser.parse_args(argv)
    path: Path = args.file
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        print(f"cannot import: {path} does not exist", file=sys.stderr)
        return 1
    except UnicodeDecodeError:
        print(f"cannot import: {path} is not UTF-8 text; save it as 'CSV UTF-8' and try again", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot import: {path} cannot be read ({exc.strerror})", file=sys.stderr)
        return 1
    try:
        report = parse_catalogue(text)
    except UnusableFile as exc:
        print(f"cannot import {path}: {exc}", file=sys.stderr)
        return 1
    if report.unknown_columns:
        print(f"note: ignored the columns {', '.join(report.unknown_columns)}", file=sys.stderr)
    for line, reason in report.rejected:
        print(f"line {line}: skipped: {reason}", file=sys.stderr)
    if not report.products:
        print(f"nothing imported: no row of {path} could be used", file=sys.stderr)
        return 1
    db = Database.create(config.database_url)
    await db.open()
    try:
        added, updated = await ProductRepo(db).upsert_many(report.products)
    finally:
        await db.close()
    skipped = f", {plural(len(report.rejected), 'row')} skipped" if report.rejected else ""
    print(f"imported {plural(added + updated, 'product')} from {path} ({added} new, {updated} updated){skipped}")
    return 0
