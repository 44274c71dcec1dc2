"""Tokenizer and recursive-descent parser for policy expressions.

Grammar (lowest precedence first)::

    expr     := "if" expr "then" expr "else" expr | or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := sum [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum]
              | sum "is" ("present" | "absent")
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/" | "//") unary)*
    unary    := "-" unary | postfix
    postfix  := primary ("." NAME)*
    primary  := NUMBER | STRING | "true" | "false" | "(" expr ")" | "[" [expr ("," expr)*] "]"
              | NAME "(" NAME "in" expr ["where" expr] ")"             any/all/none/count
              | NAME "(" expr "for" NAME "in" expr ["where" expr] ")"  max/min/sum
              | NAME "(" [expr ("," expr)*] ")" | NAME

Numbers with a decimal point are money (``Decimal``); without, ``int``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from approval_service.policy import ast

KEYWORDS = {
    "and",
    "or",
    "not",
    "in",
    "is",
    "present",
    "absent",
    "if",
    "then",
    "else",
    "where",
    "for",
    "true",
    "false",
}
PREDICATES = ("any", "all", "none", "count")
REDUCERS = ("max", "min", "sum")

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<string>"[^"\\\n]*"|'[^'\\\n]*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|//|[<>+\-*/().,\[\]:])
    """,
    re.VERBOSE,
)


class ExprSyntaxError(Exception):
    """Raised with the offset of the problem; the loader turns it into a PolicySyntaxError."""

    def __init__(self, message: str, offset: int, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.suggestion = suggestion


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, keyword, op, end
    text: str
    start: int
    end: int


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            char = source[pos]
            hint = None
            if char in "=&|!":
                hint = "use == to compare, and/or/not for logic"
            elif char in "\"'":
                hint = "close the string with the same quote on the same line"
            raise ExprSyntaxError(f"unexpected character {char!r}", pos, hint)
        kind = match.lastgroup or ""
        text = match.group()
        if kind != "ws":
            if kind == "name" and text in KEYWORDS:
                kind = "keyword"
            tokens.append(Token(kind, text, match.start(), match.end()))
        pos = match.end()
    tokens.append(Token("end", "", len(source), len(source)))
    return tokens


class Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.index = 0

    # token helpers -------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.index]

    def at(self, *texts: str) -> bool:
        return self.tok.kind in ("keyword", "op") and self.tok.text in texts

    def take(self) -> Token:
        token = self.tok
        self.index += 1
        return token

    def expect(self, text: str, hint: str | None = None) -> Token:
        if not self.at(text):
            found = self.tok.text or "the end of the expression"
            raise ExprSyntaxError(f"expected {text!r} but found {found!r}", self.tok.start, hint)
        return self.take()

    # grammar -------------------------------------------------------------
    def parse(self) -> ast.Node:
        if self.tok.kind == "end":
            raise ExprSyntaxError("the expression is empty", 0)
        node = self.expr()
        if self.tok.kind != "end":
            raise ExprSyntaxError(
                f"unexpected {self.tok.text!r} after a complete expression",
                self.tok.start,
                "join conditions with and/or",
            )
        return node

    def expr(self) -> ast.Node:
        if self.at("if"):
            start = self.take().start
            cond = self.expr()
            self.expect("then", "write: if CONDITION then VALUE else VALUE")
            then = self.expr()
            self.expect("else", "every if needs an else")
            orelse = self.expr()
            return ast.IfElse(start, orelse.end, cond, then, orelse)
        return self.or_()

    def chain(self, operators: tuple[str, ...], operand: Callable[[], ast.Node]) -> ast.Node:
        """``operand (op operand)*``, grouped to the left."""
        node = operand()
        while self.at(*operators):
            op = self.take().text
            right = operand()
            node = ast.Binary(node.start, right.end, op, node, right)
        return node

    def or_(self) -> ast.Node:
        return self.chain(("or",), self.and_)

    def and_(self) -> ast.Node:
        return self.chain(("and",), self.not_)

    def not_(self) -> ast.Node:
        if self.at("not"):
            start = self.take().start
            operand = self.not_()
            return ast.Unary(start, operand.end, "not", operand)
        return self.compare()

    def compare(self) -> ast.Node:
        left = self.sum()
        if self.at("is"):
            self.take()
            if self.at("not"):
                raise ExprSyntaxError(
                    "'is not' is not a test", self.tok.start, "write 'is absent' or 'is present'"
                )
            if not self.at("present", "absent"):
                raise ExprSyntaxError("expected 'present' or 'absent' after 'is'", self.tok.start)
            word = self.take()
            return ast.Presence(left.start, word.end, left, word.text == "present")
        op: str | None = None
        if self.at("==", "!=", "<", "<=", ">", ">=", "in"):
            op = self.take().text
        elif self.at("not") and self.tokens[self.index + 1].text == "in":
            self.index += 2
            op = "not in"
        if op is None:
            return left
        right = self.sum()
        if self.at("==", "!=", "<", "<=", ">", ">="):
            raise ExprSyntaxError(
                "comparisons cannot be chained", self.tok.start, "write a <= b and b <= c"
            )
        return ast.Binary(left.start, right.end, op, left, right)

    def sum(self) -> ast.Node:
        return self.chain(("+", "-"), self.product)

    def product(self) -> ast.Node:
        return self.chain(("*", "/", "//"), self.unary)

    def unary(self) -> ast.Node:
        if self.at("-"):
            start = self.take().start
            operand = self.unary()
            return ast.Unary(start, operand.end, "-", operand)
        return self.postfix()

    def postfix(self) -> ast.Node:
        node = self.primary()
        while self.at("."):
            self.take()
            if self.tok.kind != "name":
                raise ExprSyntaxError("expected a field name after '.'", self.tok.start)
            name = self.take()
            node = ast.Attribute(node.start, name.end, node, name.text)
        return node

    def primary(self) -> ast.Node:
        tok = self.tok
        if tok.kind == "number":
            self.take()
            value: object = Decimal(tok.text) if "." in tok.text else int(tok.text)
            return ast.Literal(tok.start, tok.end, value)
        if tok.kind == "string":
            self.take()
            return ast.Literal(tok.start, tok.end, tok.text[1:-1])
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            self.take()
            return ast.Literal(tok.start, tok.end, tok.text == "true")
        if self.at("("):
            self.take()
            node = self.expr()
            self.expect(")", "close the bracket")
            return node
        if self.at("["):
            start = self.take().start
            items: list[ast.Node] = []
            while not self.at("]"):
                items.append(self.expr())
                if not self.at("]"):
                    self.expect(",", "separate list items with commas")
            end = self.take().end
            return ast.ListLit(start, end, items)
        if tok.kind == "name":
            self.take()
            if self.at("("):
                return self.call(tok)
            return ast.Name(tok.start, tok.end, tok.text)
        found = tok.text or "the end of the expression"
        raise ExprSyntaxError(f"expected a value but found {found!r}", tok.start)

    def call(self, name: Token) -> ast.Node:
        self.expect("(")
        func = name.text
        is_binding = self.tok.kind == "name" and self.tokens[self.index + 1].text == "in"
        if func in PREDICATES:
            if not is_binding:
                raise ExprSyntaxError(
                    f"{func}() takes a list binding",
                    self.tok.start,
                    f'write {func}(c in cards where c.status == "valid")',
                )
            return self.binding(name, None, "in")
        first = self.expr() if not self.at(")") else None
        if func in REDUCERS and first is not None and self.at("for"):
            self.take()
            if self.tok.kind != "name":
                raise ExprSyntaxError("expected a name after 'for'", self.tok.start)
            return self.binding(name, first, f"write {func}(c.expires_on for c in cards)")
        args = [] if first is None else [first]
        while self.at(","):
            self.take()
            args.append(self.expr())
        end = self.expect(")", "close the bracket or separate arguments with commas").end
        if func == "date":
            return self.date_literal(name, args, end)
        return ast.Call(name.start, end, func, args)

    def binding(self, name: Token, value: ast.Node | None, hint: str) -> ast.Aggregate:
        """The rest of an aggregate after its value: ``x in LIST [where TEST])``."""
        var = self.take().text
        self.expect("in", hint)
        source = self.expr()
        where = None
        if self.at("where"):
            self.take()
            where = self.expr()
        end = self.expect(")", "close the bracket").end
        return ast.Aggregate(name.start, end, name.text, var, source, where, value)

    def date_literal(self, name: Token, args: list[ast.Node], end: int) -> ast.Node:
        if (
            len(args) != 1
            or not isinstance(args[0], ast.Literal)
            or not isinstance(args[0].value, str)
        ):
            raise ExprSyntaxError('date() takes one text like date("2025-01-01")', name.start)
        try:
            value = date.fromisoformat(args[0].value)
        except ValueError:
            raise ExprSyntaxError(
                f"{args[0].value!r} is not a real date", args[0].start, "use YYYY-MM-DD"
            ) from None
        return ast.Literal(name.start, end, value)


def parse_expression(source: str) -> ast.Node:
    """Parse one expression; raises :class:`ExprSyntaxError` with the offset."""
    return Parser(source).parse()
