#!/usr/bin/env python3
"""promcheck.py - a strict checker of the Prometheus text exposition format
0.0.4, as resild writes it (daemon/prom.c) and serves it (`metrics`, GET
/metrics).

Stricter than Prometheus itself where the format leaves room, so that a
page that passes here is accepted by any scraper:
  - lines end in "\\n" (no "\\r"), the text ends in "\\n", no NUL, UTF-8;
  - "# HELP name text" and "# TYPE name type" at most once per family, both
    present (unless require_help=False), before the family's first sample;
    HELP text escapes only "\\\\" and "\\n";
  - a family's samples form one contiguous group; no series twice;
  - metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*
    and not "__..."; label values quoted with escapes "\\\\", "\\"", "\\n"
    only; a label at most once per sample;
  - values are Go ParseFloat numbers, "+Inf", "-Inf" or "NaN"; an optional
    integer timestamp; counters are >= 0 (not NaN);
  - histograms: only <name>_bucket/_sum/_count samples; each series (label
    set without le) has buckets with le strictly ascending, cumulative
    counts, the last le="+Inf" equal to its _count, and one _sum and one
    _count; le appears on buckets only.

As a module:
    import promcheck
    fams = promcheck.parse(text)      # raises promcheck.PromError
    fams["resild_decisions_total"].samples -> [(name, {labels}, value)]
    promcheck.value(fams, "resild_uptime_seconds")  # one sample's value
    errs = promcheck.check(text)      # [] or ["line N: ..."]
From the shell: promcheck.py [FILE|-] prints the errors and exits 1, or
prints "ok: N families, M samples" and exits 0.
"""
import math
import re
import sys

METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
SPECIAL = {"+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf, "NaN": math.nan}
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
TS_RE = re.compile(r"-?[0-9]+")


class PromError(Exception):
    def __init__(self, lineno, msg):
        super().__init__("line %d: %s" % (lineno, msg))
        self.lineno = lineno


class Family:
    def __init__(self, name):
        self.name = name
        self.help = None
        self.type = None
        self.samples = []  # (sample name, {label: value}, float value)
        self.raw = []  # the same with the line number, for errors
        self.first_line = None

    def __repr__(self):
        return "Family(%s, %s, %d samples)" % (self.name, self.type, len(self.samples))


def parse_value(s, lineno):
    if s in SPECIAL:
        return SPECIAL[s]
    if not FLOAT_RE.fullmatch(s):
        raise PromError(lineno, "bad value %r" % s)
    return float(s)


def unescape(s, allowed, lineno, what):
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in allowed:
                raise PromError(lineno, "bad escape in %s: %r" % (what, s[i : i + 2]))
            out.append(allowed[s[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_labels(line, i, lineno):
    """Parse from line[i] == '{' to the closing '}'.  Returns (labels, next
    index)."""
    labels = {}
    i += 1
    while True:
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        m = LABEL_RE.match(line, i)
        if not m:
            raise PromError(lineno, "bad label name at column %d" % (i + 1))
        name = m.group(0)
        if name.startswith("__"):
            raise PromError(lineno, "reserved label name %r" % name)
        if name in labels:
            raise PromError(lineno, "label %r twice" % name)
        i = m.end()
        if line[i : i + 2] != '="':
            raise PromError(lineno, "label %r: expected =\" at column %d" % (name, i + 1))
        i += 2
        j = i
        while j < len(line) and line[j] != '"':
            j += 2 if line[j] == "\\" else 1
        if j >= len(line):
            raise PromError(lineno, "label %r: unterminated value" % name)
        labels[name] = unescape(line[i:j], {"\\": "\\", '"': '"', "n": "\n"}, lineno, "label value")
        i = j + 1
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        raise PromError(lineno, "expected , or } after label %r" % name)


def family_of(name, fams):
    """The family a sample name belongs to, per the TYPE lines seen."""
    for suffix, types in (("_bucket", ("histogram",)), ("_sum", ("histogram", "summary")), ("_count", ("histogram", "summary"))):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in fams and fams[base].type in types:
                return base
    return name


def check_histograms(fam):
    series = {}
    for sname, labels, v, lineno in fam.raw:
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        s = series.setdefault(key, {"buckets": [], "sum": None, "count": None, "line": lineno})
        if sname == fam.name + "_bucket":
            if "le" not in labels:
                raise PromError(lineno, "%s: bucket without le" % fam.name)
            le = parse_value(labels["le"], lineno)
            if math.isnan(le):
                raise PromError(lineno, "%s: le is NaN" % fam.name)
            if s["sum"] is not None or s["count"] is not None:
                raise PromError(lineno, "%s: bucket after _sum/_count" % fam.name)
            s["buckets"].append((le, labels["le"], v, lineno))
        elif "le" in labels:
            raise PromError(lineno, "%s: le on %s" % (fam.name, sname))
        elif sname == fam.name + "_sum":
            if s["sum"] is not None:
                raise PromError(lineno, "%s: _sum twice" % fam.name)
            s["sum"] = v
        elif sname == fam.name + "_count":
            if s["count"] is not None:
                raise PromError(lineno, "%s: _count twice" % fam.name)
            s["count"] = v
        else:
            raise PromError(lineno, "%s: sample %s in a histogram" % (fam.name, sname))
    for key, s in series.items():
        lineno = s["line"]
        b = s["buckets"]
        if not b:
            raise PromError(lineno, "%s%s: no buckets" % (fam.name, dict(key)))
        for i, (le, les, v, ln) in enumerate(b):
            if v < 0 or math.isnan(v) or v != math.floor(v):
                raise PromError(ln, "%s: bucket count %r is not a count" % (fam.name, v))
            if i and not le > b[i - 1][0]:
                raise PromError(ln, "%s: le %s not above %s" % (fam.name, les, b[i - 1][1]))
            if i and v < b[i - 1][2]:
                raise PromError(ln, "%s: buckets not cumulative (le=%s: %r < %r)" % (fam.name, les, v, b[i - 1][2]))
        if b[-1][1] != "+Inf":
            raise PromError(b[-1][3], "%s: last bucket is le=%r, not \"+Inf\"" % (fam.name, b[-1][1]))
        if s["count"] is None or s["sum"] is None:
            raise PromError(lineno, "%s%s: _sum or _count missing" % (fam.name, dict(key)))
        if s["count"] != b[-1][2]:
            raise PromError(lineno, "%s%s: _count %r != +Inf bucket %r" % (fam.name, dict(key), s["count"], b[-1][2]))


def parse(text, require_help=True):
    """Families by name, in order of appearance; raises PromError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PromError(text[: e.start].count(b"\n") + 1, "not UTF-8")
    if text and not text.endswith("\n"):
        raise PromError(text.count("\n") + 1, "text does not end in a newline")
    fams = {}
    closed = set()  # families whose group has ended
    current = None
    seen = set()  # (sample name, sorted labels)
    lines = text.split("\n")[:-1] if text else []
    for lineno, line in enumerate(lines, 1):
        if "\r" in line or "\0" in line:
            raise PromError(lineno, "carriage return or NUL in a line")
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE"):
                kw, name = parts[1], parts[2]
                rest = parts[3] if len(parts) > 3 else ""
                if not METRIC_RE.fullmatch(name):
                    raise PromError(lineno, "%s: bad metric name %r" % (kw, name))
                if name in closed or (name in fams and fams[name].samples):
                    raise PromError(lineno, "%s %s after its samples" % (kw, name))
                if current is not None and current != name:
                    closed.add(current)
                current = name
                fam = fams.setdefault(name, Family(name))
                if fam.first_line is None:
                    fam.first_line = lineno
                if kw == "HELP":
                    if fam.help is not None:
                        raise PromError(lineno, "HELP %s twice" % name)
                    fam.help = unescape(rest, {"\\": "\\", "n": "\n"}, lineno, "HELP")
                else:
                    if fam.type is not None:
                        raise PromError(lineno, "TYPE %s twice" % name)
                    if rest not in TYPES:
                        raise PromError(lineno, "TYPE %s: bad type %r" % (name, rest))
                    fam.type = rest
            continue  # any other comment
        m = METRIC_RE.match(line)
        if not m:
            raise PromError(lineno, "bad metric name")
        sname = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, lineno)
        rest = line[i:]
        if not rest or rest[0] not in " \t":
            raise PromError(lineno, "expected a blank and a value after %s" % sname)
        toks = rest.split()
        if len(toks) not in (1, 2):
            raise PromError(lineno, "expected value [timestamp], got %r" % rest)
        v = parse_value(toks[0], lineno)
        if len(toks) == 2 and not TS_RE.fullmatch(toks[1]):
            raise PromError(lineno, "bad timestamp %r" % toks[1])
        fname = family_of(sname, fams)
        if fname != current:
            if fname in closed or (fname in fams and fams[fname].samples):
                raise PromError(lineno, "samples of %s not in one group" % fname)
            if current is not None:
                closed.add(current)
            current = fname
        fam = fams.setdefault(fname, Family(fname))
        if fam.first_line is None:
            fam.first_line = lineno
        if require_help and (fam.help is None or fam.type is None):
            raise PromError(lineno, "sample of %s before its HELP and TYPE" % fname)
        series = (sname, tuple(sorted(labels.items())))
        if series in seen:
            raise PromError(lineno, "series %s%s twice" % (sname, labels))
        seen.add(series)
        if fam.type == "counter" and not v >= 0:
            raise PromError(lineno, "counter %s is %r" % (sname, v))
        if fam.type in ("counter", "gauge", "untyped", None) and sname != fname:
            raise PromError(lineno, "sample %s in family %s" % (sname, fname))
        fam.samples.append((sname, labels, v))
        fam.raw.append((sname, labels, v, lineno))
    for fam in fams.values():
        if require_help and (fam.help is None or fam.type is None):
            raise PromError(fam.first_line, "%s: HELP or TYPE missing" % fam.name)
        if fam.type == "histogram" and fam.samples:
            check_histograms(fam)
    return fams


def check(text, require_help=True):
    try:
        parse(text, require_help)
        return []
    except PromError as e:
        return [str(e)]


def value(fams, name, **labels):
    """The value of the one sample of family or sample name whose labels
    include labels; KeyError if there is none or more than one."""
    fam = fams.get(family_of(name, fams)) or fams.get(name)
    if fam is None:
        raise KeyError(name)
    hits = [v for n, ls, v in fam.samples if n == name and all(ls.get(k) == str(x) for k, x in labels.items())]
    if len(hits) != 1:
        raise KeyError("%s%s: %d samples" % (name, labels, len(hits)))
    return hits[0]


def main(argv):
    path = argv[1] if len(argv) > 1 else "-"
    data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    try:
        fams = parse(data)
    except PromError as e:
        print(e)
        return 1
    print("ok: %d families, %d samples" % (len(fams), sum(len(f.samples) for f in fams.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
