"""Strong mode on disk: sequencer deltas in the segment log, recovery, compaction, mixed-mode refusal."""

from __future__ import annotations

import os
import random
import tomllib

import pytest

from gossipbook.config import from_dict, render
from gossipbook.core.errors import UsageError
from gossipbook.core.instrument import Venue
from gossipbook.core.ops import NEW, Op
from gossipbook.core.sequencer import Entry, PersistDelta, PersistentState, apply_delta
from gossipbook.core.strong import SequencedBooks, StrongConfig, StrongNodeCore
from gossipbook.core.wire import ClientSubmit
from gossipbook.node.runner import NodeRunner
from gossipbook.node.storage import Storage


def _op(i: int) -> Op:
    return Op(10**18 + i, 0, "n1", i, NEW, "GBX", "", i % 2, 10_000 + i % 3, 1 + i % 4, 0, f"r{i}")


def _snap(index: int) -> bytes:
    """A real (empty-book) strong-mode snapshot at ``index``: recovery decodes the one it ends with."""
    b = SequencedBooks(Venue())
    b.index = index
    return b.to_bytes()


def _segments(path) -> list[str]:
    return sorted(f for f in os.listdir(path) if f.startswith("seg-"))


def test_deltas_round_trip_and_fold_like_apply_delta(tmp_path):
    rng = random.Random(3)
    s = Storage.open(tmp_path, "n1")
    want = PersistentState()
    last = 0
    for k in range(60):  # appends, truncations, votes, in one or several records per write
        first = max(1, last + 1 - (rng.randint(0, 3) if rng.random() < 0.2 else 0))
        entries = tuple(Entry(1 + k // 10, None if rng.random() < 0.1 else _op(first + j))
                        for j in range(rng.randint(0, 4)))
        d = PersistDelta(1 + k // 10, rng.choice([None, "n1", "n2"]), first, entries, 0, 0, None, first - 1)
        want = apply_delta(want, d)
        last = first + len(entries) - 1
        s.persist_sequencer([d], PersistentState)  # (no snapshot here: the full state is never asked for)
    s.close()
    got = Storage.open(tmp_path, "n1").recover_sequencer()
    assert got is not None
    assert (got.term, got.voted_for, got.entries) == (want.term, want.voted_for, want.entries)


def test_a_snapshot_rewrites_the_state_into_a_new_segment_and_drops_the_old(tmp_path):
    s = Storage.open(tmp_path, "n1")
    entries = tuple(Entry(1, _op(i)) for i in range(1, 21))
    s.persist_sequencer([PersistDelta(1, "n1", 1, entries, 0, 0, None, 20)], lambda: PersistentState())
    before = _segments(tmp_path)
    full = PersistentState(1, "n1", entries[10:], 10, 1, _snap(10), 20)
    s.persist_sequencer([PersistDelta(1, "n1", 21, (), 10, 1, _snap(10), 20)], lambda: full)
    after = _segments(tmp_path)
    assert len(after) == 1 and after[0] not in before
    s.close()
    got = Storage.open(tmp_path, "n1").recover_sequencer()
    assert got == full


def test_a_node_restarts_from_its_sequencer_state_to_the_same_books(tmp_path):
    # one node alone is its own majority: it leads, commits, compacts, and comes back the same
    cfg = StrongConfig(compact_every=8)
    s = Storage.open(tmp_path, "n1")
    core = StrongNodeCore("n1", ["n1"], config=cfg)
    now = 10**18
    core.tick(now)
    while core.seq.role != "leader":
        now = core.next_deadline()
        core.tick(now)
    for i in range(30):
        core.receive(ClientSubmit(f"q{i}", NEW, "GBX", "", i % 2, 10_000 + i % 5, 3, 0, 0, 1000), "c", ("h", 1), now)
        d = core.take_persist()
        if d is not None:
            s.persist_sequencer([d], core.seq.persistent_state)
        core.outbox()
        now += 1_000_000
    assert core.seq.snapshot_index > 0 and core.replica.index == core.seq.commit_index
    s.close()
    s2 = Storage.open(tmp_path, "n1")
    again = StrongNodeCore("n1", ["n1"], config=cfg, persisted=s2.recover_sequencer())
    assert (again.replica.index, again.replica.digest()) == (core.replica.index, core.replica.digest())
    assert again.replica.reqs == core.replica.reqs
    assert all(core._replies[f"/q{i}"].code == 0 for i in range(30))  # each acknowledged (at once: a majority of one)


def test_a_data_dir_of_one_mode_is_refused_by_the_other(tmp_path):
    text = render(1, 7000, mode="strong")
    cfg = from_dict(tomllib.loads(text), "c.toml")
    s = Storage.open(tmp_path / "d", "n1")
    s.persist([_op(1)], __import__("gossipbook.core.hlc", fromlist=["Timestamp"]).Timestamp(10**18, 0), 1)
    with pytest.raises(UsageError, match="eventual-mode ops"):
        NodeRunner(cfg, "n1", storage=s)
    s.close()
    s = Storage.open(tmp_path / "e", "n1")
    s.persist_sequencer([PersistDelta(1, "n1", 1, (Entry(1, None),), 0, 0, None, 1)], PersistentState)
    cfg.mode = "eventual"
    with pytest.raises(UsageError, match="strong-mode state"):
        NodeRunner(cfg, "n1", storage=s)
    s.close()


def test_a_full_disk_turns_acks_into_storage_errors_and_sends_no_sequencer_message(tmp_path, monkeypatch):
    import errno

    from gossipbook.core.node import E_STORAGE
    from gossipbook.core.sequencer import AppendEntries
    from gossipbook.node import storage as storage_mod

    cfg = from_dict(tomllib.loads(render(1, 7000, mode="strong")), "c.toml")
    runner = NodeRunner(cfg, "n1", storage=Storage.open(tmp_path, "n1"), seed=1)
    core = runner.core
    now = 10**18
    core.tick(now)
    while core.seq.role != "leader":
        now = core.next_deadline()
        core.tick(now)
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(storage_mod.os, "write", full)
    core.receive(ClientSubmit("q1", NEW, "GBX", "", 0, 10_000, 1, 0, 0, 1000), "c", ("h", 1), now)
    fake_append = ("n2", AppendEntries(core.seq.term, 0, 0, 0))  # stands for what a peer would get
    out = runner._persist_strong(core.outbox() + [fake_append])
    assert [(m.code, "storage unavailable" in m.message) for _d, m in out] == [(E_STORAGE, True)]
    assert not core.accepting
    core.receive(ClientSubmit("q2", NEW, "GBX", "", 0, 10_000, 1, 0, 0, 1000), "c", ("h", 1), now)
    assert [m.code for _d, m in runner._persist_strong(core.outbox())] == [E_STORAGE]  # no new appends
    monkeypatch.setattr(storage_mod.os, "write", real_write)
    assert runner._persist_strong([]) == [] and core.accepting  # the retried write went through
    runner.storage.close()
    st = Storage.open(tmp_path, "n1").recover_sequencer()
    assert [e.value.req for e in st.entries if e.value is not None] == ["q1"]


def test_handed_over_request_ids_survive_a_restart_and_a_compaction(tmp_path):
    s = Storage.open(tmp_path, "n1")
    s.persist_sequencer([], PersistentState, ["r1", "r2"])  # handed ids alone are written too
    s.persist_sequencer([PersistDelta(1, "n1", 1, (Entry(1, _op(1)),), 0, 0, None, 1)], PersistentState, ["r3"])
    s.close()
    s = Storage.open(tmp_path, "n1")
    assert s.handed == ["r1", "r2", "r3"]
    full = PersistentState(1, "n1", (), 1, 1, _snap(1), 1)
    s.persist_sequencer([PersistDelta(1, "n1", 2, (), 1, 1, _snap(1), 1)], lambda: full, ["r4"])
    s.close()
    assert len(_segments(tmp_path)) == 1  # the old segments went: the ids were rewritten with the state
    again = Storage.open(tmp_path, "n1")
    assert again.handed == ["r1", "r2", "r3", "r4"] and again.recover_sequencer() == full


def test_a_restarted_node_never_says_no_quorum_for_a_request_it_had_handed_over():
    """A follower relays r to the leader and crashes; the client retries r into the restarted node,
    which knows no leader. Its earlier life's relay may still commit, so the answer must not be
    "no quorum" (nothing submitted) but a timeout (outcome unknown). A request it never handed over
    is refused as before."""
    from gossipbook.core.node import E_NO_QUORUM, E_TIMEOUT, Client

    ids = ["n1", "n2", "n3"]
    t = 10**18
    submit = ClientSubmit("r", NEW, "GBX", "", 0, 10_000, 1, 0, 0, 1000)
    other = ClientSubmit("q", NEW, "GBX", "", 0, 10_000, 1, 0, 0, 1000)
    first = StrongNodeCore("n2", ids, rng=random.Random(1))
    first.seq._leader = "n1"  # as if n1's AppendEntries had arrived: n2 follows n1
    first.receive(submit, "client-1", ("127.0.0.1", 9), t)
    assert any(type(m).__name__ == "Forward" for _d, m in first.outbox())
    handed = first.take_handed()
    assert handed == ["/r"] and first.take_handed() == []  # scoped to its account (here "")
    again = StrongNodeCore("n2", ids, rng=random.Random(2), handed=handed)
    for msg in (submit, other):
        again.receive(msg, "client-1", ("127.0.0.1", 9), t)
    codes = {}
    now = t
    while len(codes) < 2:
        now = max(now + 1, again.next_deadline())
        again.tick(now)
        for dst, m in again.outbox():
            if isinstance(dst, Client):
                codes[m.req] = m.code
    assert codes == {"r": E_TIMEOUT, "q": E_NO_QUORUM}
