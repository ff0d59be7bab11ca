import json
import os
import urllib.error
import urllib.request
import uuid

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orders.models import Order
from orders.payments import PAYMENT_SUCCEEDED, SIGNATURE_HEADER, signature_header


class Command(BaseCommand):
    help = "Sign a payment.succeeded event for an order and POST it to the webhook (local testing)."

    def add_arguments(self, parser):
        # The port `make run` (runall) serves on: CELESTE_PORT, as runall reads it.
        port = os.environ.get("CELESTE_PORT") or "8000"
        parser.add_argument("order_number", help="The order's number, e.g. CEL-00001000.")
        parser.add_argument("--amount", default=None, help="The amount paid (default: the order's total).")
        parser.add_argument("--currency", default=None, help="The currency paid (default: the order's currency).")
        parser.add_argument(
            "--event-id",
            default=None,
            help="The provider's event id (default: a new random one; reuse one to test replays).",
        )
        parser.add_argument(
            "--url",
            default=f"http://127.0.0.1:{port}/api/v1/payments/webhook",
            help="The webhook to POST to (default: the local server on CELESTE_PORT, 8000 unset).",
        )
        parser.add_argument(
            "--secret", default=None, help="The signing secret (default: the first of PAYMENT_WEBHOOK_SECRETS)."
        )

    def handle(self, *args, order_number, amount, currency, event_id, url, secret, **options):
        order = Order.objects.filter(number=order_number).first()
        if order is None:
            raise CommandError(f"No order {order_number}.")
        event = {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "type": PAYMENT_SUCCEEDED,
            "data": {
                "order_number": order.number,
                "amount": amount or str(order.total),
                "currency": currency or order.currency,
                "provider": "celeste-test",
            },
        }
        body = json.dumps(event).encode()
        header = signature_header(body=body, secrets=[secret or settings.PAYMENT_WEBHOOK_SECRETS[0]])
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", SIGNATURE_HEADER: header}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, reply = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, reply = exc.code, exc.read().decode()
        except urllib.error.URLError as exc:
            raise CommandError(f"Could not reach {url}: {exc.reason}") from None
        self.stdout.write(f"Sent {event['id']} → HTTP {status}: {reply}")
        if status >= 400:
            raise CommandError(f"The webhook answered {status}.")
