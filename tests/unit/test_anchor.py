"""The anchor file: signed, linked lines; any edit, removal or foreign key is refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from eventstore.anchor import (
    AnchorError,
    AnchorPaths,
    AnchorState,
    append_line,
    locked_anchor,
    public_key,
    read_anchor,
    read_new,
    signed_line,
    signing_key,
)


def paths(tmp_path: Path) -> AnchorPaths:
    return AnchorPaths(tmp_path / "k" / "c.key", tmp_path / "k" / "c.pub", tmp_path / "a.jsonl")


def write_lines(p: AnchorPaths, count: int) -> list[uuid.UUID]:
    key = signing_key(p)
    state = AnchorState(keep_events=False)
    streams = [uuid.uuid4() for _ in range(count)]
    with locked_anchor(p) as handle:
        read_new(state, handle, key.public_key())
        for n, stream_id in enumerate(streams):
            entries = [(stream_id, 1, uuid.uuid4(), bytes([n]) * 32)]
            totals = {"s": (len(state.heads.get("s", {})) + 1, state.events("s") + 1)}
            line = signed_line(key, state, f"t{n}", {"s": entries}, totals)
            append_line(handle, state, line, key.public_key())
    return streams


def test_lines_fold_into_heads_and_events(tmp_path: Path) -> None:
    p = paths(tmp_path)
    assert read_anchor(p) is None
    streams = write_lines(p, 3)
    state = read_anchor(p)
    assert state is not None and state.lines == 3 and state.events("s") == 3
    assert [len(state.stream("s", s)) for s in streams] == [1, 1, 1]
    assert (p.private_key.stat().st_mode & 0o777) == 0o600
    assert signing_key(p).public_key() == public_key(p)  # the key is reused, not replaced


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: [lines[0], lines[2]], "out of sequence"),
        (lambda lines: [lines[0], lines[1].replace(b'"t1"', b'"t9"'), lines[2]], "signature"),
    ],
)
def test_an_altered_anchor_is_refused(tmp_path: Path, damage: object, message: str) -> None:
    p = paths(tmp_path)
    write_lines(p, 3)
    lines = p.anchor.read_bytes().splitlines(keepends=True)
    p.anchor.write_bytes(b"".join(damage(lines)))  # type: ignore[operator]
    with pytest.raises(AnchorError, match=message):
        read_anchor(p)


def test_lines_signed_by_another_key_are_refused(tmp_path: Path) -> None:
    p = paths(tmp_path)
    write_lines(p, 1)
    p.private_key.unlink()
    p.public_key.unlink()
    signing_key(p)  # a new key pair: the old lines no longer verify
    with pytest.raises(AnchorError, match="signature"):
        read_anchor(p)


def test_a_line_torn_by_a_killed_writer_is_ignored_then_cut_off(tmp_path: Path) -> None:
    p = paths(tmp_path)
    write_lines(p, 2)
    whole = p.anchor.read_bytes()
    p.anchor.write_bytes(whole + b'{"format":"referralnet-anch')  # kill -9 mid-write
    state = read_anchor(p)
    assert state is not None and state.lines == 2 and state.torn_tail
    write_lines(p, 1)  # the next writer cuts the torn tail off and goes on
    state = read_anchor(p)
    assert state is not None and state.lines == 3 and not state.torn_tail
