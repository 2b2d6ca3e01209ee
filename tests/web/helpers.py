"""Helpers for the operator-web tests: signing in like a browser, CSRF tokens, and hand-made PDFs."""

from __future__ import annotations

import functools
import io
import re
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from pypdf import PdfReader, PdfWriter

from bot.web.keys import KNOWLEDGE

ADMIN_PASSWORD = "test-admin-password"
OPENAI_KEY = "sk-proj-TESTKEY-0123456789abcdefghijklmnopqrstuvwxyz-XYZ9"

_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_in(html: str) -> str:
    """The CSRF token a page carries (meta tag, or the first form's hidden field)."""
    match = _CSRF_META.search(html)
    if match and match.group(1):
        return match.group(1)
    field = _CSRF_FIELD.search(html)
    assert field, "no CSRF token in the page"
    return field.group(1)


@asynccontextmanager
async def another_browser(client: TestClient) -> AsyncIterator[aiohttp.ClientSession]:
    """A second, independent client of the same server (its own cookies), closed on exit."""
    async with aiohttp.ClientSession(base_url=client.make_url("/"), cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        yield other


async def sign_in(client: TestClient | aiohttp.ClientSession, username: str = "admin", password: str = ADMIN_PASSWORD,
                  *, next_path: str | None = None, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    """GET /login (for its form token), then POST it; redirects are not followed."""
    page = await client.get("/login", headers=headers)
    token = _CSRF_FIELD.search(await page.text())
    assert token, "the sign-in form has no CSRF field"
    form = {"username": username, "password": password, "csrf_token": token.group(1)}
    if next_path is not None:
        form["next"] = next_path
    return await client.post("/login", data=form, allow_redirects=False, headers=headers)


async def admin(client: TestClient) -> str:
    """Sign in as admin; returns the session's CSRF token."""
    resp = await sign_in(client)
    assert resp.status == 303, await resp.text()
    page = await client.get("/ai-diagnostics")
    assert page.status == 200
    return csrf_in(await page.text())


async def post_form(client: TestClient, path: str, csrf: str, **fields: Any) -> aiohttp.ClientResponse:
    """POST a urlencoded form with the CSRF field, without following the redirect."""
    data = {"csrf_token": csrf, **{k: str(v) for k, v in fields.items()}}
    return await client.post(path, data=data, allow_redirects=False)


def settings_form(**changes: Any) -> dict[str, Any]:
    """A complete settings form as a browser sends it (unticked boxes are absent)."""
    form: dict[str, Any] = {
        "use_stored": "1",
        "openai_api_key": "",
        "model": "gpt-4o-mini",
        "client_name": "Bottega Test",
        "instructions": "You are the assistant of {{Cliente}}.",
        "autoreply": "1",
        "reaction_emoji": "🤖",
        "human_cooldown_seconds": "0",
        "burst_window_ms": "0",
        "kb_mode": "openai",
    }
    for name, value in changes.items():
        if value is None:
            form.pop(name, None)
        else:
            form[name] = value
    return form


async def upload_pdf(client: TestClient, csrf: str, data: bytes, filename: str = "catalogue.pdf"
                     ) -> aiohttp.ClientResponse:
    """Upload a PDF through the settings page's multipart form (CSRF field first)."""
    form = aiohttp.FormData()
    form.add_field("csrf_token", csrf)
    form.add_field("pdf", data, filename=filename, content_type="application/pdf")
    return await client.post("/settings/knowledge", data=form, allow_redirects=False)


async def indexed(client: TestClient) -> None:
    """Wait until the knowledge base's indexing run has finished."""
    await client.app[KNOWLEDGE].idle()  # type: ignore[index]


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def make_pdf(pages: list[str]) -> bytes:
    """A minimal PDF written by hand: one Helvetica text line per page line (WinAnsi, so accents work)."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = b" ".join(b"%d 0 R" % pid for pid in page_ids)
    objects.append(b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(pages))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for index, text in enumerate(pages):
        lines = [b"BT", b"/F1 12 Tf", b"14 TL", b"72 720 Td"]
        for line in text.split("\n"):
            lines.append(_pdf_string(line) + b" Tj T*")
        lines.append(b"ET")
        stream = b"\n".join(lines) if text else b""
        content_id = page_ids[index] + 1
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % content_id
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return _pdf_file(objects)


@functools.cache
def flate_bomb(unpacked_mb: int = 80) -> bytes:
    """A PDF of about 80 KB whose page content unpacks to 80 MB (past pypdf's 75 MB limit): a Flate bomb."""
    packer = zlib.compressobj(9)
    space = b" " * (1 << 20)
    packed = b"".join(packer.compress(space) for _ in range(unpacked_mb)) + packer.flush()
    return _pdf_file([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream",
    ])


def _pdf_file(objects: list[bytes]) -> bytes:
    """Numbered objects, a cross-reference table and a trailer: a PDF file."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def encrypted(pdf: bytes, password: str = "secret") -> bytes:
    """The same PDF, encrypted with a user password (pypdf)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


CATALOGUE = [
    "Bottega Test - condizioni di vendita\nSpedizione in Italia: gratuita sopra 50 euro.\n"
    "Spedizione all'estero: 15 euro, consegna in 5 giorni.",
    "Resi\nPuoi restituire un prodotto entro 30 giorni, perché la soddisfazione è importante.\n"
    "Orari del negozio: dal lunedì al sabato, 9-19.",
]
