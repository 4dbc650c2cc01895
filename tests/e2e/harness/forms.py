"""HTML forms as a browser sees them, for the headless sign-in and consent steps.

Only what the pages under test use: <form>, <input>, <button>, <textarea>,
<select>. A form is submitted "as served" with the values it was served with
and its first submit button (what pressing Enter or clicking that button
sends), the way a browser does (HTML Living Standard, "constructing the entry
list").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

_NO_VALUE_TYPES = {"submit", "image", "reset", "button", "file"}


@dataclass
class Form:
    action: str  # as written in the page ("" means the page's own URL)
    method: str  # upper-case; GET when absent or unknown
    fields: list[tuple[str, str]] = field(default_factory=list)  # successful controls, buttons excluded
    buttons: list[tuple[str | None, str]] = field(default_factory=list)  # submit buttons: (name, value)

    def url(self, page_url: str) -> str:
        return urljoin(page_url, self.action)

    def entries(self, button: int | None = 0, overrides: dict[str, str] | None = None) -> list[tuple[str, str]]:
        """The entry list sent when submitted with button number `button`
        (None: without a button, as a script's form.submit() does)."""
        overrides = dict(overrides or {})
        out: list[tuple[str, str]] = []
        for name, value in self.fields:
            out.append((name, overrides.pop(name, value)))
        if button is not None and self.buttons:
            name, value = self.buttons[button]
            if name:
                out.append((name, value))
        out.extend(overrides.items())  # fields a test adds on purpose
        return out

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.fields if n == name), None)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._textarea: tuple[str, list[str]] | None = None
        self._select: tuple[str, list[tuple[str, bool]]] | None = None
        self._option: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            method = a.get("method", "get").upper()
            self._form = Form(action=a.get("action", ""), method=method if method in ("GET", "POST") else "GET")
            self.forms.append(self._form)
            return
        if self._form is None or "disabled" in a:
            return
        if tag == "input":
            kind = a.get("type", "text").lower()
            name = a.get("name")
            if kind == "submit":
                self._form.buttons.append((name or None, a.get("value", "Submit")))
            elif kind in ("checkbox", "radio"):
                if name and "checked" in a:
                    self._form.fields.append((name, a.get("value", "on")))
            elif kind not in _NO_VALUE_TYPES and name:
                self._form.fields.append((name, a.get("value", "")))
        elif tag == "button":
            if a.get("type", "submit").lower() == "submit":
                self._form.buttons.append((a.get("name") or None, a.get("value", "")))
        elif tag == "textarea" and a.get("name"):
            self._textarea = (a["name"], [])
        elif tag == "select" and a.get("name"):
            self._select = (a["name"], [])
        elif tag == "option" and self._select is not None:
            self._option = {"value": a.get("value"), "selected": "selected" if "selected" in a else None, "text": ""}

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)
        if self._option is not None:
            self._option["text"] = (self._option["text"] or "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            self._form.fields.append((self._textarea[0], "".join(self._textarea[1])))
            self._textarea = None
        elif tag == "option" and self._option is not None and self._select is not None:
            value = self._option["value"] if self._option["value"] is not None else (self._option["text"] or "").strip()
            self._select[1].append((value, self._option["selected"] is not None))
            self._option = None
        elif tag == "select" and self._select is not None and self._form is not None:
            name, options = self._select
            chosen = next((v for v, sel in options if sel), options[0][0] if options else None)
            if chosen is not None:
                self._form.fields.append((name, chosen))
            self._select = None


def parse_forms(html: str) -> list[Form]:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.forms
