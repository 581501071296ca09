"""The HTML report: :class:`~analyzer.report.viewmodel.ReportView` -> one self-contained page.

The template (``analyzer/templates/report.html.j2``, package data) only lays out the view:
autoescaping is on, so every string from the log is escaped, and a StrictUndefined
environment makes a typo an error rather than an empty cell. The page carries its stylesheet
and its one small script inline, and a Content-Security-Policy that allows nothing else: no
network request, and no script but ours (by hash) even if some text ever escaped escaping.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

import jinja2
from markupsafe import Markup

from analyzer.report.i18n import get_locale
from analyzer.report.viewmodel import ReportView

__all__ = ["render_html"]

TEMPLATE = "report.html.j2"


@cache
def _environment(lang: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("analyzer", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.install_gettext_translations(get_locale(lang).translations, newstyle=True)
    return env


@cache
def _asset(name: str) -> str:
    loader = _environment("en").loader
    assert loader is not None
    source, _, _ = loader.get_source(_environment("en"), name)
    return source


def render_html(view: ReportView) -> str:
    """The report page for ``view`` (a complete HTML document)."""
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'")
    template = _environment(view.lang).get_template(TEMPLATE)
    # our own stylesheet, script and policy, shipped with the package: never log text
    return template.render(view=view, style=Markup(_asset("report.css")),  # noqa: S704
                           script=Markup(script), csp=Markup(csp))  # noqa: S704
