"""Pure: forge Markdown -> the text a reader of the rendered page sees, and the commands in it.

Issue bodies, comments and reviews are parsed as CommonMark (with GitHub's tables and
strikethrough) by markdown-it-py, and rendered back to plain text the way the forge page shows
them: code stays code (fenced), and whatever does not render never reaches a model: HTML
comments, link reference definitions (``[//]: # (...)``), link titles, image alt text, HTML
attributes, declarations, processing instructions and CDATA, the content of elements a forge
strips or a browser hides (``<script>``, ``<style>``, ``hidden``, ...), and characters that
show nothing or only change how others look (zero-width, tags, variation selectors, controls).
Where the runner cannot tell what a reader sees, as under a direction override, it refuses
(``UnreadableText``) rather than guess. Nothing here touches the disk, network or a process.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode


class UnreadableText(ValueError):
    """The runner cannot tell what a reader of the text sees; the message says what to fix."""


# Characters that reorder the text around them: what shows is not what is stored (Trojan Source).
DIRECTION_CHANGING = {
    "\u202a": "LEFT-TO-RIGHT EMBEDDING", "\u202b": "RIGHT-TO-LEFT EMBEDDING",
    "\u202d": "LEFT-TO-RIGHT OVERRIDE", "\u202e": "RIGHT-TO-LEFT OVERRIDE",
    "\u2066": "LEFT-TO-RIGHT ISOLATE", "\u2067": "RIGHT-TO-LEFT ISOLATE",
    "\u2068": "FIRST STRONG ISOLATE",
}
# Default-ignorable code points that are not format characters (Cf): they show nothing, or only
# change how the character before them looks (variation selectors smuggle bytes that way).
_IGNORABLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]")
# Unicode categories a reader never sees: controls, format, private use, surrogates, unassigned.
_UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})
_KEEP = frozenset("\n\t")
# Elements whose content a reader does not see: stripped by the forges' sanitisers with their
# content, or never shown by a browser.
_HIDDEN_ELEMENTS = frozenset({
    "script", "style", "template", "head", "title", "iframe", "object", "embed", "noscript",
    "noembed", "noframes", "svg", "math", "textarea", "select", "option", "datalist", "frame",
    "frameset", "applet", "audio", "video", "canvas", "dialog", "meta", "link", "base",
})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr", "param", "keygen"})
_BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                     "details", "summary", "blockquote", "pre", "table", "ul", "ol", "dl",
                     "dt", "dd", "hr"})
_UNFINISHED = re.compile(r"<[!?/A-Za-z]")
_LANGUAGE = re.compile(r"^[A-Za-z0-9_+#.-]{1,30}$")
_COMMAND = re.compile(r"^/(?P<name>[a-z][a-z-]*)(?:[ \t]+(?P<args>.*))?$")

_PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


@dataclass(frozen=True)
class Command:
    """A command a reader sees as a paragraph line: ``/kill too slow`` -> ("kill", "too slow")."""

    name: str
    argument: str


def visible_title(title: str) -> str:
    """An issue title as it shows: forges render titles as plain text, not Markdown.

    Raises ``UnreadableText`` for a direction-changing character."""
    return _clean_characters(_refuse_direction(title, "title")).replace("\n", " ").strip()


def visible(markdown: str, *, what: str = "text") -> str:
    """What a reader of the rendered ``markdown`` sees, as plain text with code kept as code.

    Raises ``UnreadableText`` when it cannot tell (a direction override or embedding)."""
    rendered = _Renderer().document(_PARSER.parse(_normalise(markdown)))
    return _clean_characters(_refuse_direction(rendered, what))


def commands(markdown: str) -> list[Command]:
    """The commands (``/name rest of line``) that are paragraph lines at the top level of the
    text: not in code, code spans, quotes, lists, tables, HTML elements or hidden text. The
    argument is the rest of the command's own line only."""
    found = []
    renderer = _Renderer()
    for node in SyntaxTreeNode(_PARSER.parse(_normalise(markdown))).children:
        if node.type == "html_block":
            renderer.html(node.content)  # a hidden element may cover what follows
            continue
        if node.type != "paragraph" or renderer.in_html:
            continue
        for line in renderer.inline(node.children[0]).split("\n"):
            match = _COMMAND.match(_clean_characters(line).strip())
            if match is not None:
                found.append(Command(match.group("name"), (match.group("args") or "").strip()))
    return found


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))


def _refuse_direction(text: str, what: str) -> str:
    for char, name in DIRECTION_CHANGING.items():
        if char in text:
            raise UnreadableText(
                f"the {what} holds U+{ord(char):04X} {name}, which makes the characters around "
                "it show in another order than they are stored, so the runner cannot tell what "
                f"a reader sees; remove it from the {what}")
    return text


def _clean_characters(text: str) -> str:
    out = []
    for char in _IGNORABLE.sub("", text):
        category = unicodedata.category(char)
        if category in ("Zl", "Zp"):
            out.append("\n")
        elif char in _KEEP or category not in _UNSEEN_CATEGORIES:
            out.append(char)
    return "".join(out)


class _Html(HTMLParser):
    """Raw HTML -> its shown text. One instance per document: an element opened in one HTML
    block hides the Markdown after it until it is closed, as in the browser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hidden: list[str] = []
        self.open: list[str] = []
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BREAKS:
            self.out.append("\n")
        if tag in _VOID:
            return
        self.open.append(tag)
        names = {name for name, _ in attrs}
        if self.hidden or tag in _HIDDEN_ELEMENTS or "hidden" in names:
            self.hidden.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BREAKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag):]
        if tag in self.hidden:  # close it and anything left open inside it
            del self.hidden[len(self.hidden) - 1 - self.hidden[::-1].index(tag):]
        if tag in _BREAKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(data)

    # Comments, declarations, processing instructions and CDATA render as nothing.
    def handle_comment(self, data: str) -> None:
        pass

    def handle_decl(self, decl: str) -> None:
        pass

    def handle_pi(self, data: str) -> None:
        pass

    def unknown_decl(self, data: str) -> None:
        pass

    def take(self, fragment: str) -> str:
        self.out = []
        try:
            self.feed(fragment)
            if _UNFINISHED.match(self.rawdata):  # a tag, comment or declaration cut by the end
                self.rawdata = ""  # of the document shows nothing in a browser (HTML's EOF rules)
            self.goahead(True)  # anything else left over is text
        except AssertionError:  # markup the stdlib parser gives up on ("<![!"): a browser makes
            self.reset()  # it a bogus comment; the rest of this fragment is dropped, not guessed
        return "".join(self.out)


class _Renderer:
    def __init__(self) -> None:
        self._html = _Html()

    @property
    def hiding(self) -> bool:
        return bool(self._html.hidden)

    @property
    def in_html(self) -> bool:
        """Inside an HTML element (``<details>``, ``<div>``...), which may hide what it holds."""
        return bool(self._html.open)

    def html(self, fragment: str) -> str:
        return self._html.take(fragment)

    def document(self, tokens: list[Token]) -> str:
        text = self._blocks(SyntaxTreeNode(tokens).children, "\n\n")
        return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", text)).strip()

    def _blocks(self, nodes: list[SyntaxTreeNode], gap: str) -> str:
        parts = [self._block(node) for node in nodes]
        return gap.join(part for part in parts if part.strip())

    def _block(self, node: SyntaxTreeNode) -> str:
        kind = node.type
        if kind == "html_block":
            return self.html(node.content).strip("\n")
        if self.hiding:
            return ""
        if kind == "paragraph":
            return self.inline(node.children[0])
        if kind == "heading":
            return "#" * int(node.tag[1:]) + " " + self.inline(node.children[0])
        if kind in ("fence", "code_block"):
            return _fenced(node.content, node.info if kind == "fence" else "")
        if kind == "hr":
            return "---"
        if kind == "blockquote":
            inner = self._blocks(node.children, "\n\n")
            return "\n".join("> " + line if line else ">" for line in inner.split("\n"))
        if kind in ("bullet_list", "ordered_list"):
            return self._list(node)
        if kind == "table":
            return self._table(node)
        return self._blocks(node.children, "\n\n")

    def _list(self, node: SyntaxTreeNode) -> str:
        start = int(str(node.attrs.get("start", 1)))
        tight = not any(child.type == "paragraph" and not child.hidden
                        for item in node.children for child in item.children)
        items = []
        for n, item in enumerate(node.children):
            marker = f"{start + n}. " if node.type == "ordered_list" else "- "
            inner = self._blocks(item.children, "\n" if tight else "\n\n")
            lines = inner.split("\n") if inner else [""]
            pad = " " * len(marker)
            items.append("\n".join([marker + lines[0]] + [pad + line if line else ""
                                                           for line in lines[1:]]))
        return ("\n" if tight else "\n\n").join(items)

    def _table(self, node: SyntaxTreeNode) -> str:
        rows = []
        for section in node.children:
            for row in section.children:
                cells = [self.inline(cell.children[0]) if cell.children else ""
                         for cell in row.children]
                rows.append("| " + " | ".join(c.replace("\n", " ") for c in cells) + " |")
                if section.type == "thead":
                    rows.append("|" + "---|" * len(cells))
        return "\n".join(rows)

    def inline(self, node: SyntaxTreeNode) -> str:
        """The shown text of an inline node, code spans in backticks."""
        out: list[str] = []
        for child in node.children:
            kind = child.type
            if kind == "html_inline":
                out.append(self.html(child.content))
            elif self.hiding:
                continue
            elif kind == "text":
                out.append(child.content)
            elif kind in ("softbreak", "hardbreak"):
                out.append("\n")
            elif kind == "code_inline":
                out.append(_code_span(child.content))
            elif kind == "image":
                out.append("[image]")  # the alt text shows only when the image fails
            else:  # emphasis, strong, strikethrough, links: their visible text
                out.append(self.inline(child))
        return "".join(out)


def _code_span(code: str) -> str:
    ticks = "`" * (max((len(run) for run in re.findall("`+", code)), default=0) + 1)
    pad = " " if code.startswith("`") or code.endswith("`") else ""
    return f"{ticks}{pad}{code}{pad}{ticks}"


def _fenced(code: str, info: str) -> str:
    words = info.split()
    language = words[0] if words and _LANGUAGE.match(words[0]) else ""
    fence = "`" * max(3, max((len(run) for run in re.findall("`{3,}", code)), default=0) + 1)
    return f"{fence}{language}\n{code.rstrip(chr(10))}\n{fence}"
