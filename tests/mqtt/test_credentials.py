"""OTA-issued MQTT logins: HMAC-signed per device, verified without state."""

from __future__ import annotations

import pytest

from xiaozhi_core.gateway.mqtt.credentials import CredentialError, MqttSigner

MAC = "aa:bb:cc:dd:ee:01"


def test_issued_credentials_verify_and_identify_the_device():
    signer = MqttSigner(b"secret", ttl=100)
    c = signer.issue(MAC.upper(), "uuid-1", now=1000)
    login = signer.verify(c.client_id, c.username, c.password.encode(), now=1099)
    assert (login.device_id, login.client_id) == (MAC, "uuid-1")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("client_id", "GID_xiaozhi@@@aa_bb_cc_dd_ee_02@@@uuid-1", "does not match"),
        ("client_id", "GID_xiaozhi@@@aa_bb_cc_dd_ee_01@@@uuid-2", "does not match"),
        ("client_id", "aa_bb_cc_dd_ee_01", "is not GID_"),
        ("username", "1001", "does not match"),
        ("username", "", "not the issue time"),
        ("password", "", "missing password"),
        ("password", "x" * 43, "does not match"),
    ],
)
def test_any_tampered_field_is_refused(field, value, message):
    signer = MqttSigner(b"secret")
    c = signer.issue(MAC, "uuid-1", now=1000)
    login = {"client_id": c.client_id, "username": c.username, "password": c.password, field: value}
    with pytest.raises(CredentialError, match=message):
        signer.verify(login["client_id"], login["username"], login["password"], now=1000)


def test_other_secret_and_expiry_are_refused():
    c = MqttSigner(b"secret", ttl=100).issue(MAC, "u", now=1000)
    with pytest.raises(CredentialError, match="does not match"):
        MqttSigner(b"other").verify(c.client_id, c.username, c.password, now=1000)
    with pytest.raises(CredentialError, match="expired"):
        MqttSigner(b"secret", ttl=100).verify(c.client_id, c.username, c.password, now=1101)


def test_device_ids_that_are_not_macs_get_a_precise_error():
    with pytest.raises(CredentialError, match="not a MAC address"):
        MqttSigner(b"k").issue("not-a-mac", "u")
    with pytest.raises(CredentialError, match="characters outside"):
        MqttSigner(b"k").issue(MAC, "u@@@evil")
