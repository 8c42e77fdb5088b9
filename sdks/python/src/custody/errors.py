"""Errors raised by the SDK: one class per problem `code`, all of them `CustodyError`.

Custody answers every failure with an RFC 9457 problem (`code` stable, `detail` for humans and
never a secret). The mapping below follows the SDK contract (surfaces.md, section 3); codes it
does not name raise the base class, so `except CustodyError` with `e.code` always works.
Messages are built only from the status, the code, the server's detail and the request id:
never from a header, a URL query or a body the caller sent, so no secret can end up in them.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "CustodyError",
    "GrantRevoked",
    "NotFound",
    "PolicyDenied",
    "ProviderError",
    "ReauthRequired",
    "SignInFailed",
    "Unauthorized",
    "Unavailable",
    "UserDeprovisioned",
    "UserSuspended",
    "UserTokenInvalid",
    "error_from_problem",
]


class CustodyError(Exception):
    """A problem answer from Custody, or (as `Unavailable`) no usable answer at all.

    `status` is the HTTP status, or None when no answer arrived (connection error, timeout).
    `code` is the problem's stable code; `detail` its human explanation; `request_id` the
    `x-request-id` to quote when asking the operator.
    """

    def __init__(
        self,
        status: Optional[int],
        code: str,
        detail: str,
        request_id: Optional[str] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" (request id {self.request_id})" if self.request_id else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.detail}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"detail={self.detail!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.status, self.code, self.detail, self.request_id))


class Unauthorized(CustodyError):
    """401: the API key is missing or wrong."""


class UserTokenInvalid(CustodyError):
    """401 `invalid_user_token` or `user_token_missing`: sign the user in again."""


class PolicyDenied(CustodyError):
    """403 `policy_denied`: the app's policy does not let this user use the provider."""


class UserSuspended(CustodyError):
    """403 `user_suspended`."""


class UserDeprovisioned(CustodyError):
    """403 `user_deprovisioned`: final; the user's grants are gone."""


class NotFound(CustodyError):
    """404: the grant, provider, session or route does not exist (for this app and user)."""


class GrantRevoked(CustodyError):
    """410 `grant_revoked`: connect the provider again."""


class ReauthRequired(CustodyError):
    """410 `reauth_required`: the provider rejected the refresh token; connect again."""


class ProviderError(CustodyError):
    """502: the OAuth provider failed (token endpoint down, refresh answered garbage, ...)."""


class Unavailable(CustodyError):
    """503, or no answer at all: connection refused or reset, or a timeout (`status` None)."""


class SignInFailed(CustodyError):
    """`authenticate()` ended without a user token.

    `code` is the session's `error` (`access_denied`, `idp_error`, `code_exchange_failed`,
    `invalid_id_token`, `server_error`), `session_expired`, `user_token_already_taken` (someone
    else polled the session first) or `sign_in_timeout` (the caller's timeout passed).
    Not in the shared contract: an addition, a subclass of `CustodyError`.
    """


_BY_CODE: Dict[str, Type[CustodyError]] = {
    "invalid_user_token": UserTokenInvalid,
    "user_token_missing": UserTokenInvalid,
    "policy_denied": PolicyDenied,
    "user_suspended": UserSuspended,
    "user_deprovisioned": UserDeprovisioned,
    "grant_revoked": GrantRevoked,
    "reauth_required": ReauthRequired,
}

_BY_STATUS: Dict[int, Type[CustodyError]] = {
    401: Unauthorized,
    404: NotFound,
    502: ProviderError,
    503: Unavailable,
}


def error_class(status: int, code: str) -> Type[CustodyError]:
    """The class for a problem: by code first, then by status, else `CustodyError`."""
    return _BY_CODE.get(code) or _BY_STATUS.get(status) or CustodyError


def error_from_problem(
    status: int, problem: Optional[Mapping[str, Any]], request_id: Optional[str]
) -> CustodyError:
    """Builds the error for a non-2xx answer; `problem` is the parsed body, if it was JSON."""
    code = f"http_{status}"
    detail = f"HTTP {status} without a problem body"
    if problem is not None:
        raw_code = problem.get("code")
        if isinstance(raw_code, str) and raw_code:
            code = raw_code
        raw_detail = problem.get("detail") or problem.get("title")
        if isinstance(raw_detail, str) and raw_detail:
            detail = raw_detail
    return error_class(status, code)(status, code, detail, request_id)
