"""Every provider sandbox in one ASGI app: `/<provider>/...` speaks that provider's API.

`paymux sandbox` serves it; `paymux demo` mounts it inside paymux. Sandboxes send their webhooks to
`<webhook base>/v1/webhooks/<provider>`.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from paymux.providers.aupay.sandbox import DEFAULTS as AUPAY_DEFAULTS
from paymux.providers.aupay.sandbox import AuPaySandbox
from paymux.providers.dpayment.sandbox import DEFAULTS as DPAYMENT_DEFAULTS
from paymux.providers.dpayment.sandbox import DPaymentSandbox
from paymux.providers.linepay.sandbox import DEFAULTS as LINEPAY_DEFAULTS
from paymux.providers.linepay.sandbox import LinePaySandbox
from paymux.providers.paypay.sandbox import DEFAULTS as PAYPAY_DEFAULTS
from paymux.providers.paypay.sandbox import PayPaySandbox
from paymux.providers.rakuten.sandbox import DEFAULTS as RAKUTEN_DEFAULTS
from paymux.providers.rakuten.sandbox import RakutenPaySandbox
from paymux.providers.sandbox_kit import SandboxCredentials, SandboxTiming


def webhook_url(webhook_base: str | None, provider: str) -> str | None:
    return f"{webhook_base.rstrip('/')}/v1/webhooks/{provider}" if webhook_base else None


def paypay_sandbox(webhook_base: str | None, env: Mapping[str, str] | None = None) -> PayPaySandbox:
    return PayPaySandbox(
        SandboxCredentials.from_env("paypay", PAYPAY_DEFAULTS, env),
        webhook_url=webhook_url(webhook_base, "paypay"),
        timing=SandboxTiming.from_env(env),
    )


def linepay_sandbox(webhook_base: str | None, env: Mapping[str, str] | None = None) -> LinePaySandbox:
    return LinePaySandbox(
        SandboxCredentials.from_env("linepay", LINEPAY_DEFAULTS, env),
        webhook_url=webhook_url(webhook_base, "linepay"),
        timing=SandboxTiming.from_env(env),
    )


def dpayment_sandbox(webhook_base: str | None, env: Mapping[str, str] | None = None) -> DPaymentSandbox:
    return DPaymentSandbox(
        SandboxCredentials.from_env("dpayment", DPAYMENT_DEFAULTS, env),
        webhook_url=webhook_url(webhook_base, "dpayment"),
        timing=SandboxTiming.from_env(env),
    )


def aupay_sandbox(webhook_base: str | None, env: Mapping[str, str] | None = None) -> AuPaySandbox:
    return AuPaySandbox(
        SandboxCredentials.from_env("aupay", AUPAY_DEFAULTS, env),
        webhook_url=webhook_url(webhook_base, "aupay"),
        timing=SandboxTiming.from_env(env),
    )


def rakuten_sandbox(webhook_base: str | None, env: Mapping[str, str] | None = None) -> RakutenPaySandbox:
    return RakutenPaySandbox(
        SandboxCredentials.from_env("rakuten", RAKUTEN_DEFAULTS, env),
        webhook_url=webhook_url(webhook_base, "rakuten"),
        timing=SandboxTiming.from_env(env),
    )


def mount_sandboxes(app: FastAPI, webhook_base: str | None, env: Mapping[str, str] | None = None) -> None:
    app.mount("/paypay", paypay_sandbox(webhook_base, env).app())
    app.mount("/linepay", linepay_sandbox(webhook_base, env).app())
    app.mount("/dpayment", dpayment_sandbox(webhook_base, env).app())
    app.mount("/aupay", aupay_sandbox(webhook_base, env).app())
    app.mount("/rakuten", rakuten_sandbox(webhook_base, env).app())


def create_sandbox_app(webhook_base: str | None, env: Mapping[str, str] | None = None) -> FastAPI:
    app = FastAPI(title="paymux provider sandboxes", openapi_url=None, docs_url=None, redoc_url=None)
    mount_sandboxes(app, webhook_base, env)
    return app
