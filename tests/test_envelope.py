"""Envelopes, topic patterns, signatures and redaction: the rules everything else relies on."""

import json

import pytest

from stackreflex.core.envelope import Envelope, parse_envelope
from stackreflex.core.signing import sign, verify
from stackreflex.core.topics import topic_matches
from stackreflex.core.errors import InvalidEnvelope, SignatureError
from stackreflex.core.redaction import redact, redact_text


@pytest.mark.parametrize("body, reason", [
    (b"not json", "not JSON: Expecting value at line 1 column 1"),
    (b"\xff\xfe", "not UTF-8 text"),
    (b"[1, 2]", "not a JSON object but a JSON list"),
    (b'{"specversion": "1.0"}', "field 'type': Field required"),
    (b'{"type": 7}', "field 'type': Input should be a valid string"),
    (b'{"type": "heat.*"}', "field 'type': String should match pattern"),
    (b'{"type": "a.b", "id": "nope"}', "field 'id': Value error, must be a UUID"),
    (b'{"type": "a.b", "time": "2026-01-01T00:00:00"}', "field 'time': Value error, must carry a time zone"),
    (b'{"type": "a.b", "specversion": "0.3"}', "field 'specversion': Input should be '1.0'"),
    (b'{"type": "a.b", "colour": "red"}', "field 'colour': not a known attribute"),
])
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


@pytest.mark.parametrize("pattern, key, expected", [
    ("heat.resource.*", "heat.resource.CREATE_IN_PROGRESS", True),
    ("heat.resource.*", "heat.resource.a.b", False),
    ("command.#", "command", True),
    ("command.#", "command.host.evacuate", True),
    ("#.COMPLETE", "heat.stack.COMPLETE", True),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.x.y.d", False),
    ("*.b", "b", False),
    ("a", "a.b", False),
])
def test_topic_patterns_follow_amqp_rules(pattern, key, expected):
    assert topic_matches(pattern, key) is expected


def test_signatures_detect_missing_forged_and_altered_commands():
    envelope = Envelope.new("command.host.evacuate", subject="compute-0", data={"max_parallel": 2})
    signed = sign(envelope, "k1")
    verify(signed, "k1")
    with pytest.raises(SignatureError, match="unsigned"):
        verify(envelope, "k1")
    with pytest.raises(SignatureError, match="forged or altered"):
        verify(signed, "another key")
    altered = signed.model_copy(update={"data": {"max_parallel": 20}})
    with pytest.raises(SignatureError, match="forged or altered"):
        verify(altered, "k1")


def test_redaction_masks_secrets_in_keys_and_text():
    value = {
        "password": "hunter2", "nested": [{"X-Auth-Token": "gAAAAtok"}],
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
