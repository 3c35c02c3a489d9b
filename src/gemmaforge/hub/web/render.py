"""Safe rendering for the hub's pages: a card's Markdown to inert HTML, and the loss curve.

Cards are written by publishers, so they are untrusted: markdown-it-py parses them with raw
HTML off (a `<script>` in a card is text), images become links (a remote image would tell
its host who viewed the page), and nh3 (the Rust `ammonia` sanitiser) cleans the result to
an allow-list of tags and `http`/`https`/`mailto` links, which drops `javascript:` and
`data:` hrefs whatever markdown-it let through.
"""

from __future__ import annotations

import functools
import html
import math

ALLOWED_TAGS = {
    "a", "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "del",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "th": {"style"}, "td": {"style"}, "ol": {"start"}}


@functools.lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    md.enable("strikethrough")

    def image(renderer, tokens, idx, options, env):
        token = tokens[idx]
        src = str(token.attrGet("src") or "")
        alt = html.escape(token.content or "image")
        # Never loaded: shown as a link the reader may choose to follow.
        return f'<a href="{html.escape(src)}">[image: {alt}]</a>'

    md.add_render_rule("image", image)
    return md


def card_html(markdown: str) -> str:
    """The card's Markdown (YAML front matter dropped) as sanitised HTML."""
    import nh3

    body = markdown
    if body.startswith("---\n"):
        end = body.find("\n---", 4)
        body = body[end + 4 :] if end >= 0 else body
    rendered = _parser().render(body[:200_000])
    return nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
        filter_style_properties={"text-align"},
    )


def loss_svg(points: list[dict], width: int = 640, height: int = 240) -> str | None:
    """An SVG line chart of loss (and eval loss) against step, or None without points.
    Drawn here rather than with matplotlib: a page render must stay in milliseconds."""
    series = {
        key: [
            (p["step"], p[key])
            for p in points
            if isinstance(p, dict)
            and isinstance(p.get("step"), int | float)
            and isinstance(p.get(key), int | float)
            and math.isfinite(p[key])
        ]
        for key in ("loss", "eval_loss")
    }
    if not series["loss"]:
        return None
    every = series["loss"] + series["eval_loss"]
    x0, x1 = min(x for x, _ in every), max(x for x, _ in every)
    y0, y1 = min(y for _, y in every), max(y for _, y in every)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pad = 36

    def at(x, y):
        px = pad + (x - x0) / (x1 - x0) * (width - 2 * pad)
        py = height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)
        return f"{px:.1f},{py:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="training loss curve" class="loss">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'class="axis"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>',
        f'<text x="{pad}" y="{height - 10}">step {x0:g}</text>',
        f'<text x="{width - pad}" y="{height - 10}" text-anchor="end">{x1:g}</text>',
        f'<text x="4" y="{pad - 8}">loss {y1:.3g}</text>',
        f'<text x="4" y="{height - pad + 14}">{y0:.3g}</text>',
    ]
    for key, css in (("loss", "train"), ("eval_loss", "eval")):
        if series[key]:
            line = " ".join(at(x, y) for x, y in series[key])
            parts.append(f'<polyline points="{line}" class="{css}" fill="none"/>')
    parts.append("</svg>")
    return "".join(parts)
