"""A wheel's ``RECORD`` after some of its files were rewritten: their digests and sizes brought up to date."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Mapping


def updated(record: bytes, rewritten: Mapping[str, bytes]) -> bytes:
    """``record`` with the row of each file of ``rewritten`` (name: new content) made to match it."""
    text = record.decode("utf-8")
    rows = [
        [row[0], f"sha256={_digest(rewritten[row[0]])}", str(len(rewritten[row[0]]))]
        if row and row[0] in rewritten
        else row
        for row in csv.reader(io.StringIO(text))
    ]
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n" if "\r\n" in text else "\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
