"""Custody's Python SDK: sign users in, connect their accounts at OAuth providers, and use
those grants, either by taking the access token (`token()`) or, without the token ever
reaching the app, through Custody's proxy (`request()`).

    from custody import Custody, errors
    c = Custody()                      # CUSTODY_API_KEY, CUSTODY_URL
    sign_in = c.authenticate()         # opens the browser (or prints the URL), waits
    c.request(sign_in.user_token, "GET", "/user", provider="github").json()

`AsyncCustody` has the same calls as coroutines.
"""

from . import errors
from ._async import AsyncCustody
from ._sync import Custody
from ._version import __version__
from .errors import CustodyError
from .models import ConnectSession, Grant, SignIn, Token, User

__all__ = [
    "AsyncCustody",
    "ConnectSession",
    "Custody",
    "CustodyError",
    "Grant",
    "SignIn",
    "Token",
    "User",
    "__version__",
    "errors",
]
