"""The callback record's history (fsctl.model.History): bounded, written as it is, and the
same whether it is kept as text or packed while a call waits. Pure."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from fsctl.model import HISTORY_MAX, Callback, History, Leg


def entry(i: int, **extra: object) -> dict[str, object]:
    return {"ts": 1700000000.0 + i / 10, "event": "leg", "leg": "AB"[i % 2], "state": "ringing",
            **extra}


def record() -> Callback:
    legs = {"A": Leg(to="1000123", from_="1000125", route="default", ring_timeout_s=30, uuid="a" * 36,
                     job_uuid="j" * 36),
            "B": Leg(to="1000125", from_="1000123", route="default", ring_timeout_s=30, uuid="b" * 36,
                     job_uuid="k" * 36)}
    return Callback(id="c" * 32, legs=legs, mode="sequential", first="A", created_at=0.0)


def test_entries_read_back_as_written_and_bounded() -> None:
    history = History()
    written = [entry(i) for i in range(HISTORY_MAX + 10)]
    for item in written:
        history.append(item)
    assert len(history) == HISTORY_MAX
    assert list(history) == written[-HISTORY_MAX:]
    assert history[0] == written[10] and history[-1] == written[-1]


def test_a_packed_history_reads_writes_and_grows_the_same() -> None:
    plain, packed = History(), History()
    for i in range(12):
        plain.append(entry(i))
        packed.append(entry(i))
    packed.pack()
    assert isinstance(packed._text, bytes) and len(packed._text) < len(plain._text) / 2
    assert list(packed) == list(plain) and len(packed) == len(plain)
    assert packed.fragment() is not None and packed.text == plain.text
    packed.append(entry(12))  # unpacked on the next entry
    plain.append(entry(12))
    assert isinstance(packed._text, str) and packed.text == plain.text
    packed.pack()
    packed.pack()  # packing twice changes nothing
    assert list(packed) == list(plain)


def test_the_record_is_the_same_json_packed_or_not() -> None:
    cb = record()
    for i in range(9):
        cb.note(1700000000.0 + i, "state", state="dialing", detail="é ☎ \"quoted\"")
    before = cb.to_json()
    cb.history.pack()
    assert cb.to_json() == before
    assert Callback.from_dict(json.loads(before)).to_json() == before


def test_packing_an_empty_history_keeps_it_empty() -> None:
    history = History()
    history.pack()
    assert list(history) == [] and len(history) == 0
    history.append(entry(0))
    assert list(history) == [entry(0)]


@given(st.lists(st.text(max_size=40), min_size=1, max_size=HISTORY_MAX + 5))
def test_any_text_survives_packing(texts: list[str]) -> None:
    plain, packed = History(), History()
    for i, text in enumerate(texts):
        plain.append(entry(i, text=text))
        packed.append(entry(i, text=text))
        if i % 3 == 0:
            packed.pack()
    packed.pack()
    assert list(packed) == list(plain)
    assert packed.text == plain.text
