"""Every provider sandbox in one ASGI app: `/<provider>/...` speaks that provider's API.

`paymux sandbox` serves it; `paymux demo` mounts it inside paymux. Sandboxes send their webhooks to
`<webhook base>/v1/webhooks/<provider>`.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from paymux.providers.linepay.sandbox import DEFAULTS as LINEPAY_DEFAULTS
from paymux.providers.linepay.sandbox import LinePaySandbox
from paymux.providers.paypay.sandbox import DEFAULTS as PAYPAY_DEFAULTS
from paymux.providers.paypay.sandbox import PayPaySandbox
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


def mount_sandboxes(app: FastAPI, webhook_base: str | None, env: Mapping[str, str] | None = None) -> None:
    app.mount("/paypay", paypay_sandbox(webhook_base, env).app())
    app.mount("/linepay", linepay_sandbox(webhook_base, env).app())


def create_sandbox_app(webhook_base: str | None, env: Mapping[str, str] | None = None) -> FastAPI:
    app = FastAPI(title="paymux provider sandboxes", openapi_url=None, docs_url=None, redoc_url=None)
    mount_sandboxes(app, webhook_base, env)
    return app
