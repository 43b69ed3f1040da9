"""Traefik v3 rule expressions as text -> a small syntax tree.

Traefik parses rules as Go expressions (traefik `pkg/rules/parser.go`, on vulcand/predicate):
matcher calls with string arguments in backticks (raw) or double quotes (Go escapes), combined
with `&&`, `||`, `!` and parentheses; `&&` binds tighter than `||`, `!` tightest. Only the syntax
lives here; what each matcher means is `kroute.rules.traefik`'s business.
"""

from __future__ import annotations

import attrs

from kroute.errors import RuleSyntaxError

#: Deeper nesting than this is refused rather than risking the interpreter's recursion limit.
MAX_DEPTH = 64


@attrs.frozen
class Call:
    """A matcher call, `Host(`example.com`)`; `position` is its offset in the rule text."""

    name: str
    args: tuple[str, ...]
    position: int


@attrs.frozen
class And:
    parts: tuple[Node, ...]


@attrs.frozen
class Or:
    parts: tuple[Node, ...]


@attrs.frozen
class Negation:
    inner: Node


Node = Call | And | Or | Negation

_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"',
}  # fmt: skip
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, reason: str, position: int | None = None) -> RuleSyntaxError:
        return RuleSyntaxError(self.text, self.pos if position is None else position, reason)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def expect(self, token: str) -> None:
        if not self.peek(token):
            found = self.text[self.pos : self.pos + 1] or "end of rule"
            raise self.fail(f"expected {token!r}, found {found!r}")
        self.pos += len(token)

    def parse(self) -> Node:
        self.skip_space()
        if self.pos == len(self.text):
            raise self.fail("empty rule")
        node = self.parse_or()
        self.skip_space()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r}")
        return node

    def parse_or(self) -> Node:
        parts = [self.parse_and()]
        while self.peek("||"):
            self.pos += 2
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self) -> Node:
        parts = [self.parse_unary()]
        while self.peek("&&"):
            self.pos += 2
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested more than {MAX_DEPTH} levels deep")
        try:
            if self.peek("!"):
                self.pos += 1
                return Negation(self.parse_unary())
            if self.peek("("):
                self.pos += 1
                node = self.parse_or()
                self.expect(")")
                return node
            return self.parse_call()
        finally:
            self.depth -= 1

    def parse_call(self) -> Call:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isascii()
            and (self.text[self.pos].isalnum() or self.text[self.pos] == "_")
        ):
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            found = self.text[self.pos : self.pos + 1] or "end of rule"
            raise self.fail(f"expected a matcher such as Host(...), found {found!r}")
        self.expect("(")
        args: list[str] = []
        if not self.peek(")"):
            args.append(self.parse_string())
            while self.peek(","):
                self.pos += 1
                args.append(self.parse_string())
        self.expect(")")
        return Call(name, tuple(args), start)

    def parse_string(self) -> str:
        self.skip_space()
        start = self.pos
        quote = self.text[self.pos : self.pos + 1]
        if quote == "`":
            end = self.text.find("`", start + 1)
            if end == -1:
                raise self.fail("unterminated `string`", start)
            self.pos = end + 1
            return self.text[start + 1 : end]
        if quote == '"':
            return self.parse_quoted()
        found = quote or "end of rule"
        raise self.fail(f"expected a string in backticks or double quotes, found {found!r}")

    def parse_quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.fail('unterminated "string"', start)
            ch = self.text[self.pos]
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch != "\\":
                out.append(ch)
                continue
            esc = self.text[self.pos : self.pos + 1]
            self.pos += 1
            if esc in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[esc])
            elif esc in _HEX_ESCAPES:
                width = _HEX_ESCAPES[esc]
                digits = self.text[self.pos : self.pos + width]
                if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                    raise self.fail(f"bad \\{esc} escape", self.pos - 2)
                code = int(digits, 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise self.fail(f"bad \\{esc} escape", self.pos - 2)
                out.append(chr(code))
                self.pos += width
            else:
                raise self.fail(f"unknown escape \\{esc}", self.pos - 2)


def parse_rule(text: str) -> Node:
    """The syntax tree of a Traefik rule; RuleSyntaxError says where and why it does not parse."""
    return _Parser(text).parse()
