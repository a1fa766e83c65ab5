"""Parsing of ``originate`` arguments the way FreeSWITCH does it (the parts that matter)."""

from __future__ import annotations

from dataclasses import dataclass, field

ORIGINATE_USAGE = (
    "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] "
    "[<cid_name>] [<cid_num>] [<timeout_sec>]\n"
)


class UsageError(ValueError):
    """The originate arguments cannot be parsed."""


@dataclass(slots=True)
class OriginateRequest:
    dial: str
    """The dial string of the leg, variable blocks removed (``null/2000``)."""
    variables: dict[str, str] = field(default_factory=dict)
    app: str = "park"
    app_arg: str = ""
    extension: str | None = None
    cid_name: str | None = None
    cid_num: str | None = None
    timeout: int | None = None

    @property
    def endpoint(self) -> str:
        return self.dial.split("/", 1)[0]

    @property
    def destination(self) -> str:
        """The destination number: ``1000`` for ``sofia/internal/1000@host``, ``x`` for null/x."""
        last = self.dial.rsplit("/", 1)[-1]
        return last.split("@", 1)[0]


def split_args(text: str) -> list[str]:
    """switch_separate_string(' '): spaces split, single quotes group, ``\\`` escapes."""
    if "\\" not in text and "'" not in text:  # nothing quoted nor escaped (nearly always)
        return [arg for arg in text.split(" ") if arg]
    args: list[str] = []
    cur: list[str] = []
    quoted = False
    started = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "s":
                cur.append(" ")
            elif nxt == "n":
                cur.append("\n")
            elif nxt == ",":
                cur.append("\\,")  # kept for the variable-block layer
            else:
                cur.append(nxt)
            started = True
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
            started = True
        elif ch == " " and not quoted:
            if started:
                args.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
        i += 1
    if started:
        args.append("".join(cur))
    return args


def split_vars(block: str, sep: str = ",") -> list[str]:
    """Split a variable block on ``sep``; ``\\<sep>`` is a literal, quotes group."""
    if "'" not in block and "\\" + sep not in block:  # nothing quoted nor escaped
        return [part for part in block.split(sep) if part]
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(block):
        ch = block[i]
        if ch == "\\" and i + 1 < len(block) and block[i + 1] == sep:
            cur.append(sep)
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return [p for p in parts if p]


def parse_var_block(inner: str) -> dict[str, str]:
    sep = ","
    if inner.startswith("^^") and len(inner) > 2:
        sep, inner = inner[2], inner[3:]
    out: dict[str, str] = {}
    for item in split_vars(inner, sep):
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            continue
        out[name.strip()] = value
    return out


def _take_block(text: str, open_ch: str, close_ch: str) -> tuple[str, str] | None:
    if not text.startswith(open_ch):
        return None
    close = text.find(close_ch)
    if close > 0 and text.find(open_ch, 1, close) == -1:  # not nested: the first close ends it
        return text[1:close], text[close + 1 :]
    depth = 0
    for i, ch in enumerate(text):
        if ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return text[1:i], text[i + 1 :]
    raise UsageError(f"unterminated {open_ch}{close_ch} block")


def parse_dial(dial: str) -> tuple[str, dict[str, str]]:
    """Strip ``{..}``, ``<..>`` and ``[..]`` blocks; return (first target, variables)."""
    variables: dict[str, str] = {}
    rest = dial.strip()
    for open_ch, close_ch in (("<", ">"), ("{", "}")):
        taken = _take_block(rest, open_ch, close_ch)
        if taken is not None:
            variables.update(parse_var_block(taken[0]))
            rest = taken[1]
    # ring-all (,) / failover (|) / enterprise (:_:) lists: the simulator dials the first target
    for sep in (":_:", "|"):
        rest = rest.split(sep, 1)[0]
    first = _first_target(rest)
    taken = _take_block(first, "[", "]")
    if taken is not None:
        variables.update(parse_var_block(taken[0]))
        first = taken[1]
    return first.strip(), variables


def _first_target(text: str) -> str:
    if "," not in text:
        return text
    depth = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0 and (i == 0 or text[i - 1] != "\\"):
            return text[:i]
    return text


def parse_originate(arg: str) -> OriginateRequest:
    args = split_args(arg)
    if len(args) < 2:
        raise UsageError("originate needs a dial string and an application or extension")
    dial, variables = parse_dial(args[0])
    if not dial or "/" not in dial:
        raise UsageError(f"bad dial string {args[0]!r}")
    req = OriginateRequest(dial=dial, variables=variables)
    target = args[1]
    if target.startswith("&"):
        app = target[1:]
        name, paren, app_arg = app.partition("(")
        if paren:
            if not app_arg.endswith(")"):
                raise UsageError("unterminated application arguments")
            app_arg = app_arg[:-1]
        req.app, req.app_arg = name or "park", app_arg
    else:
        req.extension = target
    optional = args[2:]
    if len(optional) >= 3 and optional[2] not in ("", "undef"):
        req.cid_name = optional[2]
    if len(optional) >= 4 and optional[3] not in ("", "undef"):
        req.cid_num = optional[3]
    if len(optional) >= 5:
        try:
            req.timeout = int(optional[4])
        except ValueError:
            req.timeout = None
    return req
