#!/usr/bin/env python3
"""Generate src/k8s/table.rs: the protobuf-to-JSON field table for
Kubernetes objects.

It reads, at one release tag, three upstream repositories (git directories,
read with `git show`, so no work tree is needed):

  k8s.io/api                       every <group>/<version>/ package
  k8s.io/apimachinery              pkg/apis/meta/v1, pkg/api/resource,
                                   pkg/util/intstr, pkg/runtime
  k8s.io/apiextensions-apiserver   pkg/apis/apiextensions/v1

From each package it takes `generated.proto` (message names, field numbers,
wire types, repeated/map) and the Go sources (struct tags: JSON name,
omitempty, inline; Go types: pointer or value, named slice types) and from
`register.go` the group name and the kinds registered for the group version.

Usage:
  python3 gen/k8s_table.py --api DIR --apimachinery DIR --apiextensions DIR \
      --tag v0.33.13 > src/k8s/table.rs

DIR is a git directory (bare or not) of github.com/kubernetes/<repo>
holding the tag (e.g. the snapshots `fetch github:kubernetes/api` gives).
Python 3 standard library only.
"""

import argparse
import re
import subprocess
import sys

# Messages whose JSON form comes from a hand-written MarshalJSON rather than
# from their struct fields. Keyed by short message name (see short_name).
SHAPES = {
    "meta/v1.Time": "Time",
    "meta/v1.MicroTime": "MicroTime",
    "meta/v1.Duration": "Duration",
    "meta/v1.FieldsV1": "RawJson",
    "meta/v1.GroupVersion": "GroupVersion",
    "api/resource.Quantity": "Quantity",
    "api/resource.QuantityValue": "Quantity",
    "util/intstr.IntOrString": "IntOrString",
    "runtime.RawExtension": "RawJson",
    "runtime.Unknown": "Unknown",
    "apiextensions/v1.JSON": "RawJson",
    "apiextensions/v1.JSONSchemaPropsOrArray": "SchemaOrArray",
    "apiextensions/v1.JSONSchemaPropsOrBool": "SchemaOrBool",
    "apiextensions/v1.JSONSchemaPropsOrStringArray": "SchemaOrStringArray",
}

SCALARS = {
    "string": "S",
    "bytes": "B",
    "bool": "Z",
    "int32": "I",
    "int64": "L",
    "double": "D",
}

# Option kinds every group version registers (metav1.AddToGroupVersion).
META_OPTION_KINDS = [
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "UpdateOptions",
    "WatchEvent",
]


def git(gitdir, *args):
    return subprocess.run(
        ["git", "--git-dir", gitdir, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def ls(gitdir, tag, path):
    out = git(gitdir, "ls-tree", "--name-only", f"{tag}:{path}" if path else tag)
    return out.split()


def show(gitdir, tag, path):
    return git(gitdir, "show", f"{tag}:{path}")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(strip_line_comment(line) for line in text.split("\n"))


def strip_line_comment(line):
    # `//` outside backquoted struct tags and string literals.
    out, quote = [], None
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "`\"":
            quote = c
        elif line.startswith("//", i):
            break
        out.append(c)
        i += 1
    return "".join(out)


class ProtoField:
    def __init__(self, label, ty, name, num, map_kv=None):
        self.label, self.ty, self.name, self.num, self.map_kv = label, ty, name, num, map_kv


def parse_proto(text):
    """Returns (package, {message: [ProtoField]})."""
    text = strip_comments(text)
    package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M).group(1)
    messages = {}
    for m in re.finditer(r"^message\s+(\w+)\s*\{(.*?)^\}", text, re.M | re.S):
        body = m.group(2)
        if re.search(r"^\s*(message|oneof|enum)\s+\w+\s*\{", body, re.M):
            raise SystemExit(f"nested declarations in {m.group(1)} are not handled")
        fields = []
        for f in re.finditer(
            r"(optional|repeated|required)?\s*(map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;",
            body,
        ):
            label, ty, mk, mv, name, num = f.groups()
            if mk:
                fields.append(ProtoField("map", None, name, int(num), (mk, mv)))
            else:
                fields.append(ProtoField(label or "optional", ty, name, int(num)))
        messages[m.group(1)] = fields
    return package, messages


class GoField:
    def __init__(self, name, ty, json, omit, num):
        self.name, self.ty, self.json, self.omit, self.num = name, ty, json, omit, num


def parse_go(sources):
    """Returns ({struct: [GoField]}, {named non-struct type: underlying})."""
    structs, named = {}, {}
    for text in sources:
        imports = {}
        for block in re.findall(r"^import\s*\((.*?)\)", text, re.M | re.S) + re.findall(
            r"^import\s+(\w*\s*\"[^\"]+\")", text, re.M
        ):
            for alias, path in re.findall(r"^\s*(\w*)\s*\"([^\"]+)\"", block, re.M):
                imports[alias or path.rsplit("/", 1)[-1]] = path
        lines = text.split("\n")
        i = 0
        while i < len(lines):
            line = strip_line_comment(lines[i])
            m = re.match(r"^\s*type\s+(\w+)\s+struct\s*\{\s*\}\s*$", line)
            if m:
                structs[m.group(1)] = []
                i += 1
                continue
            m = re.match(r"^\s*type\s+(\w+)\s+struct\s*\{\s*$", line)
            if m:
                fields, depth = [], 1
                i += 1
                while i < len(lines) and depth > 0:
                    body = strip_line_comment(lines[i])
                    depth += body.count("{") - body.count("}")
                    if depth == 1:
                        f = parse_go_field(body)
                        if f:
                            fields.append(f)
                    i += 1
                structs[m.group(1)] = fields
                continue
            m = re.match(r"^\s*type\s+(\w+)\s+([\w.\[\]*]+)\s*$", line)
            if m:
                underlying = m.group(2)
                alias, dot, rest = underlying.partition(".")
                if dot and alias in imports:
                    # A defined type over another package's type; keep the
                    # import path so the struct can be found there.
                    underlying = imports[alias] + "." + rest
                named[m.group(1)] = underlying
            i += 1
    return structs, named


def parse_go_field(line):
    m = re.match(r"^\s*(?:(\w+)\s+)?([\w.\[\]*]+)\s+`([^`]*)`\s*$", line)
    if not m:
        return None
    name, ty, tag = m.groups()
    pb = re.search(r'protobuf:"([^"]*)"', tag)
    if not pb or pb.group(1) == "-":
        return None
    parts = pb.group(1).split(",")
    num = int(parts[1])
    js = re.search(r'json:"([^"]*)"', tag)
    if name is None:
        # An embedded field: encoding/json inlines it unless the tag names it.
        base = ty.lstrip("*").split(".")[-1]
        json_name, omit = (js.group(1).split(",")[0], "omitempty" in js.group(1).split(",")[1:]) if js else ("", False)
        if json_name == "-":
            return None
        return GoField(base, ty, json_name, omit, num)
    if js:
        opts = js.group(1).split(",")
        if opts[0] == "-" and len(opts) == 1:
            return None
        return GoField(name, ty, opts[0] or name, "omitempty" in opts[1:], num)
    return GoField(name, ty, name, False, num)


PREFIXES = [
    ("k8s.io.api.", ""),
    ("k8s.io.apimachinery.pkg.apis.", ""),
    ("k8s.io.apimachinery.pkg.", ""),
    ("k8s.io.apiextensions_apiserver.pkg.apis.", ""),
]


def short_name(package, message):
    """`k8s.io.api.apps.v1` + `Deployment` -> `apps/v1.Deployment`."""
    for prefix, repl in PREFIXES:
        if package.startswith(prefix):
            rest = package[len(prefix):]
            return repl + rest.replace(".", "/") + "." + message
    raise SystemExit(f"unexpected package {package}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--apimachinery", required=True)
    ap.add_argument("--apiextensions", required=True)
    ap.add_argument("--tag", required=True)
    args = ap.parse_args()
    tag = args.tag

    # (git dir, package directory, label for the header)
    pkgs = []
    for group in ls(args.api, tag, ""):
        try:
            versions = ls(args.api, tag, group)
        except subprocess.CalledProcessError:
            continue
        for version in versions:
            try:
                files = ls(args.api, tag, f"{group}/{version}")
            except subprocess.CalledProcessError:
                continue
            if "generated.proto" in files:
                pkgs.append((args.api, f"{group}/{version}"))
    for d in ["pkg/apis/meta/v1", "pkg/api/resource", "pkg/util/intstr", "pkg/runtime"]:
        pkgs.append((args.apimachinery, d))
    pkgs.append((args.apiextensions, "pkg/apis/apiextensions/v1"))

    messages = {}  # short name -> (package, [ProtoField], structs, named)
    go_pkgs = {}  # Go import path -> structs
    kinds = []  # (apiVersion, kind, short name)
    for gitdir, d in pkgs:
        proto_text = show(gitdir, tag, f"{d}/generated.proto")
        package, protos = parse_proto(proto_text)
        go_package = re.search(r'option go_package = "([^"]+)"', proto_text).group(1)
        names = ls(gitdir, tag, d)
        sources = [
            show(gitdir, tag, f"{d}/{n}")
            for n in names
            if n.endswith(".go") and not n.endswith("_test.go") and not n.startswith("zz_generated")
            and n != "generated.pb.go"
        ]
        structs, named = parse_go(sources)
        go_pkgs[go_package] = structs
        for msg, fields in protos.items():
            messages[short_name(package, msg)] = (package, fields, structs, named, msg)
        if "register.go" in names:
            reg = show(gitdir, tag, f"{d}/register.go")
            gm = re.search(r'GroupName\s*=\s*"([^"]*)"', reg)
            fn = re.search(r"func addKnownTypes\(.*?\n\}", reg, re.S)
            if gm and fn and d.split("/")[-1].startswith("v"):
                group, version = gm.group(1), d.split("/")[-1]
                api_version = f"{group}/{version}" if group else version
                for k in sorted(set(re.findall(r"&(\w+)\{\}", fn.group(0)))):
                    if k in protos:
                        kinds.append((api_version, k, short_name(package, k)))
                for k in META_OPTION_KINDS:
                    if k not in protos:
                        kinds.append((api_version, k, "meta/v1." + k))

    order = sorted(messages)
    index = {n: i for i, n in enumerate(order)}
    if len(order) > 0xFFFF:
        raise SystemExit("too many messages for u16 indexes")

    def resolve(package, ty):
        if ty in SCALARS:
            return SCALARS[ty]
        if ty.startswith("."):
            pkg, _, msg = ty[1:].rpartition(".")
        else:
            pkg, msg = package, ty
        name = short_name(pkg, msg)
        if name not in index:
            raise SystemExit(f"unknown message type {ty} in {package}")
        return f"M({index[name]})"

    out_msgs = []
    warnings = []
    total_fields = 0
    for name in order:
        package, pfields, structs, named, msg = messages[name]
        shape = SHAPES.get(name)
        gofields = {}
        if shape is None:
            target = named.get(msg, "")
            if msg in structs:
                shape = "Struct"
                for gf in structs[msg]:
                    gofields[gf.num] = gf
            elif "." in target and target.rpartition(".")[0] in go_pkgs:
                # `type MatchCondition v1.MatchCondition`: the other
                # package's struct gives the JSON fields.
                path, _, other = target.rpartition(".")
                shape = "Struct"
                for gf in go_pkgs[path][other]:
                    gofields[gf.num] = gf
            elif named.get(msg, "").startswith("[]"):
                # A named slice (metav1.Verbs, authenticationv1.ExtraValue):
                # the message wraps `repeated items = 1`, JSON is the array.
                shape = "Items"
            else:
                raise SystemExit(f"no Go type for message {name}")
        rows = []
        for pf in sorted(pfields, key=lambda f: f.num):
            gf = gofields.get(pf.num)
            if shape == "Struct" and gf is None:
                warnings.append(f"{name}.{pf.name} ({pf.num}) has no JSON field")
                continue
            json_name = gf.json if gf else pf.name
            omit = gf.omit if gf else False
            goty = gf.ty if gf else ""
            if pf.label == "map":
                k, v = pf.map_kv
                if k != "string":
                    raise SystemExit(f"{name}.{pf.name}: map key {k}")
                if "]*" in goty:
                    raise SystemExit(f"{name}.{pf.name}: map of pointers")
                ty, card = resolve(package, v), "Map"
            else:
                ty = resolve(package, pf.ty)
                if pf.label == "repeated":
                    if goty.startswith("[]*"):
                        raise SystemExit(f"{name}.{pf.name}: slice of pointers")
                    card = "Rep"
                elif goty.startswith("*"):
                    card = "Opt"
                elif gf is not None and gf.json == "":
                    card = "Inline"
                elif ty == "B":
                    card = "One"  # []byte: nil when absent, like a slice
                else:
                    card = "One"
            rows.append(f'f({pf.num},"{json_name}",{ty},{card},{"1" if omit else "0"})')
        total_fields += len(rows)
        out_msgs.append(f'm("{name}",{shape},&[{",".join(rows)}]),')

    for w in warnings:
        print("warning:", w, file=sys.stderr)

    kinds.sort()
    w = sys.stdout.write
    w("// @generated by crates/kelson-protobuf/gen/k8s_table.py -- do not edit by hand.\n")
    w("//\n")
    w(f"// Sources, all at tag {tag}:\n")
    w("//   github.com/kubernetes/api: <group>/<version>/{generated.proto,*.go,register.go}\n")
    w("//   github.com/kubernetes/apimachinery: pkg/apis/meta/v1, pkg/api/resource,\n")
    w("//     pkg/util/intstr, pkg/runtime\n")
    w("//   github.com/kubernetes/apiextensions-apiserver: pkg/apis/apiextensions/v1\n")
    w("// Regenerate (git directories of those repositories):\n")
    w("//   python3 gen/k8s_table.py --api API --apimachinery APIMACHINERY \\\n")
    w(f"//     --apiextensions APIEXTENSIONS --tag {tag} > src/k8s/table.rs\n")
    w("//\n")
    w(f"// {len(order)} messages, {total_fields} fields, {len(kinds)} kinds.\n")
    w("// MSGS is sorted by message name; each message's fields by number.\n")
    w("// f(number, JSON name, type, cardinality, omitempty); M(i) = MSGS[i].\n\n")
    w("use super::schema::{f, m, Card::*, Kind, Msg, Shape::*, Ty::*};\n\n")
    w("pub(super) static MSGS: &[Msg] = &[\n")
    for line in out_msgs:
        w(line + "\n")
    w("];\n\n")
    w("/// (apiVersion, kind, index into MSGS), sorted.\n")
    w("pub(super) static KINDS: &[Kind] = &[\n")
    for api_version, kind, msg in kinds:
        if msg not in index:
            raise SystemExit(f"kind {kind} maps to unknown message {msg}")
        w(f'("{api_version}","{kind}",{index[msg]}),\n')
    w("];\n")


if __name__ == "__main__":
    main()
