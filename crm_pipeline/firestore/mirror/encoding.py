"""Mirror documents encoded straight into Firestore `Write` protobufs (the hot path of a sync)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.cloud import firestore
from google.cloud.firestore_v1.types import common as common_types
from google.cloud.firestore_v1.types import document as document_types
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.cloud.firestore_v1.types import write as write_types
from google.protobuf import timestamp_pb2

if TYPE_CHECKING:
    from crm_pipeline.firestore.mirror.writer import FirestoreWrite

# A precondition no document can meet: used to make injected failures real server rejections.
_IMPOSSIBLE_UPDATE_TIME = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The client's own WriteBatch.set() builds proto-plus wrappers value by value, which costs about
# 160 us per document and made Python, not Firestore, the bottleneck of a first sync. We encode
# straight into the generated (upb, C) protobuf classes and send the request through the
# client's own gapic API object, channel, metadata and retry policy.
_Value = document_types.Value.pb()
_MapValue = document_types.MapValue.pb()
_ArrayValue = document_types.ArrayValue.pb()
_Document = document_types.Document.pb()
_WritePb = write_types.Write.pb()
_FieldTransform = write_types.DocumentTransform.FieldTransform.pb()
_Precondition = common_types.Precondition.pb()
_TimestampPb = timestamp_pb2.Timestamp
_BatchWriteRequest = firestore_types.BatchWriteRequest
_REQUEST_TIME = write_types.DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME
_NULL = _Value(null_value=0)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        raise TypeError("naive datetime in a mirror document; timestamps must be UTC-aware")
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return _TimestampPb(seconds=seconds, nanos=delta.microseconds * 1000)


def encode_value(value: Any) -> Any:
    """A Python value as a Firestore `Value` protobuf (the types a mirror document holds)."""
    kind = type(value)
    if value is None:
        return _NULL
    if kind is str:
        return _Value(string_value=value)
    if kind is bool:
        return _Value(boolean_value=value)
    if kind is int:
        return _Value(integer_value=value)
    if kind is float:
        return _Value(double_value=value)
    if kind is dict:
        return _Value(map_value=_MapValue(fields=encode_fields(value)))
    if kind is list:
        return _Value(array_value=_ArrayValue(values=[encode_value(v) for v in value]))
    if isinstance(value, datetime):
        return _Value(timestamp_value=_timestamp(value))
    raise TypeError(f"cannot store {kind.__name__} in a mirror document")


def encode_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {key: encode_value(item) for key, item in data.items()}


def write_protobuf(prefix: str, write: FirestoreWrite, fail: bool) -> Any:
    """The `Write` protobuf for a set (server timestamps become transforms) or delete.

    `prefix` is `projects/P/databases/D/documents/`; `fail` adds a precondition no document
    meets (failure injection through the real server).
    """
    name = prefix + "/".join(write.path)
    precondition = _Precondition(update_time=_timestamp(_IMPOSSIBLE_UPDATE_TIME)) if fail else None
    if write.kind == "delete":
        return _WritePb(delete=name, current_document=precondition)
    data = dict(write.data or {})
    transforms = [
        _FieldTransform(field_path=key, set_to_server_value=_REQUEST_TIME)
        for key in [k for k, v in data.items() if v is firestore.SERVER_TIMESTAMP]
    ]
    for transform in transforms:
        del data[transform.field_path]
    return _WritePb(
        update=_Document(name=name, fields=encode_fields(data)),
        update_transforms=transforms,
        current_document=precondition,
    )
