"""Fixtures for product images: pictures made with Pillow, a media directory of the
test's own, and a real HTTP server of image files on loopback."""

import io

import pytest
from PIL import Image

from celeste.devserver.loopback import ImageServer
from celeste.settings.base import storage_settings


def picture(
    fmt: str = "JPEG", size: tuple[int, int] = (1600, 1000), *, color=(200, 30, 30), mode: str = "RGB", **save
) -> bytes:
    """An image file of ``size`` in ``fmt``, its left half coloured, so orientation shows."""
    image = Image.new(mode, size, (255, 255, 255) if mode == "RGB" else None)
    image.paste(color, (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.fixture
def media(settings, tmp_path):
    """The default storage on a directory of this test's own (the orphan sweep lists it all)."""
    root = tmp_path / "media"
    settings.STORAGES = storage_settings(media_root=str(root))["STORAGES"]
    settings.MEDIA_ROOT = str(root)
    return root


@pytest.fixture
def image_server(settings):
    """Image files over plain HTTP on loopback, which this process may fetch from."""
    settings.IMAGE_URL_ALLOW_LOOPBACK = True
    server = ImageServer().start()
    yield server
    server.stop()


def swapped_rgb_profile() -> bytes:
    """A minimal ICC v2 RGB display profile whose red and blue primaries are swapped
    (sRGB's, D50-adapted), gamma 2.2: red pixel values in it are blue in sRGB. Built by
    hand because the machine has no ICC files and Pillow only makes sRGB, Lab and XYZ."""
    import struct

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x, y, z) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    text = b"swapped primaries\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    desc += b"\0" * (-len(desc) % 4)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.1431, 0.0606, 0.7141)),  # sRGB's blue
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB's red
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data
