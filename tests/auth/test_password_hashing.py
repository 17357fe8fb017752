"""User passwords are hashed with argon2id at the parameters the settings give (the suite's are cheap ones)."""

from __future__ import annotations

from sqlalchemy import select

from paymux.auth.models import User
from paymux.auth.users import UserScope
from paymux.config import Settings
from paymux.container import Container
from paymux.gateway.principal import Role


async def test_a_password_is_hashed_with_argon2id_at_the_configured_cost(container: Container) -> None:
    await container.users.create(
        email="hash@example.com", password="correct horse battery", role=Role.SYSTEM_OP, scope=UserScope()
    )
    async with container.db.reading() as session:
        stored = (await session.execute(select(User.password_hash))).scalar_one()
    settings = container.settings
    assert stored.startswith(
        f"$argon2id$v=19$m={settings.password_hash_memory_kib},t={settings.password_hash_time_cost},p=4$"
    )
    assert "correct horse battery" not in stored


def test_the_default_cost_is_rfc_9106s_low_memory_profile() -> None:
    defaults = Settings.model_fields
    assert defaults["password_hash_time_cost"].default == 3
    assert defaults["password_hash_memory_kib"].default == 65536
