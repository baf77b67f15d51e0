"""LiteLLM proxy custom auth for the Siphon lab (relay scenario R1).

Accepts any user key of the form ``sk-user-<something>`` without a database
(LiteLLM virtual keys need Postgres, which the lab does not run).  Each key is
its own LiteLLM "user" (user_id = the part after ``sk-``), so LiteLLM's logs
tell the end users apart.  Everything else gets 401.

Wired in config.yaml as ``general_settings: {custom_auth: custom_auth.user_api_key_auth}``;
LiteLLM loads ``custom_auth.py`` from the directory of the config file (or
from PYTHONPATH).  Signature per LiteLLM's proxy (litellm/proxy/auth/
user_api_key_auth.py calls ``await user_custom_auth(request=request,
api_key=api_key)`` and validates the result as UserAPIKeyAuth).
"""

from __future__ import annotations

import re

from fastapi import Request
from litellm.proxy._types import ProxyErrorTypes, ProxyException, UserAPIKeyAuth

USER_KEY = re.compile(r"^sk-user-[A-Za-z0-9._-]{1,128}$")


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    key = (api_key or "").strip()
    if key[:7].lower() == "bearer ":
        key = key[7:].strip()
    if USER_KEY.match(key):
        return UserAPIKeyAuth(api_key=key, user_id=key[3:], key_alias=key[3:])
    raise ProxyException(
        message="Authentication Error: invalid user key (expected sk-user-*)",
        type=ProxyErrorTypes.auth_error,
        param="api_key",
        code=401,
    )
