from __future__ import annotations

from paymux.core.errors import PaymuxError, Unauthorized


class InvalidSignature(Unauthorized):
    code = "invalid_signature"
    title = "The request signature does not verify"


class UnknownClient(Unauthorized):
    code = "unknown_client"
    title = "Unknown or revoked API client"


class TimestampOutOfRange(Unauthorized):
    code = "timestamp_out_of_range"
    title = "The signed timestamp is too far from the server's time"


class SignatureReplayed(Unauthorized):
    code = "signature_replayed"
    title = "This signature was already used"


class MissingCredentials(Unauthorized):
    code = "missing_credentials"
    title = "Credentials required"


class InvalidPaymentToken(Unauthorized):
    code = "invalid_payment_token"
    title = "Unknown payment token"


class PaymentTokenExpired(Unauthorized):
    code = "payment_token_expired"
    title = "The payment token has expired"


class PaymentTokenConsumed(Unauthorized):
    code = "payment_token_consumed"
    title = "The payment token was already used to confirm or cancel"


class InvalidAccessToken(Unauthorized):
    code = "invalid_access_token"
    title = "The access token is not valid"


class InvalidCredentials(Unauthorized):
    """Wrong email, wrong password, a locked or disabled account: one answer, so nobody learns which."""

    code = "invalid_credentials"
    title = "The email or password is not right"


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"
    title = "The refresh token is not valid"


class OAuthError(PaymuxError):
    """An error of the device token endpoint. Its `code` is an RFC 6749 section 5.2 error code, sent as `error`
    beside the problem members, so OAuth2 client libraries and problem+json readers both understand it."""

    status = 400
    code = "invalid_request"
    title = "The token request is not valid"


class InvalidClient(OAuthError):
    """The assertion does not prove a registered, active device (unknown, revoked, bad signature)."""

    status = 401
    code = "invalid_client"
    title = "Client authentication failed"


class InvalidGrant(OAuthError):
    """A genuine device's assertion that cannot be used: expired, too long-lived, for another audience, replayed."""

    code = "invalid_grant"
    title = "The client assertion cannot be used"


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"
    title = "Only client_credentials is supported"


class InvalidScope(OAuthError):
    code = "invalid_scope"
    title = "The requested scope is not the device's"
