"""Venue fingerprints: a node refuses a peer whose venue differs, and says how.

Every node of a cluster folds the same ops with its own ``Venue``; two nodes with different rules
(a tick of 0.5 here and 1 there, another matching policy, another version of a hook) make different
books from the same ops, and nothing else would tell. So nodes compare.

Theory of operation
-------------------
Each node hashes ``Venue.describe()`` (canonical JSON) into an 8-byte fingerprint and sends it in
every membership ``Probe`` and ``Ack`` (they flow every probe period, in both modes) and, at its
first tick, in a ``VenueQuery`` (wire type 26) to every peer: a hello, so peers need not wait for
the probe schedule. A ``VenueQuery`` is answered with a ``VenueInfo`` (type 27): our fingerprint,
and our description only if the asker's fingerprint differs from ours.

``admit(peer)`` is the core's gate for everything but membership messages: a peer whose
fingerprint differs from ours is **refused** (``refused``; ``admit`` raises ``RemoteError`` with
reason ``venue_mismatch``, which the shell drops and counts), so none of its ops, gossip or
sequencer messages is taken from then on. It is asked for its description, and the difference becomes
  one notice for the log, ``refusing n3: venue differs: BTC-USD tick_size 0.5 here, 1 at n3``,
  once per peer and fingerprint. A peer that does not answer is asked again every
  ``query_interval_ns`` and, after ``MAX_QUERIES`` tries, named with the two fingerprints alone.
  A matching fingerprint later (the peer was fixed and restarted) admits it again.

Rules that hold:
- Pure: time is passed in; the shell only logs ``notices()``.
- Refusal does not wait for the description. A peer whose fingerprint we have not heard yet is
  admitted (refusing it would stall every start until probes flow): the hello is the first thing
  a node sends, before it can have taken an order (a fresh node is not ready until it has heard
  its peers), so a node with other rules is refused before its first op arrives, unless its
  hello is lost and a client order beats its first probe.
- Everything a peer can make us keep is bounded: per-peer state only for members (``Membership``
  refuses strangers before this sees them), descriptions at most ``MAX_DESCRIPTION`` bytes, notices
  at most ``MAX_NOTICES`` waiting, every peer string in a notice cut to ``MAX_FIELD`` printable
  characters and a notice to ``MAX_PARTS`` differences; we answer a peer's queries at most once per
  half ``query_interval_ns`` (each kind of answer; more is counted, ``venue_queries_limited``).
- A description that is not what we sent (bad JSON, wrong shape, a hash that does not match the
  fingerprint) is counted (``venue_info_bad``) and the peer stays refused: nothing a peer sends can
  lift a refusal but a matching fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import RemoteError
from .instrument import Venue, canonical_json, fingerprint_of

FP_LEN = 8
MAX_DESCRIPTION = 60_000  # bytes of canonical JSON in one VenueInfo (a datagram holds 65,507)
MAX_QUERIES = 3  # unanswered queries before the refusal is logged with fingerprints alone
MAX_NOTICES = 64
MAX_FIELD = 80
MAX_PARTS = 6
SECOND = 1_000_000_000

#: instrument rules in the order a difference names them
RULES = ("tick_size", "lot_size", "min_price", "max_price", "max_qty_lots", "stp", "matching")


# ---- messages (wire types 26 and 27) ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VenueQuery:
    """"My venue's fingerprint is ``fingerprint``; what is yours?" (a hello at start, and the
    question after a difference)."""

    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class VenueInfo:
    """The answer: the sender's fingerprint and, when the asker's differs, its canonical description
    (``description_blob``; b"" when the fingerprints are equal)."""

    fingerprint: bytes
    description: bytes


# ---- descriptions ------------------------------------------------------------------------------------
def description_blob(desc: dict[str, Any]) -> bytes:
    """``desc`` as sent in a ``VenueInfo``: canonical JSON, or, when that passes ``MAX_DESCRIPTION``
    (thousands of instruments), the venue and hooks with one digest in place of the instruments."""
    blob = canonical_json(desc)
    if len(blob) <= MAX_DESCRIPTION:
        return blob
    inst = desc["instruments"]
    short = {"venue": desc["venue"], "hooks": desc["hooks"], "instruments": {},
             "instruments_digest": fingerprint_of(canonical_json(inst)).hex(), "instrument_count": len(inst)}
    return canonical_json(short)[:MAX_DESCRIPTION]


def _is_str_map(v: Any, values: tuple[type, ...]) -> bool:
    return type(v) is dict and all(type(k) is str and type(x) in values for k, x in v.items())


def parse_description(blob: bytes, fingerprint: bytes) -> dict[str, Any] | None:
    """A peer's description, or None when it is not one (bad JSON, wrong shape, or a full
    description whose hash is not ``fingerprint``)."""
    try:
        d = json.loads(blob)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    if type(d) is not dict or not _is_str_map(d.get("venue"), (str,)):
        return None
    hooks, inst = d.get("hooks"), d.get("instruments")
    if type(hooks) is not dict or not all(type(k) is str and _is_str_map(h, (str,)) for k, h in hooks.items()):
        return None
    if type(inst) is not dict or not all(type(k) is str and _is_str_map(r, (str, int)) for k, r in inst.items()):
        return None
    if "instruments_digest" in d:
        if type(d["instruments_digest"]) is not str or type(d.get("instrument_count")) is not int:
            return None
    elif fingerprint_of(blob) != fingerprint:
        return None
    return d


def _clean(v: Any) -> str:
    """A peer's value, safe for one log line: printable, at most ``MAX_FIELD`` characters."""
    s = "none" if v is None else str(v)
    s = "".join(c if c.isprintable() else "?" for c in s[:MAX_FIELD + 1])
    return s if len(s) <= MAX_FIELD else s[:MAX_FIELD - 3] + "..."


def _named(d: Any) -> str:
    if not isinstance(d, dict):
        return "none"
    name, version = _clean(d.get("name")), _clean(d.get("version", ""))
    return f"{name} v{version}" if version else name


def venue_diff(mine: dict[str, Any], theirs: dict[str, Any], peer: str) -> str:
    """How ``theirs`` (``peer``'s description) differs from ``mine``, as a short phrase for one log
    line: ``"BTC-USD tick_size 0.5 here, 1 at n3; ..."``. Both are ``Venue.describe()`` shapes."""
    p = _clean(peer)
    parts: list[str] = []
    if mine.get("venue") != theirs.get("venue"):
        parts.append(f"venue {_named(mine.get('venue'))} here, {_named(theirs.get('venue'))} at {p}")
    mh, th = mine.get("hooks", {}), theirs.get("hooks", {})
    for h in sorted(set(mh) | set(th)):
        if mh.get(h) != th.get(h):
            parts.append(f"{_clean(h)} hook {_named(mh.get(h))} here, {_named(th.get(h))} at {p}")
    mi, ti = mine.get("instruments", {}), theirs.get("instruments", {})
    if "instruments_digest" in theirs:
        ours = fingerprint_of(canonical_json(mi)).hex()
        if ours != theirs["instruments_digest"]:
            parts.append(f"instruments differ ({len(mi)} here, {_clean(theirs.get('instrument_count'))} at {p}, "
                         f"too many to list)")
    else:
        for sym in sorted(set(mi) | set(ti)):
            if sym not in ti:
                parts.append(f"{_clean(sym)} traded here, not at {p}")
            elif sym not in mi:
                parts.append(f"{_clean(sym)} traded at {p}, not here")
            else:
                a, b = mi[sym], ti[sym]
                for k in [*RULES, *sorted((set(a) | set(b)) - set(RULES))]:
                    if a.get(k) != b.get(k):
                        parts.append(f"{_clean(sym)} {_clean(k)} {_clean(a.get(k))} here, {_clean(b.get(k))} at {p}")
    if not parts:
        return "the descriptions differ in a way this version cannot name"
    more = len(parts) - MAX_PARTS
    return "; ".join(parts[:MAX_PARTS]) + (f"; and {more} more" if more > 0 else "")


# ---- the state machine ------------------------------------------------------------------------------
class VenueCheck:
    """This node's side of the comparison, fed by ``Membership`` (see the module header)."""

    def __init__(self, node_id: str, venue: Venue | None, query_interval_ns: int = SECOND) -> None:
        self.node_id = node_id
        self.query_interval_ns = query_interval_ns
        #: None: no venue given, nothing is compared (a bare membership, as in its own tests)
        self.description: dict[str, Any] | None = None
        self.blob = b""
        self.fingerprint = b""
        if venue is not None:
            self.description = venue.describe()
            self.fingerprint = fingerprint_of(canonical_json(self.description))
            self.blob = description_blob(self.description)
        #: refused peers -> the difference (fingerprints alone until the peer described its venue)
        self.refused: dict[str, str] = {}
        self._seen: dict[str, bytes] = {}  # peer -> the fingerprint it last sent
        self._asked: dict[str, list[int]] = {}  # refused peer -> [next query time, queries sent]
        self._described: dict[str, bytes] = {}  # peer -> the fingerprint whose difference was logged
        self._answered: dict[tuple[str, bool], int] = {}  # (peer, with description) -> when we last answered
        self._out: list[tuple[str, Any]] = []
        self._notices: list[str] = []
        self.counters: dict[str, int] = {"venue_mismatch": 0,
                                         "venue_refusals": 0, "venue_accepted": 0, "venue_queries": 0,
                                         "venue_infos_sent": 0, "venue_queries_limited": 0,
                                         "venue_info_bad": 0, "venue_info_unasked": 0, "venue_notices_dropped": 0}

    # ---- inputs ------------------------------------------------------------------------------------
    def hello(self, peers: list[str], now: int) -> None:
        """Tell every peer our fingerprint (the membership's first tick)."""
        if self.fingerprint:
            for p in peers:
                self._out.append((p, VenueQuery(self.fingerprint)))

    def admit(self, peer: str) -> bool:
        """Whether the core may take a (non-membership) message from ``peer``: a refused peer
        raises ``RemoteError`` (reason ``venue_mismatch``: the shell drops and counts it); any
        other is admitted (True)."""
        if peer in self.refused:
            self.counters["venue_mismatch"] += 1
            raise RemoteError(f"message from {_clean(peer)}, whose venue differs", reason="venue_mismatch")
        return True

    def observe(self, peer: str, fp: bytes, now: int) -> None:
        """``peer`` (a member) says its venue fingerprint is ``fp`` (b"": it compares nothing)."""
        if not self.fingerprint or type(fp) is not bytes or len(fp) != FP_LEN:
            return
        if fp == self.fingerprint:
            self._seen[peer] = fp
            if self.refused.pop(peer, None) is not None:
                self._asked.pop(peer, None)
                self._described.pop(peer, None)
                self.counters["venue_accepted"] += 1
                self._notice(f"accepting {_clean(peer)}: its venue matches now ({fp.hex()})")
            return
        if self._seen.get(peer) != fp:  # a new difference: the first, or the peer restarted with another
            self._seen[peer] = fp
            if peer not in self.refused:
                self.counters["venue_refusals"] += 1
            self.refused[peer] = self._by_fingerprint(peer, fp)
            self._described.pop(peer, None)
            self._asked[peer] = [now, 0]
        self._ask(peer, fp, now)

    def receive(self, msg: VenueQuery | VenueInfo, peer: str, now: int) -> None:
        """A ``VenueQuery`` or ``VenueInfo`` from member ``peer``."""
        if not self.fingerprint:
            return
        self.observe(peer, msg.fingerprint, now)  # a query or an answer names the sender's venue too
        if type(msg) is VenueQuery:
            full = msg.fingerprint != self.fingerprint  # a matching asker needs no description
            last = self._answered.get((peer, full))
            if last is not None and now - last < self.query_interval_ns // 2:
                self.counters["venue_queries_limited"] += 1
                return
            self._answered[(peer, full)] = now
            self.counters["venue_infos_sent"] += 1
            self._out.append((peer, VenueInfo(self.fingerprint, self.blob if full else b"")))
            return
        if not msg.description:
            return  # "mine is <fingerprint>": observed above
        if peer not in self.refused or self._seen.get(peer) != msg.fingerprint:
            self.counters["venue_info_unasked"] += 1  # its venue matches ours, or it changed since
            return
        if self._described.get(peer) == msg.fingerprint:
            return  # said once already
        theirs = parse_description(msg.description, msg.fingerprint)
        if theirs is None:
            self.counters["venue_info_bad"] += 1
            return
        assert self.description is not None
        diff = venue_diff(self.description, theirs, peer)
        self.refused[peer] = diff
        self._described[peer] = msg.fingerprint
        self._notice(f"refusing {_clean(peer)}: venue differs: {diff}")

    # ---- outputs -----------------------------------------------------------------------------------
    def outbox(self) -> list[tuple[str, Any]]:
        out, self._out = self._out, []
        return out

    def notices(self) -> list[str]:
        """Log lines since the last call (a refusal with its difference, an acceptance)."""
        out, self._notices = self._notices, []
        return out

    def status(self) -> dict[str, Any]:
        """What ``status`` shows: our fingerprint and each refused peer with the difference."""
        return {"fingerprint": self.fingerprint.hex(), "refused": dict(sorted(self.refused.items()))}

    # ---- internals ---------------------------------------------------------------------------------
    def _by_fingerprint(self, peer: str, fp: bytes) -> str:
        return f"fingerprint {self.fingerprint.hex()} here, {fp.hex()} at {_clean(peer)}"

    def _ask(self, peer: str, fp: bytes, now: int) -> None:
        if peer in self._described:
            return
        asked = self._asked[peer]
        if now < asked[0]:
            return
        if asked[1] == MAX_QUERIES:  # no answer yet: say what we know
            self._notice(f"refusing {_clean(peer)}: venue differs: {self._by_fingerprint(peer, fp)} "
                         f"(it has not described its venue)")
        asked[0], asked[1] = now + self.query_interval_ns, asked[1] + 1
        self.counters["venue_queries"] += 1
        self._out.append((peer, VenueQuery(self.fingerprint)))

    def _notice(self, line: str) -> None:
        if len(self._notices) >= MAX_NOTICES:
            self.counters["venue_notices_dropped"] += 1
            return
        self._notices.append(line)
