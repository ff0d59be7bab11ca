"""Small line charts drawn as inline SVG on the server, so the task console shows a
spike without Grafana, a CDN or a JavaScript library."""

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

PAD = 2


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def line_chart(
    lines: list[tuple[str, list[float | None], str]],
    *,
    width: int = 320,
    height: int = 56,
    unit: str = "",
) -> SafeString:
    """One SVG with a polyline per ``(label, values, colour)`` on a shared scale from
    zero to the highest value (written in the top left corner). A None value breaks
    its line (no data: p95 of a bucket without runs)."""
    points = max((len(values) for _, values, _ in lines), default=0)
    highest = max((v for _, values, _ in lines for v in values if v is not None), default=0)
    top = highest or 1
    step = (width - 2 * PAD) / max(points - 1, 1)

    def xy(i: int, value: float) -> str:
        return f"{PAD + i * step:.1f},{height - PAD - (height - 2 * PAD) * value / top:.1f}"

    parts = [
        format_html(
            '<svg xmlns="http://www.w3.org/2000/svg" class="console-chart" width="{}" height="{}" '
            'viewBox="0 0 {} {}" role="img" aria-label="{}">',
            width,
            height,
            width,
            height,
            ", ".join(label for label, _, _ in lines),
        ),
        format_html('<rect x="0.5" y="0.5" width="{}" height="{}" fill="none" stroke="#ddd"/>', width - 1, height - 1),
    ]
    for label, values, colour in lines:
        runs, current = [], []
        for i, value in enumerate(values):
            if value is None:
                runs.append(current)
                current = []
            else:
                current.append(xy(i, value))
        runs.append(current)
        for run in runs:
            if len(run) == 1:  # a lone point: a short tick so it shows
                x, y = run[0].split(",")
                run = [f"{float(x) - 1:.1f},{y}", f"{float(x) + 1:.1f},{y}"]
            if run:
                parts.append(
                    format_html(
                        '<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"><title>{}</title></polyline>',
                        colour,
                        " ".join(run),
                        label,
                    )
                )
    parts.append(
        format_html(
            '<text x="4" y="11" font-size="10" fill="#666">{}{}</text>',
            _number(highest),
            unit,
        )
    )
    parts.append("</svg>")
    # Every part is format_html output or literal markup.
    return mark_safe("".join(parts))
