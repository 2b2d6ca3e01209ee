"""`python run.py import-products FILE.csv`: good rows kept, bad rows reported with their line numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.commands.import_products import run
from bot.configuration.config import Config
from bot.persistence.database import Database
from tests.backend import config_for, env_for, query

REPO = Path(__file__).resolve().parents[2]


async def products(config: Config) -> dict[str, tuple[str, int, int, bool]]:
    db = Database.create(config.database_url)
    await db.open()
    try:
        rows = await db.fetch("SELECT sku, name, price_cents, stock, active FROM products ORDER BY sku")
        return {r["sku"]: (r["name"], r["price_cents"], r["stock"], bool(r["active"])) for r in rows}
    finally:
        await db.close()


async def test_good_rows_are_imported_and_bad_rows_reported_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path / "data")
    csv_file = tmp_path / "catalogue.csv"
    csv_file.write_text(
        "sku,name,description,price,currency,stock,active,colour\n"
        "A-1,Pane,buono,3.20,EUR,10,1,n/a\n"
        ",No sku,,1.00,EUR,1,1,\n"
        "A-2,Prezzo sbagliato,,tre euro,EUR,1,1,\n"
        '"A-3","Tovaglia ""bella""","su due\nrighe",15,eur,,0,\n'
        "A-4,Stock negativo,,1.00,EUR,-2,1,\n"
        "A-1,Doppione,,1.00,EUR,1,1,\n"
        "\n"
        "A-5,Valuta,,1.00,EURO,1,maybe,\n",
        encoding="utf-8",
    )
    assert await run(config, [str(csv_file)]) == 0
    out, err = capsys.readouterr()
    assert "imported 2 products" in out and "2 new" in out and "5 rows skipped" in out
    assert "line 3: skipped: the sku is empty" in err
    assert "line 4: skipped: price 'tre euro' is not a number like 12.50" in err
    assert "line 7: skipped: stock '-2'" in err
    assert "line 8: skipped: sku A-1 is already on line 2" in err
    assert "line 10: skipped:" in err and "EURO" in err and "'maybe'" in err
    assert "ignored the columns colour" in err
    assert await products(config) == {
        "A-1": ("Pane", 320, 10, True),
        "A-3": ('Tovaglia "bella"', 1500, 0, False),
    }
    # Importing again updates by sku.
    csv_file.write_text("sku;name;price\nA-1;Pane Nero;4,10\n", encoding="utf-8")
    assert await run(config, [str(csv_file)]) == 0
    out = capsys.readouterr().out
    assert "imported 1 product from" in out and "1 updated" in out  # not "1 products"
    assert (await products(config))["A-1"] == ("Pane Nero", 410, 0, True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("name,description\nPane,buono\n", "lacks sku, price"),
        ("sku,name,price\n,,\n", "no row"),
    ],
)
async def test_unusable_files_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(content, encoding="utf-8")
    assert await run(config_for(tmp_path / "data"), [str(csv_file)]) == 1
    assert message in capsys.readouterr().err


async def test_missing_and_non_utf8_files_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_for(tmp_path / "data")
    assert await run(config, [str(tmp_path / "nope.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("sku,name,price\nC-1,Caffè,1\n".encode("latin-1"))
    assert await run(config, [str(latin)]) == 1
    assert "UTF-8" in capsys.readouterr().err


def test_the_sample_catalogue_imports_through_run_py(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "run.py", "import-products", "bot/samples/sample_products.csv", "--data-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False, env=env_for(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "imported 15 products" in result.stdout
    assert query(tmp_path, "SELECT COUNT(*) AS n FROM products") == [{"n": 15}]
