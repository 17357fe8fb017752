"""PayPay Open Payment API v2 (dynamic QR, merchant-presented): signing, wire mapping, adapter and sandbox."""
