"""Put the project's real path back where a backend wrote the snapshot's into an artifact's metadata.

A backend that resolves a path dependency against the directory it builds in (hatchling's
``lib @ {root:uri}/../lib``, poetry-core's ``path = "../lib"``) writes that directory into the
core metadata: from a snapshot, a private directory that is gone once the build ends. A build in
place would have written the project's real path there, so that is what the artifact gets. Only
the core metadata files are rewritten (a wheel's ``METADATA``, with its ``RECORD`` line; an sdist's
``PKG-INFO`` and egg-info ``requires.txt``); every other member is copied as it is.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from safe_build import wheelrecord

Replacements = Sequence[tuple[bytes, bytes]]


def replacements(snapshot: Path, real: Path, levels: int) -> list[tuple[bytes, bytes]]:
    """What to replace: ``snapshot`` (the copy of ``real``) and ``levels`` of the directories above
    it (where the paths above the project that the snapshot brought along lie), deepest first; each
    as a ``file:`` URI before its plain path, so that a URI gets the real path's URI quoting. The
    snapshot mirrors the real tree, so a prefix maps a path below it to its real place."""
    found = []
    above = zip(snapshot.parents[:levels], real.parents[:levels], strict=True)
    for ours, theirs in [(snapshot, real), *above]:
        found += [
            (ours.as_uri().encode(), theirs.as_uri().encode()),
            (os.fsencode(ours), os.fsencode(theirs)),
        ]
    return found


def restore(artifact: Path, changes: Replacements) -> bool:
    """Rewrite ``artifact`` in place if its metadata names the snapshot; whether it did."""
    if artifact.name.endswith(".whl"):
        return _restore_wheel(artifact, changes)
    if artifact.name.endswith(".tar.gz"):
        return _restore_sdist(artifact, changes)
    return False


def _replaced(data: bytes, changes: Replacements) -> bytes:
    for old, new in changes:
        data = data.replace(old, new)
    return data


def _restore_wheel(wheel: Path, changes: Replacements) -> bool:
    with zipfile.ZipFile(wheel) as archive:
        infos = archive.infolist()
        contents = {info.filename: archive.read(info) for info in infos}
    metadata = [name for name in contents if name.count("/") == 1 and name.endswith(".dist-info/METADATA")]
    rewritten = {name: _replaced(contents[name], changes) for name in metadata}
    rewritten = {name: data for name, data in rewritten.items() if data != contents[name]}
    if not rewritten:
        return False
    contents.update(rewritten)
    for record in [name for name in contents if name.count("/") == 1 and name.endswith(".dist-info/RECORD")]:
        contents[record] = wheelrecord.updated(contents[record], rewritten)
    temporary = wheel.with_name(f".{wheel.name}.rewrite")
    with zipfile.ZipFile(temporary, "w") as archive:
        for info in infos:
            archive.writestr(info, contents[info.filename])
    os.replace(temporary, wheel)
    return True


def _restore_sdist(sdist: Path, changes: Replacements) -> bool:
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
        contents = {
            member.name: extracted.read()
            for member in members
            if member.isfile() and _is_metadata(member.name)
            for extracted in [archive.extractfile(member)]
            if extracted is not None
        }
        rewritten = {name: _replaced(data, changes) for name, data in contents.items()}
        rewritten = {name: data for name, data in rewritten.items() if data != contents[name]}
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


def _is_metadata(name: str) -> bool:
    *_, directory, file = ["", *name.split("/")]
    return file == "PKG-INFO" or (file == "requires.txt" and directory.endswith(".egg-info"))
