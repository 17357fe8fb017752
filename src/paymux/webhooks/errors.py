from __future__ import annotations

from paymux.core.errors import Forbidden, NotFound, Unprocessable


class WebhookEndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"
    title = "No such webhook endpoint"


class UnsafeEndpointURL(Unprocessable):
    code = "webhook_url_not_allowed"
    title = "Webhooks cannot be sent to this URL"


class MerchantRequired(Unprocessable):
    code = "merchant_id_required"
    title = "merchant_id is required for clients not bound to one merchant"


class WebhookScopeForbidden(Forbidden):
    code = "webhook_scope_forbidden"
    title = "Webhook endpoints belong to merchants; a store-scoped client cannot manage them"
