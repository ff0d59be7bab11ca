"""The admin in a real browser, as a new staff member uses it: log in, send a campaign
through its confirmation page and watch it finish, retry a grouped failure, ship an order
from its page. Headless Chromium (Debian's chromium + chromium-driver, which `make test`
installs when it can) driven by Selenium, against pytest-django's live server and a real
Celery worker. Without a browser the test is skipped, saying why."""

import shutil

import pytest

from catalog.tasks import embed_products
from celeste.background.models import FailedTask, FailedTaskStatus, OutboxMessage
from celeste.background.queue import failed_task_record
from celeste.background.tasks import ping
from notifications.campaigns import campaign_create
from notifications.models import Campaign, CampaignStatus
from orders import services as order_services
from orders.models import Order, OrderStatus

from .conftest import wait_for
from .factories import UserFactory, place_order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# Quiet, private, offline: no first-run pages, no component downloads, no QUIC.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]
PASSWORD = "a-long-staff-password"


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and DRIVER):
        pytest.skip(
            "no Chromium and chromedriver on PATH: the admin's browser test did not run "
            "(as root on Debian, `make test` installs the chromium and chromium-driver packages)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Admin:
    """The few things staff do with a page: open it, click, read it."""

    def __init__(self, driver, base_url):
        self.driver, self.base_url = driver, base_url

    def open(self, path: str):
        self.driver.get(self.base_url + path)

    def click(self, css: str):
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def click_link(self, text: str):
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.PARTIAL_LINK_TEXT, text).click()

    def text(self) -> str:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        # The campaign page reloads itself every 5 s while sending: a body found just before a
        # reload is gone when its text is read. Read the new page's.
        for _ in range(5):
            try:
                return self.driver.find_element(By.TAG_NAME, "body").text
            except StaleElementReferenceException:
                continue
        return self.driver.find_element(By.TAG_NAME, "body").text

    def has(self, css: str) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def wait_for_text(self, text: str, timeout: float = 60):
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout).until(lambda _: text in self.text(), f"{text!r} on the page")


def test_staff_send_a_campaign_retry_a_grouped_failure_and_ship_an_order(
    browser, live_server, start_worker, channels_env, smtp_server, set_switch
):
    set_switch(embed_products.name, "off")  # the order's products need no embeddings here (a model load)
    staff = UserFactory(username="staff", email="staff@example.com", is_staff=True, is_superuser=True)
    staff.set_password(PASSWORD)
    staff.save()
    for n in range(2):
        UserFactory(email=f"c{n}@example.com")
    UserFactory(email="")  # left out: no email address
    campaign = campaign_create(subject="Oat milk week", body="Hello {{ name }}. {{ unsubscribe_url }}")
    failures = [
        failed_task_record(task_name=ping.name, task_id="", kwargs={}, exc=RuntimeError(f"boom {n}"), tb="", attempts=3)
        for n in (1, 2)
    ]
    order = place_order()
    order_services.order_mark_paid(order_id=order.id)
    order_services.order_confirm(order_id=order.id)
    start_worker(**channels_env)
    admin = Admin(browser, live_server.url)

    # Log in through the login form; the home page is Celeste's and counts the open failures.
    admin.open("/admin/login/")
    browser.find_element("name", "username").send_keys("staff")
    browser.find_element("name", "password").send_keys(PASSWORD)
    admin.click("input[type=submit]")
    admin.wait_for_text("Celeste administration", timeout=10)
    assert "Failed jobs open: 2" in admin.text()

    # A campaign: the button leads to the confirmation page, which says who gets it.
    admin.open(f"/admin/notifications/campaign/{campaign.id}/change/")
    admin.click("#campaign-send")
    admin.wait_for_text("Send to the audience?", timeout=10)
    # Two customers, the staff member and the order's customer.
    assert "Oat milk week: 4 recipient(s)" in admin.text()
    assert "1 left out: No email address." in admin.text()
    assert Campaign.objects.get(id=campaign.id).status == CampaignStatus.DRAFT
    admin.click("#celeste-confirm")
    # The page reloads itself while sending, until the worker has sent it all.
    admin.wait_for_text("100.0% done of 5: queued 0, sent 4, failed 0, skipped 1", timeout=90)
    assert {"c0@example.com", "c1@example.com", "staff@example.com", order.user.email} <= set(smtp_server.recipients())

    # The failures are one group; Retry on its page re-runs both jobs on the worker.
    admin.open("/admin/background/failuregroup/?status=open")
    admin.click_link("RuntimeError: boom 1")
    assert "Retry 2 open jobs" in admin.text()
    admin.click("#inbox-retry")
    admin.wait_for_text("Re-enqueued 2 job(s).", timeout=10)
    assert all(
        job.status == FailedTaskStatus.RETRIED for job in FailedTask.objects.filter(id__in=[f.id for f in failures])
    )
    wait_for(lambda: not OutboxMessage.objects.filter(task_name=ping.name).exists(), timeout=60, message="pings done")
    admin.open(f"/admin/background/failedtask/{failures[0].id}/change/")
    assert "(finished)" in admin.text()

    # The order's page: no Save button, a button per allowed transition; Ship ships it.
    admin.open(f"/admin/orders/order/{order.id}/change/")
    assert not admin.has("input[name=_save]")
    assert admin.has("#order-ship") and not admin.has("#order-deliver")
    admin.click("#order-ship")
    admin.wait_for_text("Ship: 1 order(s).", timeout=10)
    assert Order.objects.get(id=order.id).status == OrderStatus.SHIPPED
    assert admin.has("#order-deliver") and not admin.has("#order-ship")
