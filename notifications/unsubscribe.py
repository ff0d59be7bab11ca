"""Unsubscribe links: the token in every email's link and List-Unsubscribe header.

The token is signed with UNSUBSCRIBE_SIGNING_KEY (not the bare SECRET_KEY) and
bound to the user's current email address: when the address changes, links sent
to the old one stop working, so whoever now reads that mailbox cannot turn off the
new one's mail. The address itself is never in the token (its payload is only
base64, readable by anyone holding the link), only a keyed digest of it.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

SALT = "notifications.unsubscribe.v2"
PATH = "/api/v1/notifications/unsubscribe"


class InvalidUnsubscribeToken(Exception):
    pass


def _email_digest(user) -> str:
    value = f"{user.id}:{(user.email or '').strip().lower()}"
    return salted_hmac(SALT, value, secret=settings.UNSUBSCRIBE_SIGNING_KEY, algorithm="sha256").hexdigest()[:32]


def unsubscribe_token(*, user) -> str:
    return signing.dumps({"u": user.id, "e": _email_digest(user)}, key=settings.UNSUBSCRIBE_SIGNING_KEY, salt=SALT)


def unsubscribe_url(*, user) -> str:
    return f"{settings.PUBLIC_BASE_URL}{PATH}?token={unsubscribe_token(user=user)}"


def unsubscribe_headers(*, user) -> dict[str, str]:
    """RFC 8058 one-click: a mail client POSTs ``List-Unsubscribe=One-Click`` to the URL."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url(user=user)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def unsubscribe_token_user(*, token: str):
    """The user a valid token is for; raises InvalidUnsubscribeToken otherwise
    (forged, altered, for an unknown user, or for an email the user no longer has)."""
    try:
        data = signing.loads(token, key=settings.UNSUBSCRIBE_SIGNING_KEY, salt=SALT)
        user = get_user_model().objects.get(id=int(data["u"]))
        digest = str(data["e"])
    except (signing.BadSignature, KeyError, TypeError, ValueError, get_user_model().DoesNotExist):
        raise InvalidUnsubscribeToken("This unsubscribe link is invalid.") from None
    if not constant_time_compare(digest, _email_digest(user)):
        raise InvalidUnsubscribeToken("This unsubscribe link is invalid.")
    return user
