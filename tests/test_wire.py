"""The wire format's signatures: standard HMAC-SHA256, so any peer can verify them."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from hpcpar import wire


@pytest.mark.parametrize("key_len", [1, 32, 63, 64, 65, 200])
def test_signature_is_hmac_sha256_for_any_key_length(key_len):
    key = os.urandom(key_len)
    signer = wire.Signer(key)
    header, meta, payload = b'{"msg_type":"x"}', b"{}", os.urandom(1000)
    expected = hmac.new(key, header + meta + payload, hashlib.sha256).digest()
    assert signer.signature(header, meta, payload) == expected
    frames = signer.pack({"msg_type": "x"}, {"a": 1}, payload)
    assert frames[0] == hmac.new(key, frames[1] + frames[2] + frames[3], hashlib.sha256).digest()
    assert signer.unpack(frames).meta == {"a": 1}


def test_a_changed_byte_or_another_key_does_not_verify():
    signer = wire.Signer(os.urandom(32))
    frames = signer.pack({"msg_type": "x"}, {"a": 1}, b"payload")
    for i in (1, 2, 3):
        tampered = list(frames)
        tampered[i] = tampered[i][:-1] + bytes([tampered[i][-1] ^ 1])
        with pytest.raises(wire.BadMessage, match="bad signature"):
            signer.unpack(tampered)
    with pytest.raises(wire.BadMessage, match="bad signature"):
        wire.Signer(os.urandom(32)).unpack(frames)


def test_message_ids_are_32_hex_digits_and_distinct():
    ids = {wire.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
