from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from paymux.core.inputs import InputModel
from paymux.core.money import MAX_AMOUNT, CurrencyCode
from paymux.tenants.models import ClientPartner, Merchant, Store

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
TenantId = Annotated[int, Field(strict=True, gt=0, lt=2**53)]


class ProviderConfigSync(InputModel):
    provider_code: str = Field(pattern=r"^[a-z0-9_]{1,32}$", examples=["paypay"])
    credentials: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=4096)]] | None = (
        Field(
            default=None,
            max_length=32,
            description="Provider credentials (merchant_id, api_key, api_secret, ...). Omit to keep the stored ones.",
        )
    )
    is_active: bool = True
    base_url: str | None = Field(
        default=None,
        max_length=500,
        pattern=r"^https?://[^\s]+$",
        description="Override of the provider's API base URL (a sandbox, say). Omitted: kept as stored; "
        "null: back to the provider's production URL.",
    )
    webhook_secret: str | None = Field(
        default=None,
        max_length=4096,
        description="Secret the provider signs its webhooks with. Omitted: kept as stored; null: removed.",
    )
    options: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] | None = Field(
        default=None,
        max_length=16,
        description="Non-secret settings, e.g. {'unsigned_webhooks': 'accept'}. Omitted: kept as stored.",
    )


class FeeRuleSync(InputModel):
    """The fee paymux books on a store's payments in one currency: a percentage plus a fixed amount."""

    currency: CurrencyCode
    percent_bps: int = Field(
        default=0, strict=True, ge=0, le=10_000, description="Percentage in basis points: 325 is 3.25 %"
    )
    fixed_amount: int = Field(
        default=0, strict=True, ge=0, le=MAX_AMOUNT, description="Fixed part, in the currency's minor unit"
    )


def _one_rule_per_currency(rules: list[FeeRuleSync]) -> list[FeeRuleSync]:
    currencies = [rule.currency for rule in rules]
    if len(currencies) != len(set(currencies)):
        raise ValueError("a store lists each fee currency at most once")
    return rules


FeeRules = Annotated[list[FeeRuleSync], AfterValidator(_one_rule_per_currency)]


class StoreSync(InputModel):
    store_id: TenantId
    store_code: Code
    name: str | None = Field(default=None, max_length=200)
    is_active: bool = True
    provider_configs: list[ProviderConfigSync] = Field(default_factory=list, max_length=50)
    fee_rules: FeeRules | None = Field(
        default=None,
        max_length=200,
        description="One rule per currency; omitted: kept as stored; [] removes every fee.",
    )

    @field_validator("provider_configs")
    @classmethod
    def _one_config_per_provider(cls, configs: list[ProviderConfigSync]) -> list[ProviderConfigSync]:
        codes = [config.provider_code for config in configs]
        if len(codes) != len(set(codes)):
            raise ValueError("a store lists each provider_code at most once")
        return configs


class MerchantSync(InputModel):
    merchant_id: TenantId
    merchant_code: Code
    name: str | None = Field(default=None, max_length=200)
    is_active: bool = True
    stores: list[StoreSync] = Field(default_factory=list, max_length=1000)


class MerchantSyncRequest(InputModel):
    """The portal's view of a partner's merchants, stores and provider configs (seed 004), upserted as given."""

    client_partner_id: TenantId
    merchants: list[MerchantSync] = Field(max_length=1000)

    @model_validator(mode="after")
    def _unique_ids(self) -> MerchantSyncRequest:
        merchant_ids = [merchant.merchant_id for merchant in self.merchants]
        store_ids = [store.store_id for merchant in self.merchants for store in merchant.stores]
        if len(merchant_ids) != len(set(merchant_ids)):
            raise ValueError("each merchant_id appears once")
        if len(store_ids) != len(set(store_ids)):
            raise ValueError("each store_id appears once")
        return self


class MerchantSyncResult(BaseModel):
    synced_merchants: int
    synced_stores: int


class ProviderConfigOut(BaseModel):
    """A store's provider config with every secret masked."""

    id: str
    store_id: int
    merchant_id: int
    provider_code: str
    is_active: bool
    base_url: str | None
    options: dict[str, str]
    credentials: dict[str, str] = Field(description="Credential names with masked values")
    webhook_secret: str | None = Field(description="Masked, or null when none is set")
    updated_at: datetime


class ProviderConfigList(BaseModel):
    data: list[ProviderConfigOut]


class MerchantOut(BaseModel):
    object: Literal["merchant"] = "merchant"
    id: int
    client_partner_id: int
    merchant_code: str
    name: str | None
    is_active: bool
    created_at: datetime

    @classmethod
    def of(cls, merchant: Merchant) -> MerchantOut:
        return cls(
            id=merchant.id,
            client_partner_id=merchant.client_partner_id,
            merchant_code=merchant.merchant_code,
            name=merchant.name,
            is_active=merchant.is_active,
            created_at=merchant.created_at,
        )


class MerchantList(BaseModel):
    data: list[MerchantOut]
    has_more: bool


# ---------------------------------------------------------------- the admin API


class PartnerCreate(InputModel):
    id: TenantId | None = Field(default=None, description="The portal's id; omitted: the next free one")
    name: str = Field(min_length=1, max_length=200)


class PartnerOut(BaseModel):
    object: Literal["client_partner"] = "client_partner"
    id: int
    name: str
    created_at: datetime

    @classmethod
    def of(cls, partner: ClientPartner) -> PartnerOut:
        return cls(id=partner.id, name=partner.name, created_at=partner.created_at)


class PartnerList(BaseModel):
    data: list[PartnerOut]
    has_more: bool


class MerchantCreate(InputModel):
    id: TenantId | None = Field(default=None, description="The portal's id; omitted: the next free one")
    client_partner_id: TenantId | None = Field(
        default=None, description="Required for a SYSTEM_OP; a PSP_ADMIN's own partner otherwise"
    )
    merchant_code: Code
    name: str | None = Field(default=None, max_length=200)


class MerchantUpdate(InputModel):
    name: str | None = Field(default=None, max_length=200)
    is_active: bool | None = None


class StoreCreate(InputModel):
    id: TenantId | None = Field(default=None, description="The portal's id; omitted: the next free one")
    merchant_id: TenantId | None = Field(
        default=None, description="Required unless the caller has one merchant"
    )
    store_code: Code
    name: str | None = Field(default=None, max_length=200)
    fee_rules: FeeRules = Field(default_factory=list, max_length=200)


class StoreUpdate(InputModel):
    name: str | None = Field(default=None, max_length=200)
    is_active: bool | None = None
    fee_rules: FeeRules | None = Field(default=None, max_length=200, description="Replaces the rules")


class StoreOut(BaseModel):
    object: Literal["store"] = "store"
    id: int
    merchant_id: int
    client_partner_id: int
    store_code: str
    name: str | None
    is_active: bool
    fee_rules: list[dict[str, int | str]]
    created_at: datetime

    @classmethod
    def of(cls, store: Store) -> StoreOut:
        return cls(
            id=store.id,
            merchant_id=store.merchant_id,
            client_partner_id=store.client_partner_id,
            store_code=store.store_code,
            name=store.name,
            is_active=store.is_active,
            fee_rules=[
                {key: value for key, value in rule.items() if isinstance(value, int | str)}
                for rule in store.fee_rules or []
            ],
            created_at=store.created_at,
        )


class StoreList(BaseModel):
    data: list[StoreOut]
    has_more: bool
