"""A token for Nova's API: a fixed one, or one from Keystone (v3 password authentication), renewed.

Neutron's notifier logs in to Keystone as its service user; a token lasts an hour by default, so a
long-running notifier needs the credentials, not a token. `KeystoneToken` asks
`POST {auth_url}/v3/auth/tokens` for a project-scoped token, keeps it until shortly before its
`expires_at`, and forgets it when Nova answers 401 (revoked), so the next attempt logs in again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import httpx

RENEW_BEFORE = 60.0  # seconds before expiry a token is replaced


class AuthError(Exception):
    """Keystone refused the credentials or answered with no token."""


@dataclass(frozen=True)
class KeystoneCredentials:
    auth_url: str  # Keystone's endpoint, e.g. http://keystone:5000 (or .../v3)
    username: str
    password: str
    project: str
    user_domain: str = "Default"
    project_domain: str = "Default"

    def body(self) -> dict:
        return {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.username, "password": self.password, "domain": {"name": self.user_domain}}}},
            "scope": {"project": {"name": self.project, "domain": {"name": self.project_domain}}}}}

    @property
    def tokens_url(self) -> str:
        base = self.auth_url.rstrip("/")
        return (base if base.endswith("/v3") else base + "/v3") + "/auth/tokens"


class FixedToken:
    def __init__(self, token: str | None):
        self.value = token

    async def get(self, client: httpx.AsyncClient) -> str | None:
        return self.value

    def invalidate(self) -> bool:
        """False: a fixed token cannot be renewed (a 401 is final)."""
        return False


class KeystoneToken:
    def __init__(self, credentials: KeystoneCredentials):
        self.credentials = credentials
        self.value: str | None = None
        self.expires = 0.0  # time.time() of expiry
        self.logins = 0

    async def get(self, client: httpx.AsyncClient) -> str:
        if self.value is None or time.time() > self.expires - RENEW_BEFORE:
            self.value, self.expires = await self._login(client)
        return self.value

    def invalidate(self) -> bool:
        self.value = None
        return True

    async def _login(self, client: httpx.AsyncClient) -> tuple[str, float]:
        resp = await client.post(self.credentials.tokens_url, json=self.credentials.body())
        token = resp.headers.get("x-subject-token")
        if resp.status_code != 201 or not token:
            raise AuthError(f"Keystone at {self.credentials.tokens_url} answered HTTP {resp.status_code}: "
                            f"{resp.text[:200]}")
        self.logins += 1
        try:
            expires = datetime.fromisoformat(resp.json()["token"]["expires_at"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            expires = time.time() + 3600.0  # Keystone's default lifetime when it does not say
        return token, expires
