"""parse_notification and sequencer_is_newer: AWS, MinIO webhook and listen bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.errors import Ai2TextError
from pipeline.sources.events import (
    MAX_OBJECT_BYTES,
    MalformedEvent,
    ObjectEvent,
    parse_notification,
    sequencer_is_newer,
)


def aws_record(
    key: str = "HappyFace.jpg",
    *,
    bucket: str = "mybucket",
    event_name: str = "ObjectCreated:Put",
    **obj: Any,
) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-west-2",
        "eventTime": "1970-01-01T00:00:00.000Z",
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, **obj},
        },
    }


def body(*records: dict[str, Any]) -> bytes:
    return json.dumps({"Records": list(records)}).encode()


AWS_SAMPLE = body(
    aws_record(
        "my+file%C3%A9.wav",
        bucket="b",
        size=123,
        eTag="abc",
        versionId="v1",
        sequencer="0055AED6DCD90281E5",
    )
)

MINIO_WEBHOOK = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "uploads/calls/my file+1.wav",
    "Records": [
        {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": "uploads", "arn": "arn:aws:s3:::uploads"},
                "object": {
                    "key": "calls%2Fmy+file%2B1.wav",
                    "size": 224662,
                    "eTag": "5fc7298143efe1276d39a3466d4e255f-1",
                    "contentType": "audio/wav",
                    "sequencer": "15CFEDF8D5304D1A",
                },
            },
        }
    ],
}


def reason_of(payload: Any, **kwargs: Any) -> str:
    with pytest.raises(MalformedEvent) as info:
        parse_notification(payload, **kwargs)
    return info.value.reason


# --- accepted shapes ---------------------------------------------------------------


def test_aws_sample_decodes_plus_as_space_and_percent_encoded_utf8() -> None:
    assert parse_notification(AWS_SAMPLE) == [
        ObjectEvent(
            bucket="b",
            key="my fileé.wav",
            event_name="ObjectCreated:Put",
            size=123,
            etag="abc",
            version_id="v1",
            sequencer="0055AED6DCD90281E5",
        )
    ]


def test_literal_plus_sent_as_percent_2b_decodes_to_plus() -> None:
    (event,) = parse_notification(body(aws_record("a%2Bb.wav")))
    assert event.key == "a+b.wav"


@pytest.mark.parametrize(
    ("sent", "decoded"),
    [
        ("red+flower.jpg", "red flower.jpg"),
        ("dir%2Fsub%2Fx.wav", "dir/sub/x.wav"),
        ("dir/sub/x.wav", "dir/sub/x.wav"),
        ("%E6%97%A5%E6%9C%AC%E8%AA%9E.flac", "日本語.flac"),
        ("100%25+done.mp3", "100% done.mp3"),
    ],
)
def test_keys_are_form_url_decoded_exactly(sent: str, decoded: str) -> None:
    (event,) = parse_notification(body(aws_record(sent)))
    assert event.key == decoded


def test_created_event_reports_is_created() -> None:
    (event,) = parse_notification(AWS_SAMPLE)
    assert event.is_created


def test_object_removed_is_parsed_with_is_created_false() -> None:
    events = parse_notification(
        body(
            aws_record("gone.wav", event_name="ObjectRemoved:Delete", sequencer="0A"),
            aws_record("new.wav", size=5),
        )
    )
    assert [(e.key, e.event_name, e.is_created) for e in events] == [
        ("gone.wav", "ObjectRemoved:Delete", False),
        ("new.wav", "ObjectCreated:Put", True),
    ]
    assert events[0].size is None


def test_etag_surrounding_quotes_are_stripped() -> None:
    (event,) = parse_notification(body(aws_record(eTag='"d41d8cd98f00b204e9800998ecf8427e"')))
    assert event.etag == "d41d8cd98f00b204e9800998ecf8427e"


def test_absent_or_null_optional_fields_become_none() -> None:
    (event,) = parse_notification(body(aws_record(size=None, versionId=None, eTag="")))
    assert (event.size, event.etag, event.version_id, event.sequencer) == (None, None, None, None)


def test_str_body_is_accepted() -> None:
    assert parse_notification(AWS_SAMPLE.decode())[0].key == "my fileé.wav"


def test_utf8_bom_is_tolerated() -> None:
    assert parse_notification(b"\xef\xbb\xbf" + AWS_SAMPLE)[0].bucket == "b"


def test_minio_webhook_body_uses_records() -> None:
    (event,) = parse_notification(json.dumps(MINIO_WEBHOOK).encode())
    assert event == ObjectEvent(
        bucket="uploads",
        key="calls/my file+1.wav",
        event_name="s3:ObjectCreated:Put",
        size=224662,
        etag="5fc7298143efe1276d39a3466d4e255f-1",
        version_id=None,
        sequencer="15CFEDF8D5304D1A",
    )
    assert event.is_created


@pytest.mark.parametrize("records", [None, [], "absent"])
def test_minio_webhook_without_records_derives_bucket_and_key_from_key(records: Any) -> None:
    payload: dict[str, Any] = {"EventName": "s3:ObjectCreated:Put", "Key": MINIO_WEBHOOK["Key"]}
    if records != "absent":
        payload["Records"] = records
    (event,) = parse_notification(json.dumps(payload))
    # MinIO's top-level Key is already unescaped: a "+" there is a literal plus.
    assert event == ObjectEvent(
        bucket="uploads",
        key="calls/my file+1.wav",
        event_name="s3:ObjectCreated:Put",
        size=None,
        etag=None,
        version_id=None,
        sequencer=None,
    )


def test_listen_style_decoded_mapping_is_accepted() -> None:
    listened = {"Records": MINIO_WEBHOOK["Records"]}
    (event,) = parse_notification(listened)
    assert (event.bucket, event.key, event.size) == ("uploads", "calls/my file+1.wav", 224662)


def test_aws_test_event_yields_no_events() -> None:
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2014-10-13T15:57:02.089Z",
        "Bucket": "bucketname",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    assert parse_notification(json.dumps(test_event).encode()) == []


@pytest.mark.parametrize("records", [[], None])
def test_empty_or_null_records_yield_no_events(records: Any) -> None:
    assert parse_notification({"Records": records}) == []


def test_exactly_max_records_is_accepted() -> None:
    assert (
        len(parse_notification(body(*[aws_record(f"k{i}") for i in range(3)]), max_records=3)) == 3
    )


# --- rejected bodies ---------------------------------------------------------------


def test_malformed_event_is_an_ai2text_error_with_reason() -> None:
    with pytest.raises(Ai2TextError) as info:
        parse_notification(b"[]")
    assert isinstance(info.value, MalformedEvent)
    assert str(info.value) == info.value.reason == "body is not a JSON object"


@pytest.mark.parametrize("payload", [b"not json", b'{"Records": [', "", b"{'a': 1}"])
def test_non_json_is_malformed_with_readable_reason(payload: Any) -> None:
    assert reason_of(payload).startswith("body is not valid JSON (")


def test_invalid_utf8_is_malformed_with_readable_reason() -> None:
    assert reason_of(b'{"Records": ["\xff"]}') == "body is not valid UTF-8 (bad byte at offset 14)"


def test_invalid_utf8_offset_counts_a_leading_bom() -> None:
    reason = reason_of(b'\xef\xbb\xbf{"Records": ["\xff"]}')
    assert reason == "body is not valid UTF-8 (bad byte at offset 17)"


def test_integer_past_python_digit_limit_is_malformed() -> None:
    assert reason_of(b'{"Records": [' + b"9" * 5000 + b"]}").startswith("body is not valid JSON")


def test_deeply_nested_json_is_malformed() -> None:
    assert reason_of(b"[" * 100_000 + b"]" * 100_000).startswith("body is not valid JSON")


@pytest.mark.parametrize("payload", [b"[]", b'"text"', b"42", b"null", [1, 2], 42])
def test_non_object_body_is_malformed(payload: Any) -> None:
    assert reason_of(payload) == "body is not a JSON object"


@pytest.mark.parametrize("records", [{"a": 1}, "x", 3])
def test_records_not_a_list_is_malformed(records: Any) -> None:
    assert reason_of({"Records": records}) == "Records must be a list"


def test_body_without_records_or_known_shape_is_malformed() -> None:
    assert reason_of(b'{"hello": "world"}') == "body has no Records"


def test_too_many_records_is_malformed() -> None:
    payload = body(*[aws_record(f"k{i}") for i in range(4)])
    assert reason_of(payload, max_records=3) == "too many records: 4 (limit 3)"


def test_record_that_is_not_an_object_is_malformed() -> None:
    assert reason_of({"Records": [aws_record(), "x"]}) == "Records[1] is not an object"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r["s3"]["bucket"].pop("name"), "s3.bucket.name"),
        (lambda r: r["s3"]["bucket"].update(name=""), "s3.bucket.name"),
        (lambda r: r["s3"].pop("bucket"), "s3.bucket.name"),
        (lambda r: r.pop("s3"), "s3.bucket.name"),
        (lambda r: r["s3"]["object"].pop("key"), "s3.object.key"),
        (lambda r: r["s3"]["object"].update(key=7), "s3.object.key"),
        (lambda r: r["s3"].update(object="x"), "s3.object.key"),
        (lambda r: r.pop("eventName"), "eventName"),
    ],
)
def test_missing_required_field_is_malformed_naming_index_and_field(
    mutate: Any, field: str
) -> None:
    bad = aws_record()
    mutate(bad)
    reason = reason_of(body(aws_record(), bad))
    assert reason == f"Records[1]: {field} is missing or not a non-empty string"


@pytest.mark.parametrize("size", [-1, True, False, 1.5, "123"])
def test_invalid_size_is_malformed(size: Any) -> None:
    reason = reason_of(body(aws_record(size=size)))
    assert reason == "Records[0]: s3.object.size must be a non-negative integer"


def test_zero_size_is_accepted() -> None:
    assert parse_notification(body(aws_record(size=0)))[0].size == 0


@pytest.mark.parametrize("size", [10**30, 2**63, MAX_OBJECT_BYTES + 1])
def test_size_larger_than_any_object_is_malformed(size: int) -> None:
    # 10**30 used to reach the database, fail there and be answered 503: resent forever.
    reason = reason_of(body(aws_record(size=size)))
    assert reason == f"Records[0]: s3.object.size is larger than {MAX_OBJECT_BYTES} bytes"


def test_size_of_the_largest_object_is_accepted() -> None:
    assert parse_notification(body(aws_record(size=MAX_OBJECT_BYTES)))[0].size == MAX_OBJECT_BYTES


def _set_event_name(r: dict[str, Any], v: str) -> None:
    r["eventName"] = v


def _set_bucket(r: dict[str, Any], v: str) -> None:
    r["s3"]["bucket"]["name"] = v


def _set_object(field: str) -> Any:
    def setter(r: dict[str, Any], v: str) -> None:
        r["s3"]["object"][field] = v

    return setter


TEXT_FIELDS = [
    ("eventName", _set_event_name, 255),
    ("s3.bucket.name", _set_bucket, 255),
    ("s3.object.eTag", _set_object("eTag"), 1024),
    ("s3.object.versionId", _set_object("versionId"), 1024),
    ("s3.object.sequencer", _set_object("sequencer"), 1024),
]


@pytest.mark.parametrize(("field", "setter", "limit"), TEXT_FIELDS)
@pytest.mark.parametrize("char", ["\x00", "\n", "\x1b", "\x7f"])
def test_control_character_in_a_text_field_is_malformed(
    field: str, setter: Any, limit: int, char: str
) -> None:
    record = aws_record()
    setter(record, f"ab{char}cd")
    assert reason_of(body(record)) == f"Records[0]: {field} contains a control character"


@pytest.mark.parametrize(("field", "setter", "limit"), TEXT_FIELDS)
def test_lone_surrogate_in_a_text_field_is_malformed(field: str, setter: Any, limit: int) -> None:
    record = aws_record()
    setter(record, "ab\ud800")
    # As a sender's JSON carries it: an escaped surrogate with no partner.
    assert reason_of(body(record)) == f"Records[0]: {field} is not valid Unicode"


@pytest.mark.parametrize(("field", "setter", "limit"), TEXT_FIELDS)
def test_text_field_longer_than_its_bound_is_malformed(field: str, setter: Any, limit: int) -> None:
    at_limit, over = aws_record(), aws_record()
    setter(at_limit, "é" * (limit // 2))  # two UTF-8 bytes each: at most the limit
    setter(over, "é" * (limit // 2) + "xx")
    assert len(parse_notification(body(at_limit))) == 1
    assert reason_of(body(over)) == f"Records[0]: {field} is longer than {limit} bytes"


def test_bucket_name_with_a_slash_is_malformed() -> None:
    reason = reason_of(body(aws_record(bucket="a/b")))
    assert reason == "Records[0]: s3.bucket.name contains a '/'"


def test_lone_surrogate_in_a_key_is_malformed() -> None:
    reason = reason_of(body(aws_record("a\ud800.wav")))
    assert reason == "Records[0]: s3.object.key is not valid Unicode"


@pytest.mark.parametrize("key", ["a%00b.wav", "a\x00b.wav"])
def test_nul_in_key_is_malformed(key: str) -> None:
    assert reason_of(body(aws_record(key))) == "Records[0]: s3.object.key contains a NUL character"


def test_empty_key_is_malformed() -> None:
    reason = reason_of(body(aws_record("")))
    assert reason == "Records[0]: s3.object.key is missing or not a non-empty string"


def test_key_over_1024_utf8_bytes_is_malformed() -> None:
    ok = "%C3%A9" * 512  # 512 x "é" = 1024 bytes
    assert len(parse_notification(body(aws_record(ok)))[0].key.encode()) == 1024
    reason = reason_of(body(aws_record(ok + "x")))
    assert reason == "Records[0]: s3.object.key is longer than 1024 bytes"


def test_key_with_invalid_percent_encoded_utf8_is_malformed() -> None:
    reason = reason_of(body(aws_record("bad%FF.wav")))
    assert reason == "Records[0]: s3.object.key is not valid percent-encoded UTF-8"


def test_non_string_optional_field_is_malformed() -> None:
    reason = reason_of(body(aws_record(eTag=123)))
    assert reason == "Records[0]: s3.object.eTag must be a string"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"EventName": "s3:ObjectCreated:Put"}, "Key is missing or not a non-empty string"),
        ({"Key": "b/k"}, "EventName is missing or not a non-empty string"),
        (
            {"EventName": "s3:ObjectCreated:Put", "Key": "no-slash"},
            "Key must have the form 'bucket/object-key'",
        ),
        (
            {"EventName": "s3:ObjectCreated:Put", "Key": "/k"},
            "Key must have the form 'bucket/object-key'",
        ),
        ({"EventName": "s3:ObjectCreated:Put", "Key": "b/"}, "Key is empty"),
        ({"EventName": "s3:ObjectCreated:Put", "Key": "b/a\x00"}, "Key contains a NUL character"),
        (
            {"EventName": "s3:Object\x00Created:Put", "Key": "b/k"},
            "EventName contains a control character",
        ),
        (
            {"EventName": "s3:ObjectCreated:Put", "Key": "b\x01/k"},
            "Key's bucket contains a control character",
        ),
    ],
)
def test_bad_minio_summary_without_records_is_malformed(
    payload: dict[str, Any], reason: str
) -> None:
    assert reason_of(payload) == reason


# --- sequencers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "current", "newer"),
    [
        ("0055AED6DCD90281E6", "0055AED6DCD90281E5", True),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E6", False),
        ("0055aed6dcd90281e6", "0055AED6DCD90281E5", True),  # case-insensitive
        ("0055AED6DCD90281E5", "0055aed6dcd90281e5", False),  # equal is not newer
        ("0055AED6DCD90281E5", "0055AED6DCD90281E5", False),
        # Different lengths: AWS says right-pad the shorter with zeros, then compare.
        ("0055AED6DCD90281E501", "0055AED6DCD90281E5", True),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E501", False),
        ("0055AED6DCD90281E500", "0055AED6DCD90281E5", False),  # equal once padded
        ("1", "0F", True),  # "10" > "0F"
        ("0F", "1", False),
        ("0055AED6DCD90281E6", "0055AED6DCD90281E5FF", True),
    ],
)
def test_sequencer_comparison(candidate: str, current: str, newer: bool) -> None:
    assert sequencer_is_newer(candidate, current) is newer


@pytest.mark.parametrize(
    ("candidate", "current", "newer"),
    [
        (None, None, True),
        ("0A", None, True),
        (None, "0A", False),
    ],
)
def test_sequencer_none_cases(candidate: str | None, current: str | None, newer: bool) -> None:
    assert sequencer_is_newer(candidate, current) is newer


@pytest.mark.parametrize(
    ("candidate", "current"),
    [
        ("zz", "0A"),
        ("0A", "zz"),
        ("0x1F", "0A"),
        ("1_0", "0A"),
        (" 1F", "0A"),
        ("-1F", "0A"),
        ("", "0A"),
        ("FF", ""),
    ],
)
def test_invalid_hex_sequencer_is_never_newer(candidate: str, current: str) -> None:
    assert sequencer_is_newer(candidate, current) is False
