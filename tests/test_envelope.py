"""Envelopes, topic patterns, signatures and redaction: the rules everything else relies on."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from stackreflex.core.envelope import Envelope, parse_envelope
from stackreflex.core.errors import InvalidEnvelope, SignatureError
from stackreflex.core.redaction import redact, redact_text
from stackreflex.core.signing import Signer
from stackreflex.core.topics import topic_matches


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "not JSON: Expecting value at line 1 column 1"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"[1, 2]", "not a JSON object but a JSON list"),
        (b'{"specversion": "1.0", "id": "1"}', "field 'type': Field required"),
        (b'{"type": "a.b"}', "field 'id': Field required"),
        (b'{"type": 7, "id": "1"}', "field 'type': Input should be a valid string"),
        (b'{"type": "heat.*", "id": "1"}', "field 'type': String should match pattern"),
        (b'{"type": "a.b", "id": ""}', "field 'id': String should have at least 1 character"),
        (b'{"type": "a.b", "id": "' + b"x" * 129 + b'"}', "field 'id': String should have at most 128 characters"),
        (
            b'{"type": "a.b", "id": "1", "subject": "' + b"s" * 256 + b'"}',
            "field 'subject': String should have at most 255",
        ),
        (
            b'{"type": "a.b", "id": "1", "time": "2026-01-01T00:00:00"}',
            "field 'time': Value error, must carry a time zone",
        ),
        (
            b'{"type": "a.b", "id": "1", "time": "1999-12-31T23:59:59Z"}',
            "field 'time': Value error, must be between 2000",
        ),
        (
            b'{"type": "a.b", "id": "1", "time": "2099-01-01T00:00:00Z"}',
            "field 'time': Value error, must be between 2000",
        ),
        (
            b'{"type": "a.b", "id": "1", "time": "0001-01-01T00:00:00+01:00"}',
            "field 'time': Value error, is out of range",
        ),
        (b'{"type": "a.b", "id": "1", "specversion": "0.3"}', "field 'specversion': Input should be '1.0'"),
        (b'{"type": "a.b", "id": "1", "colour": "red"}', "field 'colour': not a known attribute"),
        (b'{"type": "a.b", "id": "1", "data": NaN}', "not JSON: NaN is not JSON"),
        (b'{"type": "a.b", "id": "1\x00"}', "contains a NUL byte"),
        (b'{"type": "a.b", "id": "1", "data": "\\u0000"}', "contains a NUL character"),
        (b'{"type": "a.b", "id": "1", "data": "\\ud800"}', "contains a lone surrogate"),
        (b'{"type": "a.b", "id": "1", "data": ' + b"[" * 65 + b"]" * 65 + b"}", "nested deeper than the limit of 64"),
        (
            b'{"type": "a.b", "id": "1", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "nested deeper than the limit",
        ),
        (
            b'{"type": "a.b", "id": "1", "data": "' + b"x" * (1 << 20) + b'"}',
            "too large: 1048614 bytes, over the limit of 1048576",
        ),
    ],
)
def test_malformed_envelopes_are_rejected_naming_the_field(body, reason):
    with pytest.raises(InvalidEnvelope) as caught:
        parse_envelope(body)
    assert reason in caught.value.reason


def test_envelope_round_trip_and_causation():
    root = Envelope.new("heat.resource.CREATE_IN_PROGRESS", subject="overcloud", data={"index": 0})
    assert root.correlationid == root.id and root.time.tzinfo is not None
    child = Envelope.new("run.progress", cause=root)
    assert (child.correlationid, child.causationid) == (root.id, root.id)
    assert parse_envelope(root.to_json()) == root


@pytest.mark.parametrize(
    "pattern, key, expected",
    [
        ("heat.resource.*", "heat.resource.CREATE_IN_PROGRESS", True),
        ("heat.resource.*", "heat.resource.a.b", False),
        ("command.#", "command", True),
        ("command.#", "command.host.evacuate", True),
        ("#.COMPLETE", "heat.stack.COMPLETE", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.d", False),
        ("*.b", "b", False),
        ("a", "a.b", False),
    ],
)
def test_topic_patterns_follow_amqp_rules(pattern, key, expected):
    assert topic_matches(pattern, key) is expected


def test_ids_are_any_cloudevents_string_and_types_compare_case_insensitively():
    assert parse_envelope(b'{"type": "Command.Host.Evacuate", "id": "heat-event/42"}').type == "command.host.evacuate"
    assert (
        parse_envelope(b'{"type": "HEAT.resource.create_in_progress", "id": "e"}').type
        == "heat.resource.CREATE_IN_PROGRESS"
    )


def test_signatures_detect_missing_forged_altered_stale_and_unknown_keys():
    signer = Signer({"k1": b"one", "k2": b"two"}, "k2")
    envelope = Envelope.new("heat.resource.CREATE_IN_PROGRESS", subject="overcloud", data={"index": 0})
    signed = signer.sign(envelope)
    assert signed.keyid == "k2" and signed.signedat is not None
    signer.verify(signed)
    Signer({"k1": b"one", "k2": b"two"}, "k1").verify(signed)  # every key of the ring verifies
    with pytest.raises(SignatureError, match=r"unsigned heat\.resource\.CREATE_IN_PROGRESS"):
        signer.verify(envelope)
    with pytest.raises(SignatureError, match="forged or altered"):
        Signer({"k2": b"another key"}, "k2").verify(signed)
    with pytest.raises(SignatureError, match="not in this installation's key ring"):
        Signer({"k1": b"one"}, "k1").verify(signed)
    altered = signed.model_copy(update={"data": {"index": 1}})
    with pytest.raises(SignatureError, match="forged or altered"):
        signer.verify(altered)
    now = datetime.now(UTC)
    old = signer.sign(envelope, now=now - timedelta(days=400))
    with pytest.raises(SignatureError, match=r"stale .*more than 900s ago"):
        signer.verify(old)
    signer.verify(old, fresh=False)  # authentic, only late
    with pytest.raises(SignatureError, match="ahead of this clock"):
        signer.verify(signer.sign(envelope, now=now + timedelta(minutes=5)))
    redated = old.model_copy(update={"signedat": now})
    with pytest.raises(SignatureError, match="forged or altered"):
        signer.verify(redated)


def test_redaction_masks_secrets_in_keys_and_text():
    value = {
        "password": "hunter2",
        "nested": [{"X-Auth-Token": "gAAAAtok"}],
        "metadata_url": "http://192.0.2.1:8080/v1/AUTH_a/ov/n?temp_url_sig=5f3a9c&temp_url_expires=2000000000",
        "note": "auth failed for amqp://guest:s3cret@rabbit:5672/ with password=pw123",
        "count": 3,
    }
    dumped = json.dumps(redact(value))
    for secret in ("hunter2", "gAAAAtok", "5f3a9c", "s3cret", "pw123"):
        assert secret not in dumped
    assert "temp_url_expires=2000000000" in dumped and '"count": 3' in dumped
    assert redact_text("X-Auth-Token: abc.def") == "X-Auth-Token: ***"
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----"
    assert "b3BlbnNzaC1rZXk" not in redact_text(f"key: {key}")
