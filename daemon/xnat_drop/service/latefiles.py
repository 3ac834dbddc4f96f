"""Files that arrive for a session this daemon delivered recently: the rest of a copy that was
still running when the first part was taken. The ledger keeps, per delivered session, digests
of its study and of its SOP instances (never the UIDs: nothing from a header goes out)."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator, Sequence

from xnat_drop.adapters.ledger import DIGEST_BYTES, Ledger
from xnat_drop.core import completeness
from xnat_drop.core.config import Config
from xnat_drop.core.model import FileFacts, Verdict, Violation


def record(ledger: Ledger, claim_id: str, verdict: Verdict, at: float) -> None:
    """Note what a session just delivered held, for `late_files` to compare with later."""
    study = _study(verdict.upload)
    if study:
        ledger.record_delivered(claim_id, at, _key(study), _digests(verdict.upload))


def late_files(
    ledger: Ledger, config: Config, claim_id: str, verdict: Verdict, arrived_at: float, now: float
) -> Violation | None:
    """The late-files violation when every file of `verdict` is a new instance of a study this
    daemon delivered, under the same labels, within the last watch.max_settle_seconds; None
    otherwise. `arrived_at` is when the files were first seen, `now` the time (wall clock)."""
    study, target = _study(verdict.upload), verdict.target
    if not study or target is None:
        return None
    labels = (target.project, target.subject, target.session)
    ours: frozenset[bytes] | None = None  # made only when this study was delivered lately
    for earlier in ledger.delivered_since(_key(study), now - config.watch.max_settle):
        if ours is None:
            ours = _instances(verdict.upload)
        if earlier.claim_id == claim_id or ours & earlier.instances:
            continue  # the same claim, or not only new instances (a re-drop, a mix)
        entry = ledger.entry(earlier.claim_id)
        if entry is None or (entry.project, entry.subject, entry.label) != labels:
            continue  # another session of the same study: XNAT's session-exists says it
        uri = entry.archive_uri or entry.prearchive_uri
        where = f"{config.xnat.url}{uri}" if uri else config.xnat.url
        return completeness.late_files(
            len(verdict.upload), arrived_at - earlier.at, earlier.at, where
        )
    return None


def _study(upload: Sequence[FileFacts]) -> str:
    studies = {f.header.study_instance_uid for f in upload if f.header is not None}
    return studies.pop() if len(studies) == 1 else ""


def _key(study: str) -> str:
    return hashlib.sha256(b"study\n" + study.encode()).hexdigest()[:32]


def _digests(upload: Sequence[FileFacts]) -> Iterator[bytes]:
    """The instances' digests, sorted, each once: what _instances holds. Sorted 256 buckets at
    a time (by the first byte), each bucket an array of 8 bytes a digest: no list or set of
    every instance at once."""
    assert DIGEST_BYTES == 8
    buckets = [array("Q") for _ in range(256)]
    for f in upload:
        if f.header is not None:
            value = int.from_bytes(_digest(f.header.sop_instance_uid), "big")
            buckets[value >> 56].append(value)
    for bucket in buckets:
        previous = -1
        for value in sorted(bucket):
            if value != previous:
                yield value.to_bytes(8, "big")
            previous = value


def _digest(uid: str) -> bytes:
    return hashlib.sha256(uid.encode()).digest()[:DIGEST_BYTES]


def _instances(upload: Sequence[FileFacts]) -> frozenset[bytes]:
    return frozenset(_digest(f.header.sop_instance_uid) for f in upload if f.header is not None)
