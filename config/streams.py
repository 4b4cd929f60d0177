"""Every Redis stream entry Lectern writes, as a msgspec Struct, encoded and decoded here.

A stream entry is a map of fields. Each entry kind below is a Struct whose field names (after
``rename``) are the stream's field names; :class:`EntryCodec` turns a Struct into fields and
back, and is the only code that reads or writes these fields (the Lua scripts of
gateway/publish.py and workers/jobs.py write :class:`BusEntry` and :class:`JobEntry` fields by
these same names; tests/unit/test_streams.py checks that they match).

Encoding, by the annotated type of a field: ``str`` is UTF-8 text, ``int`` decimal text,
``bool`` ``1``/``0``, ``bytes`` stored as is; any other type is JSON.

One entry kind, :class:`Reply`, is instead one JSON document in a single field (``r``):
:class:`JsonEntryCodec`, one typed msgspec decode, because a gateway decodes one for every
command it relays and the field map would cost it several times as much.

Decoding validates types and constraints and raises :class:`BadEntry` for anything malformed
(missing field, wrong type, bad UTF-8 or JSON). A reader drops and counts such an entry: no
entry can stop a reader loop.

Evolution (msgspec's schema-evolution rule): a new field gets a default; a field is never
retyped, renamed or removed. Processes of two versions then share a stream during a deploy.

============  =========================  ===================================================
entry         stream (config/keys.py)    written by / read by
============  =========================  ===================================================
BusEntry      ``bus_key(shard)``         publish (Lua) / every gateway's bus reader
Command       ``CMD_STREAM``             gateway command relay / workers' command consumer
Reply         ``reply_key(gateway)``     command consumer / the sending gateway
Presence      ``PRESENCE_STREAM``        gateway presence writer / attendance worker
Revocation    ``REVOKE_STREAM``          API logout and revocation / every gateway
RightsLost    ``RIGHTS_STREAM``          API unenroll, cohort delete / every gateway
JobEntry      ``job_stream(queue)``      enqueue, retry mover (Lua) / job runners
DeadLetter    ``dead_letter_stream(q)``  job runners / operators, ``replay_dead_letters``
============  =========================  ===================================================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from config import topics

T = TypeVar("T", bound=msgspec.Struct)
T_co = TypeVar("T_co", bound=msgspec.Struct, covariant=True)


class BadEntry(Exception):
    """A stream entry that does not decode into its Struct (the message names the kind)."""


# -- entries ----------------------------------------------------------------------------------


class BusEntry(
    msgspec.Struct,
    frozen=True,
    gc=False,
    rename={"topic": "p", "id": "i", "type": "t", "json": "d", "msgpack": "m"},
):
    """An event announced on a bus shard: its topic, event ID, type and the encoded bodies."""

    topic: str
    id: str
    type: str
    json: bytes
    msgpack: bytes


class Command(msgspec.Struct, frozen=True, gc=False, rename={"gateway": "gw", "ts_ms": "ts"}):
    """A client command, stamped by the gateway with who sent it (never trusted from ``data``).

    ``staff`` is whether the sender is staff of the topic's cohort (admins always are).
    """

    gateway: str
    conn: str
    ref: str
    name: str
    topic: str
    user: str
    role: str
    staff: bool
    data: dict[str, Any]
    ts_ms: int
    #: The command's entry ID in ``rt:cmd``, filled in by the consumer when it reads the entry
    #: (Redis assigns it; the gateway writes it empty). The same on every redelivery, so it is
    #: the idempotency key of the command's effects (workers/live_once.py).
    id: str = ""

    @property
    def cohort(self) -> str:
        parsed = topics.parse(self.topic)
        return parsed.cohort if parsed is not None else ""

    @property
    def session(self) -> str:
        parsed = topics.parse(self.topic)
        return parsed.session if parsed is not None else ""


class Reply(msgspec.Struct, frozen=True, gc=False):
    """The one answer to a command, sent to the stream of the gateway that relayed it."""

    conn: str
    ref: str
    ok: bool
    data: Any = None
    code: str = ""
    message: str = ""


class LeasedSub(msgspec.Struct, frozen=True, array_like=True):
    """One open subscription in a gateway lease's index (``keys.presence_subs_key``): what a
    synthesized leave needs when the gateway dies (workers/presence_leases.py)."""

    topic: str
    user: str
    #: When it started (ms): a leave is never dated before its join.
    ts: int


LEASED_SUB_ENCODER = msgspec.json.Encoder()
LEASED_SUB_DECODER = msgspec.json.Decoder(LeasedSub)


class PresenceOp(enum.StrEnum):
    JOIN = "join"
    LEAVE = "leave"


class Presence(msgspec.Struct, frozen=True, gc=False):
    """A subscription to a ``live:`` topic started or ended.

    ``conn`` names one subscription (connection id and a sequence number), so a join and its
    leave pair up even when a connection re-subscribes.
    """

    op: PresenceOp
    user: str
    topic: str
    conn: str
    ts: int


class Revocation(msgspec.Struct, frozen=True, gc=False):
    """A login session was revoked: gateways close its connections."""

    sid: str


class RightsLost(msgspec.Struct, frozen=True, gc=False, rename={"at_ms": "at"}):
    """A user lost every right in a cohort at ``at_ms``: gateways close the connections whose
    token claims it and admit older tokens without it (gateway/rights.py)."""

    user: str
    cohort: str
    at_ms: int


class JobEntry(msgspec.Struct, frozen=True, gc=False, rename={"payload": "p", "attempts": "a"}):
    """A job: its JSON payload (decoded by the runner, so an undecodable one is dead-lettered
    with its bytes) and how many attempts already failed."""

    payload: bytes
    attempts: int = 0


class DeadLetter(
    msgspec.Struct, frozen=True, gc=False, rename={"payload": "p", "attempts": "a", "ts_ms": "ts"}
):
    """A job that will not run again: payload, attempts, its entry ID and the last error."""

    payload: bytes
    attempts: int
    id: str
    error: str
    ts_ms: int


# -- the codec --------------------------------------------------------------------------------

_PLAIN, _TEXT, _INT, _BOOL, _BYTES, _JSON = range(6)
_json_encoder = msgspec.json.Encoder()


def _kind(t: msgspec.inspect.Type) -> int:
    if isinstance(t, msgspec.inspect.StrType) and t == msgspec.inspect.StrType():
        return _PLAIN
    if isinstance(t, msgspec.inspect.StrType | msgspec.inspect.EnumType):
        return _TEXT
    if isinstance(t, msgspec.inspect.BoolType):
        return _BOOL
    if isinstance(t, msgspec.inspect.IntType):
        return _INT
    if isinstance(t, msgspec.inspect.BytesType):
        return _BYTES
    return _JSON


class EntryCodec(Generic[T]):
    """Encodes one entry kind to stream fields and decodes it back (see the module docstring)."""

    def __init__(self, type_: type[T]) -> None:
        self.type = type_
        info = msgspec.inspect.type_info(type_)
        assert isinstance(info, msgspec.inspect.StructType)
        #: (attribute, field name, field name as bytes, kind), in declaration order.
        self.fields = [
            (f.name, f.encode_name, f.encode_name.encode(), _kind(f.type)) for f in info.fields
        ]
        # Unconstrained text and bytes fields need no validation beyond being present and
        # UTF-8: such entries (the bus, read for every event) skip msgspec.convert.
        self._plain = all(
            k in (_PLAIN, _BYTES) and f.required
            for (*_, k), f in zip(self.fields, info.fields, strict=True)
        )

    @property
    def names(self) -> list[str]:
        """The stream field names, in declaration order."""
        return [name for _, name, _, _ in self.fields]

    def encode(self, entry: T) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {}
        for attr, name, _, kind in self.fields:
            value = getattr(entry, attr)
            if kind <= _TEXT or kind == _BYTES:
                out[name] = value
            elif kind == _BOOL:
                out[name] = "1" if value else "0"
            elif kind == _INT:
                out[name] = str(value)
            else:
                out[name] = _json_encoder.encode(value)
        return out

    def decode(self, fields: Mapping[bytes, bytes]) -> T:
        """The entry of ``fields`` (as read from Redis); :class:`BadEntry` when malformed."""
        if self._plain:
            try:
                return self.type(
                    *[
                        fields[key].decode() if kind == _PLAIN else fields[key]
                        for _, _, key, kind in self.fields
                    ]
                )
            except (KeyError, UnicodeDecodeError) as exc:
                raise BadEntry(f"malformed {self.type.__name__} entry") from exc
        values: dict[str, Any] = {}
        try:
            for _, name, key, kind in self.fields:
                raw = fields.get(key)
                if raw is None:
                    continue  # the Struct's default, or a missing-field error below
                if kind == _BYTES:
                    values[name] = raw
                elif kind == _JSON:
                    values[name] = msgspec.json.decode(raw)
                else:
                    values[name] = raw.decode()
            # strict=False reads int and bool fields from their text.
            return msgspec.convert(values, self.type, strict=False)
        except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadEntry(f"malformed {self.type.__name__} entry") from exc


class JsonEntryCodec(Generic[T]):
    """An entry kind stored as one JSON document in the field ``name``."""

    def __init__(self, type_: type[T], name: str) -> None:
        self.type = type_
        self.names = [name]
        self._key = name.encode()
        self._decoder = msgspec.json.Decoder(type_)

    def encode(self, entry: T) -> dict[str, str | bytes]:
        return {self.names[0]: _json_encoder.encode(entry)}

    def decode(self, fields: Mapping[bytes, bytes]) -> T:
        try:
            return self._decoder.decode(fields[self._key])
        except (KeyError, msgspec.DecodeError) as exc:
            raise BadEntry(f"malformed {self.type.__name__} entry") from exc


class Codec(Protocol[T_co]):
    """What readers need of either codec."""

    @property
    def type(self) -> type[T_co]: ...

    def decode(self, fields: Mapping[bytes, bytes]) -> T_co: ...


BUS = EntryCodec(BusEntry)


def decode_bus(fields: Mapping[bytes, bytes]) -> BusEntry:
    """``BUS.decode`` written out: every gateway runs it for every event, where the generic
    loop would cost a few microseconds more (tests/unit/test_streams.py checks they agree)."""
    try:
        return BusEntry(
            fields[b"p"].decode(),
            fields[b"i"].decode(),
            fields[b"t"].decode(),
            fields[b"d"],
            fields[b"m"],
        )
    except (KeyError, UnicodeDecodeError) as exc:
        raise BadEntry("malformed BusEntry entry") from exc


COMMAND = EntryCodec(Command)
REPLY = JsonEntryCodec(Reply, "r")
PRESENCE = EntryCodec(Presence)
REVOCATION = EntryCodec(Revocation)
RIGHTS_LOST = EntryCodec(RightsLost)
JOB = EntryCodec(JobEntry)
DEAD_LETTER = EntryCodec(DeadLetter)
