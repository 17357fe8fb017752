from __future__ import annotations

from paymux.providers.paypay import signing

# PayPay's published example (api_authorization.html): it must reproduce exactly.
VECTOR_BODY = (
    b'{"sampleRequestBodyKey1":"sampleRequestBodyValue1","sampleRequestBodyKey2":"sampleRequestBodyValue2"}'
)
VECTOR_TYPE = "application/json;charset=UTF-8;"


def test_paypays_published_example_reproduces() -> None:
    header = signing.authorization(
        "APIKeyGenerated",
        "APIKeySecretGenerated",
        method="POST",
        path="/v2/codes",
        content_type=VECTOR_TYPE,
        body=VECTOR_BODY,
        nonce="acd028",
        epoch=1579843452,
    )
    assert header == (
        "hmac OPA-Auth:APIKeyGenerated:NW1jKIMnzR7tEhMWtcJcaef+nFVBt7jjAGcVuxHhchc=:acd028:1579843452:"
        "1j0FnY4flNp5CtIKa7x9MQ=="
    )


def test_a_request_without_body_signs_empty() -> None:
    signed_type, hashed = signing.body_hash("application/json", b"")
    assert (signed_type, hashed) == ("empty", "empty")


def test_verify_accepts_the_signature_and_refuses_any_change() -> None:
    header = signing.authorization(
        "key",
        "secret",
        method="POST",
        path="/v2/codes",
        content_type=VECTOR_TYPE,
        body=VECTOR_BODY,
        nonce="n1",
        epoch=1,
    )
    auth = signing.parse(header)
    assert signing.verify(
        "secret", auth, method="POST", path="/v2/codes", content_type=VECTOR_TYPE, body=VECTOR_BODY
    )
    assert not signing.verify(
        "other", auth, method="POST", path="/v2/codes", content_type=VECTOR_TYPE, body=VECTOR_BODY
    )
    assert not signing.verify(
        "secret", auth, method="POST", path="/v2/refunds", content_type=VECTOR_TYPE, body=VECTOR_BODY
    )
    assert not signing.verify(
        "secret", auth, method="POST", path="/v2/codes", content_type="application/json", body=VECTOR_BODY
    )
    assert not signing.verify(
        "secret", auth, method="POST", path="/v2/codes", content_type=VECTOR_TYPE, body=VECTOR_BODY + b" "
    )
