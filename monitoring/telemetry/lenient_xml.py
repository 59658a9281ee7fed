"""Read an XML document that is not well-formed, keeping every element that can be told apart.

nvidia-smi writes process names and other strings into its XML without escaping them, so a
name holding ``&`` or ``<``, or bytes left by a concurrent write, makes the whole document
unreadable to a strict parser. Only for such documents (the strict parser runs first, and
costs nothing extra when it succeeds), this reader finds the tags itself: text between tags
is text whatever it holds, a closing tag closes back to its opening one, and a stray tag
inside a value costs that value the rest of its text, never its neighbours.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

_IGNORED = re.compile(
    r"<\?.*?\?>|<!--.*?-->|<!\[CDATA\[.*?\]\]>|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>", re.S
)
_TAG = re.compile(
    r"<(/?)([A-Za-z_][\w.\-]*)((?:\s+[\w.\-:]+\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*)\s*(/?)>"
)
_ATTRIBUTE = re.compile(r"([\w.\-:]+)\s*=\s*(?:\"([^\"<]*)\"|'([^'<]*)')")


def parse_lenient(text: str) -> ET.Element | None:
    """The document's first top-level element, or None when ``text`` holds no tag at all."""
    text = _IGNORED.sub("", text)
    holder = ET.Element("document")
    stack = [holder]
    position = 0
    for match in _TAG.finditer(text):
        _add_text(stack[-1], text[position : match.start()])
        position = match.end()
        closing, name, attributes, empty = match.groups()
        if closing:
            for depth in range(len(stack) - 1, 0, -1):
                if stack[depth].tag == name:
                    del stack[depth:]
                    break
            continue  # a closing tag that opens nothing: dropped
        element = ET.SubElement(stack[-1], name, _attributes(attributes))
        if not empty:
            stack.append(element)
    _add_text(stack[-1], text[position:])
    return holder[0] if len(holder) else None


def _add_text(parent: ET.Element, raw: str) -> None:
    """Text inside ``parent``: its own text before any child, else the last child's tail."""
    if not raw:
        return
    value = html.unescape(raw)
    if len(parent):
        parent[-1].tail = (parent[-1].tail or "") + value
    else:
        parent.text = (parent.text or "") + value


def _attributes(raw: str) -> dict[str, str]:
    return {
        name: html.unescape(double if double else single)
        for name, double, single in _ATTRIBUTE.findall(raw)
    }
