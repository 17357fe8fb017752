from __future__ import annotations

from paymux.core.errors import Unauthorized


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
