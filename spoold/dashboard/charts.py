"""Charts drawn on the server as SVG: no script, nothing inline, nothing from another site, so the
strict Content-Security-Policy holds and a screenshot shows what the page shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 720, 140, 18


def bars(series: list[dict[str, Any]], *, title: str) -> Markup:
    """Stacked bars of successes (below) and failures (above) per bucket, each with a <title> tooltip."""
    count = max(1, len(series))
    top = max([point["success"] + point["failure"] for point in series] + [1])
    slot = (WIDTH - 2 * PAD) / count
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>',
             f'<text class="label" x="{PAD}" y="12">{top}</text>']
    usable = HEIGHT - 2 * PAD
    for i, point in enumerate(series):
        x = PAD + i * slot
        ok_h = usable * point["success"] / top
        bad_h = usable * point["failure"] / top
        when = datetime.fromtimestamp(point["t"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        tip = f"{when}: {point['success']} succeeded, {point['failure']} failed"
        parts.append(f'<g><title>{escape(tip)}</title>'
                     f'<rect class="ok" x="{x:.1f}" y="{HEIGHT - PAD - ok_h:.1f}" width="{max(slot - 1, 1):.1f}" '
                     f'height="{ok_h:.1f}"/>'
                     f'<rect class="bad" x="{x:.1f}" y="{HEIGHT - PAD - ok_h - bad_h:.1f}" '
                     f'width="{max(slot - 1, 1):.1f}" height="{bad_h:.1f}"/></g>')
    if series:
        first = datetime.fromtimestamp(series[0]["t"], UTC).strftime("%H:%M")
        last = datetime.fromtimestamp(series[-1]["t"], UTC).strftime("%H:%M")
        parts.append(f'<text class="label" x="{PAD}" y="{HEIGHT - 4}">{first}</text>')
        parts.append(f'<text class="label end" x="{WIDTH - PAD}" y="{HEIGHT - 4}">{last} UTC</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
