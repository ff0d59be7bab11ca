"""The token login, ``POST /api/v1/auth/token/``: DRF's ObtainAuthToken with the login
throttles, which count failed attempts per client address and per username
(celeste/api/throttling.py). Base package: no domain imports."""

from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError

from .throttling import FailureThrottle, LoginIPThrottle, LoginUsernameThrottle


class TokenLoginView(ObtainAuthToken):
    throttle_classes = [LoginIPThrottle, LoginUsernameThrottle]

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:  # wrong credentials or missing fields: a failed attempt
            for throttle in self.get_throttles():
                if isinstance(throttle, FailureThrottle):
                    throttle.failure_record(request, self)
            raise


token_login = TokenLoginView.as_view()
