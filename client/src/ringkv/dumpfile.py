"""The `ringkv dump` format: one JSON object a line, what the store holds per key.

    {"key": "user:42", "value": "YW5u", "version": "117657220114219008@node-0"}
    {"key": "session:9", "value": "eA==", "version": "...@node-1", "expires_ms": 1767225600000}
    {"key": "old", "deleted": true, "version": "117657220114219999@node-2"}

- `value` is base64 (values are bytes);
- `expires_ms` is the absolute expiry in unix milliseconds, present only for
  a key with a TTL: a load keeps that moment, so a key dumped with 4 s to
  live does not live forever after the load, and one already expired is not
  loaded at all;
- `deleted` records a key deleted within the cluster's tombstone grace
  period (`dump --deleted`); loading it deletes the key in the target, so a
  load over a cluster that holds older copies leaves it as the source was;
- `version` is the record's version (`<hlc>@<member>`, design §7.1). A load
  writes with new versions (the load is the newest writer); the version is
  kept for tools and for backups, which build on these records.

Older dumps (`key` and `value` only) load as they always did. Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ringkv.keys import encode_key

__all__ = ["DumpRecord", "parse", "to_line"]


@dataclass(frozen=True, slots=True)
class DumpRecord:
    key: str
    value: bytes = b""
    version: str | None = None
    expires_ms: int | None = None
    deleted: bool = False

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms is not None and self.expires_ms <= now_ms


def to_line(rec: DumpRecord) -> str:
    doc: dict[str, object] = {"key": rec.key}
    if rec.deleted:
        doc["deleted"] = True
    else:
        doc["value"] = base64.b64encode(rec.value).decode()
    if rec.version is not None:
        doc["version"] = rec.version
    if rec.expires_ms is not None:
        doc["expires_ms"] = rec.expires_ms
    return json.dumps(doc, ensure_ascii=False) + "\n"


def _record(doc: object) -> DumpRecord:
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    key = doc.get("key")
    if not isinstance(key, str):
        raise ValueError('"key" must be a string')
    encode_key(key)  # InvalidKeyError (a ValueError) here, with the line's number
    version = doc.get("version")
    if version is not None and not isinstance(version, str):
        raise ValueError('"version" must be a string')
    if doc.get("deleted") is True:
        return DumpRecord(key, version=version, deleted=True)
    value = doc.get("value")
    if not isinstance(value, str):
        raise ValueError('"value" must be a base64 string')
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or a character that is not ASCII
        raise ValueError('"value" is not valid base64') from None
    expires = doc.get("expires_ms")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int) or not 0 < expires < 1 << 63
    ):
        raise ValueError('"expires_ms" must be unix time in milliseconds')
    return DumpRecord(key, raw, version, expires)


def parse(lines: Iterable[str]) -> Iterator[DumpRecord]:
    """The records of a dump; a line that is not one raises ValueError naming it."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield _record(json.loads(line))
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise ValueError(f"line {n}: not a ringkv dump record ({exc})") from None
