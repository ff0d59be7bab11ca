"""Every request has an id: the client's (or the proxy's) ``X-Request-ID`` if it is a
plain token of at most 64 characters, else a new one. It is set for the request's log
lines and for the jobs it enqueues (celeste/logs.py), and returned in the response's
``X-Request-ID``, so a client can quote it. Base package: no domain imports."""

from celeste.logs import request_id, request_id_from_header

HEADER = "X-Request-ID"


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        current = request_id_from_header(request.headers.get(HEADER))
        token = request_id.set(current)
        try:
            response = self.get_response(request)
        finally:
            # A server thread serves one request after another: none inherits this id.
            request_id.reset(token)
        response[HEADER] = current
        return response
