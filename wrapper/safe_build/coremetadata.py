"""Text replaced in the core metadata of a wheel or an sdist, every other member kept as it is.

Two things need it. A backend that resolves a path dependency against the directory it builds in
(hatchling's ``lib @ {root:uri}/../lib``, poetry-core's ``path = "../lib"``) writes the snapshot's
private directory into the metadata, where a build in place writes the project's real one. And
safe-pip points a path dependency of a local project at the wheel that safe-build built of it.
The core metadata files are a wheel's ``METADATA`` (its ``RECORD`` line brought up to date) and an
sdist's ``PKG-INFO`` and egg-info ``requires.txt``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

Replacements = Sequence[tuple[bytes, bytes]]


def rewrite(artifact: Path, changes: Replacements) -> bool:
    """Make each change (old bytes, new bytes) in ``artifact``'s core metadata, in place; whether
    anything changed."""
    if artifact.name.endswith(".whl"):
        return _rewrite_wheel(artifact, changes)
    if artifact.name.endswith(".tar.gz"):
        return _rewrite_sdist(artifact, changes)
    return False


def replaced(data: bytes, changes: Replacements) -> bytes:
    """``data`` with each change made, in order."""
    for old, new in changes:
        data = data.replace(old, new)
    return data


def _changed(contents: Mapping[str, bytes], changes: Replacements) -> dict[str, bytes]:
    """The new contents of those of ``contents`` (name: content) that the changes change."""
    rewritten = {name: replaced(data, changes) for name, data in contents.items()}
    return {name: data for name, data in rewritten.items() if data != contents[name]}


def _rewrite_wheel(wheel: Path, changes: Replacements) -> bool:
    with zipfile.ZipFile(wheel) as archive:
        infos = archive.infolist()
        metadata = [info for info in infos if _is_dist_info(info.filename, "METADATA")]
        rewritten = _changed({info.filename: archive.read(info) for info in metadata}, changes)
        if not rewritten:
            return False  # the usual case, after every build: only METADATA was read
        contents = {info.filename: archive.read(info) for info in infos}
    contents.update(rewritten)
    for record in [name for name in contents if _is_dist_info(name, "RECORD")]:
        contents[record] = updated_record(contents[record], rewritten)
    temporary = wheel.with_name(f".{wheel.name}.rewrite")
    with zipfile.ZipFile(temporary, "w") as archive:
        for info in infos:
            archive.writestr(info, contents[info.filename])
    os.replace(temporary, wheel)
    return True


def _rewrite_sdist(sdist: Path, changes: Replacements) -> bool:
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
        contents = {
            member.name: extracted.read()
            for member in members
            if member.isfile() and _is_metadata(member.name)
            for extracted in [archive.extractfile(member)]
            if extracted is not None
        }
        rewritten = _changed(contents, changes)
        if not rewritten:
            return False
        temporary = sdist.with_name(f".{sdist.name}.rewrite")
        with tarfile.open(temporary, "w:gz", format=archive.format) as out:
            for member in members:
                if member.name in rewritten:
                    member.size = len(rewritten[member.name])
                    out.addfile(member, io.BytesIO(rewritten[member.name]))
                else:
                    out.addfile(member, archive.extractfile(member) if member.isfile() else None)
    os.replace(temporary, sdist)
    return True


def _is_dist_info(name: str, file: str) -> bool:
    """Is ``name`` the wheel's own ``.dist-info/FILE``?"""
    directory, _, rest = name.partition("/")
    return directory.endswith(".dist-info") and rest == file


def _is_metadata(name: str) -> bool:
    *_, directory, file = ["", *name.split("/")]
    return file == "PKG-INFO" or (file == "requires.txt" and directory.endswith(".egg-info"))


def updated_record(record: bytes, rewritten: Mapping[str, bytes]) -> bytes:
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
