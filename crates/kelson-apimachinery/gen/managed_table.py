#!/usr/bin/env python3
"""Generate src/managed/table.rs: server-side-apply type facts of the built-in types.

The strategic-merge table (gen/strategic_table.py) takes its apply list types
from k8s-openapi, which keeps only the first `+listMapKey` of a list (Container
ports are keyed by containerPort *and* protocol) and does not know struct-level
`+structType=atomic` (LabelSelector, OwnerReference, ObjectReference, ...). The
API server builds its apply schema from the Go markers, so this script reads
them directly from the Go API types:

* per struct: atomic (`+structType=atomic` / `+mapType=atomic` on the type);
* per list field: `+listType`, `+listMapKey` (all of them), falling back to
  `patchStrategy`/`patchMergeKey` like kube-openapi's schemaconv, and the
  `+default` of each key field (used when an item omits a key);
* per map field: `+mapType`;
* per field: whether Go's zero value of the struct already carries it (a
  non-pointer struct as `{}`; a list, map or pointer without `omitempty` as
  `null`). The API server
  compares Go objects, so such fields are never "added" by a create or update;
  this decides where upstream writes the `.` marker in managedFields.

Usage (each repository a git clone or bare mirror, REF a tag of the Kubernetes
minor, e.g. v0.33.9):

  python3 gen/managed_table.py --api DIR --apimachinery DIR \
      --apiextensions DIR --aggregator DIR --ref v0.33.9 > src/managed/table.rs
  rustfmt --edition 2021 src/managed/table.rs
"""

import argparse
import json
import os
import re
import subprocess

STRUCT_RE = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)
TYPE_RE = re.compile(r"^type (\w+) (\S+)", re.M)
TAG_RE = re.compile(r'(\w+):"([^"]*)"')

# Named struct types that serialize as scalars (custom JSON marshalling).
SCALAR_STRUCTS = {
    "Time", "MicroTime", "Duration", "Quantity", "IntOrString", "RawExtension",
    "FieldsV1", "JSON", "JSONSchemaPropsOrArray", "JSONSchemaPropsOrBool",
    "JSONSchemaPropsOrStringArray",
}


def git_files(repo, ref, prefix):
    out = subprocess.run(
        ["git", "-C", repo, "ls-tree", "-r", "--name-only", ref] + ([prefix] if prefix else []),
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return [f for f in out if f.endswith(".go") and not f.endswith("_test.go")
            and "generated" not in os.path.basename(f)]


def git_show(repo, ref, path):
    return subprocess.run(
        ["git", "-C", repo, "show", "%s:%s" % (ref, path)],
        check=True, capture_output=True, text=True,
    ).stdout


def markers(comment_lines):
    out = {}
    for c in comment_lines:
        m = re.match(r"//\s*\+(\w+)(?:=(.*))?$", c.strip())
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "").strip())
    return out


def type_comment(text, start):
    """Comment lines right above the `type` declaration at offset start."""
    lines = text[:start].split("\n")[:-1]
    out = []
    for line in reversed(lines):
        s = line.strip()
        if s.startswith("//"):
            out.append(s)
        elif s == "":
            # markers are sometimes separated from the doc comment by a blank line
            if out and not out[-1].startswith("// +"):
                break
            continue
        else:
            break
    return list(reversed(out))


def parse_package(texts):
    """{struct: {"atomic", "fields": [(json, gotype, omitempty, markers, tags)], "embeds"}},
    plus {named non-struct type: underlying kind}."""
    structs, named = {}, {}
    for text in texts:
        for m in TYPE_RE.finditer(text):
            if m.group(2) != "struct":
                u = m.group(2)
                named[m.group(1)] = ("map" if u.startswith("map[") else
                                     "list" if u.startswith("[]") else "scalar")
        for m in STRUCT_RE.finditer(text):
            name, body = m.group(1), m.group(2)
            tm = markers(type_comment(text, m.start()))
            atomic = tm.get("structType") == ["atomic"] or tm.get("mapType") == ["atomic"]
            fields, embeds, comments = [], [], []
            for line in body.split("\n"):
                s = line.strip()
                if s.startswith("//"):
                    comments.append(s)
                    continue
                if not s:
                    comments = []
                    continue
                tag = {}
                t = re.search(r"`(.*)`", s)
                if t:
                    tag = dict(TAG_RE.findall(t.group(1)))
                    s = s[: t.start()].strip()
                parts = s.split()
                json_tag = tag.get("json", "").split(",")
                json_name = json_tag[0]
                omitempty = "omitempty" in json_tag[1:]
                fm = markers(comments)
                comments = []
                if json_name == "-":
                    continue
                if len(parts) == 1:
                    if json_name:
                        fields.append((json_name, parts[0], omitempty, fm, tag))
                    else:
                        embeds.append(parts[0].lstrip("*"))
                elif len(parts) >= 2 and json_name:
                    fields.append((json_name, parts[1], omitempty, fm, tag))
            structs[name] = {"atomic": atomic, "fields": fields, "embeds": embeds}
    return structs, named


def flatten(structs, name, seen=()):
    out = []
    s = structs.get(name)
    if not s:
        return out
    for e in s["embeds"]:
        if "." not in e and e not in seen:
            out.extend(flatten(structs, e, seen + (name,)))
    out.extend(s["fields"])
    return out


def base_name(gotype):
    return gotype.lstrip("*[]").split(".")[-1]


def read(repo, ref, prefix, package_of, packages):
    by_package = {}
    for path in git_files(repo, ref, prefix):
        p = package_of(path)
        if p:
            by_package.setdefault(p, []).append(git_show(repo, ref, path))
    for p, texts in by_package.items():
        packages[p] = parse_package(texts)


def api_package(path):
    parts = path.split("/")
    return "io.k8s.api.%s.%s" % (parts[0], parts[1]) if len(parts) == 3 else None


def rust_str(s):
    return json.dumps(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--apimachinery", required=True)
    ap.add_argument("--apiextensions", required=True)
    ap.add_argument("--aggregator", required=True)
    ap.add_argument("--ref", default="v0.33.9")
    args = ap.parse_args()

    packages = {}
    read(args.api, args.ref, "", api_package, packages)
    read(args.apimachinery, args.ref, "pkg/apis/meta/v1/",
         lambda p: "io.k8s.apimachinery.pkg.apis.meta.v1" if p.count("/") == 4 else None,
         packages)
    read(args.apiextensions, args.ref, "pkg/apis/apiextensions/v1/",
         lambda p: "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1"
         if p.count("/") == 4 else None, packages)
    read(args.aggregator, args.ref, "pkg/apis/apiregistration/v1/",
         lambda p: "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1"
         if p.count("/") == 4 else None, packages)

    atomic, rows = [], []
    for pkg, (structs, named) in sorted(packages.items()):
        # Same-package names first, then any package (cross-package references
        # such as v1.PodTemplateSpec or metav1.LabelSelector).
        def lookup_struct(t):
            n = base_name(t)
            if "." not in t.lstrip("*[]") and n in structs:
                return structs, n
            for _, (ss, _) in packages.items():
                if n in ss:
                    return ss, n
            return None, n

        def kind_of(t):
            if t.startswith("*"):
                return "pointer"
            if t == "[]byte":
                return "scalar"
            if t.startswith("[]"):
                return "list"
            if t.startswith("map["):
                return "map"
            n = base_name(t)
            if "." not in t and n in named:
                return named[n]
            if n in SCALAR_STRUCTS:
                return "scalar"
            ss, _ = lookup_struct(t)
            return "struct" if ss is not None else "scalar"

        for name in sorted(structs):
            definition = "%s.%s" % (pkg, name)
            if structs[name]["atomic"]:
                atomic.append(definition)
            for json_name, gotype, omitempty, fm, tag in flatten(structs, name):
                kind = kind_of(gotype)
                # Go's zero value carries value structs as `{}` and lists,
                # maps and pointers without `omitempty` as `null`.
                if kind == "struct":
                    implicit = "Implicit::Empty"
                elif kind in ("list", "map", "pointer") and not omitempty:
                    implicit = "Implicit::Null"
                else:
                    implicit = None
                rule, keys = None, []
                if kind == "list" and gotype.startswith("[]"):
                    lt = fm.get("listType", [None])[0]
                    if lt == "map":
                        rule, keys = "map", fm.get("listMapKey", [])
                    elif lt in ("atomic", "set"):
                        rule = lt
                    elif "merge" in tag.get("patchStrategy", "").split(","):
                        key = tag.get("patchMergeKey", "")
                        rule, keys = ("map", [key]) if key else ("set", [])
                    else:
                        rule = "atomic"
                elif kind == "map" and gotype.startswith("map["):
                    rule = "map_atomic" if fm.get("mapType") == ["atomic"] else "map_granular"
                if rule is None and not implicit:
                    continue
                defaults = []
                if rule == "map":
                    ss, n = lookup_struct(gotype)
                    item_fields = flatten(ss, n) if ss else []
                    for k in keys:
                        d = None
                        for jn, _, _, ifm, _ in item_fields:
                            if jn == k and "default" in ifm:
                                raw = ifm["default"][0]
                                try:
                                    d = json.dumps(json.loads(raw))
                                except ValueError:
                                    d = None
                        defaults.append(d)
                rows.append((definition, json_name, rule, keys, defaults, implicit))

    ref = args.ref
    print("// @generated by gen/managed_table.py; do not edit by hand.")
    print("//")
    print("// Source: the Go API types and their markers (`+listType`, `+listMapKey`,")
    print("// `+mapType`, `+structType`, `+default`, `patchStrategy`/`patchMergeKey`,")
    print("// pointer/omitempty) of k8s.io/api, k8s.io/apimachinery (meta/v1),")
    print("// k8s.io/apiextensions-apiserver and k8s.io/kube-aggregator at %s." % ref)
    print("// Regenerate (from crates/kelson-apimachinery), see the script's docstring:")
    print("//   python3 gen/managed_table.py --api <k8s.io/api> \\")
    print("//     --apimachinery <k8s.io/apimachinery> \\")
    print("//     --apiextensions <k8s.io/apiextensions-apiserver> \\")
    print("//     --aggregator <k8s.io/kube-aggregator> --ref %s > src/managed/table.rs" % ref)
    print("//   rustfmt --edition 2021 src/managed/table.rs")
    print()
    print("use super::types::{Field, Implicit, Rule};")
    print()
    print("/// Definitions marked `+structType=atomic` (or `+mapType=atomic`), sorted.")
    print("pub(super) static ATOMIC_STRUCTS: &[&str] = &[")
    for a in sorted(atomic):
        print("    %s," % rust_str(a))
    print("];")
    print()
    print("/// Collection fields and fields present in Go's zero value, sorted by")
    print("/// (definition, JSON name).")
    print("pub(super) static FIELDS: &[Field] = &[")
    rust_rule = {
        None: "Rule::Other", "atomic": "Rule::Atomic", "set": "Rule::Set",
        "map_atomic": "Rule::MapAtomic", "map_granular": "Rule::MapGranular",
    }
    seen = set()
    for definition, json_name, rule, keys, defaults, implicit in sorted(rows, key=lambda r: (r[0], r[1])):
        if (definition, json_name) in seen:
            continue
        seen.add((definition, json_name))
        if rule == "map":
            r = "Rule::Map(&[%s])" % ", ".join(
                "(%s, %s)" % (rust_str(k), "Some(%s)" % rust_str(d) if d else "None")
                for k, d in zip(keys, defaults))
        else:
            r = rust_rule[rule]
        print("    Field { def: %s, name: %s, rule: %s, implicit: %s }," % (
            rust_str(definition), rust_str(json_name), r, implicit or "Implicit::No"))
    print("];")


if __name__ == "__main__":
    main()
