"""Every option of every management command of ours says what it does (``--help``)."""

from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

ROOT = Path(__file__).resolve().parents[1]
# Django's own options, on every command.
BASE_OPTIONS = {"help", "version", "verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color"}
BASE_OPTIONS |= {"skip_checks"}


def our_commands() -> list[tuple[str, str]]:
    found = []
    for name, app in sorted(get_commands().items()):
        module = load_command_class(app, name).__module__
        path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        if path.exists():
            found.append((app, name))
    return found


def test_our_commands_are_found():
    names = {name for _, name in our_commands()}
    assert {"bootstrap", "runall", "send_test_payment_event", "odoo_fake_server"} <= names


@pytest.mark.parametrize(("app", "name"), our_commands())
def test_every_option_has_help(app, name):
    parser = load_command_class(app, name).create_parser("manage.py", name)

    missing = [a.dest for a in parser._actions if a.dest not in BASE_OPTIONS and not a.help]

    assert not missing, f"{name}: options without help: {missing}"
