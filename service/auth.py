"""Bearer tokens, checked the same way for every transport (HTTP headers, gRPC metadata)."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized


def bearer_token(authorization: str | None) -> str | None:
    """`Bearer <token>` (any case of the scheme) -> the token; anything else -> None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _matches(token: str, secret: SecretStr | None) -> bool:
    return secret is not None and hmac.compare_digest(
        token.encode(), secret.get_secret_value().encode()
    )


def check_token(token: str | None, required: SecretStr | None, other: SecretStr | None) -> None:
    """401 without a valid token, 403 with the token of the other kind. Open when unset."""
    if required is None:
        return
    if token is None:
        raise Unauthorized("missing bearer token")
    if _matches(token, required):
        return
    if _matches(token, other):
        raise Forbidden("this token is not valid for this route")
    raise Unauthorized("invalid bearer token")
