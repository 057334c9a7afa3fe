#!/usr/bin/env python3
"""Generate src/strategic/table.rs: per-field merge rules of the built-in types.

Two sources are combined, because they answer different questions:

* k8s-openapi (the Rust crate, feature v1_33) gives, per OpenAPI definition, the
  JSON name and the type of every field, plus the server-side-apply markers it
  turned into `DeepMerge` impls (`list::atomic/set/map`, `map::atomic/granular`).
* The Go API types (k8s.io/api, k8s.io/apimachinery meta/v1,
  k8s.io/apiextensions-apiserver, k8s.io/kube-aggregator) carry the
  `patchStrategy` / `patchMergeKey` struct tags that strategic merge patch uses.
  They differ from the apply markers (e.g. Service ports merge by `port` in a
  strategic patch but are keyed by `port`+`protocol` for apply; nodeSelector is
  an atomic map for apply but merges key by key in a strategic patch), so they
  cannot be derived from k8s-openapi alone.

Usage (each Go repository is a git clone or bare mirror; REF is a tag of the
matching Kubernetes minor, e.g. v0.33.9):

  python3 gen/strategic_table.py \
      --openapi ~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_33 \
      --api DIR --apimachinery DIR --apiextensions DIR --aggregator DIR \
      --ref v0.33.9 > src/strategic/table.rs
  rustfmt --edition 2021 src/strategic/table.rs
"""

import argparse
import glob
import os
import re
import subprocess
import sys

# ---------------------------------------------------------------- k8s-openapi

HEADER_RE = re.compile(r"^// Generated from definition (\S+)", re.M)
STRUCT_RE = re.compile(r"^pub struct (\w+) \{\n(.*?)^\}", re.M | re.S)
FIELD_RE = re.compile(r"^\s*pub (\w+): (.+),\s*$", re.M)
JSON_NAME_RE = re.compile(r'"([^"]+)" => Field::Key_(\w+),')
STRATEGY_RE = re.compile(
    r"crate::merge_strategies::(list|map)::(\w+)\(\s*&mut self\.(\w+),(.*?)\);", re.S
)
KEY_RE = re.compile(r"lhs\.(\w+) == rhs\.")


def rust_type_shape(ty):
    """Returns (shape, crate path of the element type or None)."""
    m = re.fullmatch(r"Option<(.*)>", ty)
    if m:
        ty = m.group(1)
    m = re.fullmatch(r"std::vec::Vec<(.*)>", ty)
    if m:
        return "list", crate_path(m.group(1))
    m = re.fullmatch(r"std::collections::BTreeMap<std::string::String, (.*)>", ty)
    if m:
        return "map", crate_path(m.group(1))
    return "value", crate_path(ty)


def crate_path(ty):
    return ty if ty.startswith("crate::") else None


def read_openapi(root):
    types = {}  # definition name -> dict
    path_to_def = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.rs"), recursive=True)):
        text = open(path, encoding="utf-8").read()
        header = HEADER_RE.search(text)
        if not header:
            continue
        definition = header.group(1)
        rel = os.path.relpath(os.path.dirname(path), root).replace(os.sep, "::")
        struct = STRUCT_RE.search(text)
        if not struct:
            continue
        path_to_def["crate::%s::%s" % (rel, struct.group(1))] = definition
        rust_to_json = {rust: js for js, rust in JSON_NAME_RE.findall(text)}
        fields = {}
        for rust_name, ty in FIELD_RE.findall(struct.group(2)):
            if rust_name not in rust_to_json:
                continue
            shape, elem = rust_type_shape(ty.strip())
            fields[rust_name] = {"json": rust_to_json[rust_name], "shape": shape, "elem": elem}
        strategies = {}
        for kind, how, rust_name, rest in STRATEGY_RE.findall(text):
            strategies[rust_name] = (kind, how, KEY_RE.findall(rest))
        types[definition] = {"fields": fields, "strategies": strategies}
    return types, path_to_def


# ---------------------------------------------------------------- Go types

GO_STRUCT_RE = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)
TAG_RE = re.compile(r'(\w+):"([^"]*)"')


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


def parse_go_structs(text):
    """Returns {struct name: [(json name or None, embedded type or None, tags)]}."""
    structs = {}
    for name, body in GO_STRUCT_RE.findall(text):
        fields = []
        for line in body.split("\n"):
            line = line.strip()
            if not line or line.startswith("//"):
                continue
            tag = {}
            m = re.search(r"`(.*)`", line)
            if m:
                tag = dict(TAG_RE.findall(m.group(1)))
                line = line[: m.start()].strip()
            parts = line.split()
            json_name = tag.get("json", "").split(",")[0]
            if json_name == "-":
                continue
            if len(parts) == 1:  # embedded struct
                if json_name:
                    fields.append((json_name, None, tag))
                else:
                    fields.append((None, parts[0].lstrip("*"), tag))
            elif json_name:
                fields.append((json_name, None, tag))
        structs[name] = fields
    return structs


def go_patch_meta(structs):
    """Flattens inline embedding: {struct: {json field: (strategy, merge key)}}."""
    out = {}

    def resolve(name, seen):
        result = {}
        for json_name, embedded, tag in structs.get(name, []):
            if embedded is not None:
                if "." not in embedded and embedded not in seen:
                    result.update(resolve(embedded, seen | {embedded}))
                continue
            strategy = tag.get("patchStrategy", "")
            key = tag.get("patchMergeKey", "")
            if strategy or key:
                result[json_name] = (strategy, key)
        return result

    for name in structs:
        out[name] = resolve(name, {name})
    return out


def read_go(repo, ref, prefix, package_of):
    """package_of(path) gives the definition prefix of a Go file, or None."""
    meta = {}
    by_package = {}
    for path in git_files(repo, ref, prefix):
        package = package_of(path)
        if package:
            by_package.setdefault(package, []).append(git_show(repo, ref, path))
    for package, texts in by_package.items():
        structs = {}
        for text in texts:
            structs.update(parse_go_structs(text))
        for name, fields in go_patch_meta(structs).items():
            if fields:
                meta["%s.%s" % (package, name)] = fields
    return meta


def api_package(path):
    parts = path.split("/")
    if len(parts) == 3:
        return "io.k8s.api.%s.%s" % (parts[0], parts[1])
    return None


# ---------------------------------------------------------------- output

def rust_str_list(items):
    return "&[%s]" % ", ".join('"%s"' % i for i in items)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--openapi", required=True)
    ap.add_argument("--api", required=True)
    ap.add_argument("--apimachinery", required=True)
    ap.add_argument("--apiextensions", required=True)
    ap.add_argument("--aggregator", required=True)
    ap.add_argument("--ref", default="v0.33.9")
    args = ap.parse_args()

    types, path_to_def = read_openapi(os.path.expanduser(args.openapi))
    patch = {}
    patch.update(read_go(args.api, args.ref, "", api_package))
    patch.update(read_go(
        args.apimachinery, args.ref, "pkg/apis/meta/v1/",
        lambda p: "io.k8s.apimachinery.pkg.apis.meta.v1" if p.count("/") == 4 else None))
    patch.update(read_go(
        args.apiextensions, args.ref, "pkg/apis/apiextensions/v1/",
        lambda p: "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1"
        if p.count("/") == 4 else None))
    patch.update(read_go(
        args.aggregator, args.ref, "pkg/apis/apiregistration/v1/",
        lambda p: "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1"
        if p.count("/") == 4 else None))

    unmatched = [
        "%s.%s" % (d, f) for d, fields in patch.items() if d in types
        for f in fields if f not in {x["json"] for x in types[d]["fields"].values()}
    ]
    if unmatched:
        sys.stderr.write("patch tags without a k8s-openapi field: %s\n" % unmatched)

    print("// @generated by gen/strategic_table.py; do not edit by hand.")
    print("//")
    print("// Sources: k8s-openapi 0.29 (src/v1_33) for field names, field types and the")
    print("// server-side-apply list/map types; the Go struct tags `patchStrategy` and")
    print("// `patchMergeKey` of k8s.io/api, k8s.io/apimachinery (meta/v1),")
    print("// k8s.io/apiextensions-apiserver and k8s.io/kube-aggregator at %s." % args.ref)
    print("// Regenerate (from crates/kelson-apimachinery), see the script's docstring:")
    print("//   python3 gen/strategic_table.py --openapi <k8s-openapi>/src/v1_33 \\")
    print("//     --api <k8s.io/api> --apimachinery <k8s.io/apimachinery> \\")
    print("//     --apiextensions <k8s.io/apiextensions-apiserver> \\")
    print("//     --aggregator <k8s.io/kube-aggregator> --ref %s > src/strategic/table.rs" % args.ref)
    print("//   rustfmt --edition 2021 src/strategic/table.rs")
    print()
    print("use super::{FieldInfo, ListStrategy as L, TypeInfo};")
    print()
    print("/// Every struct definition of k8s-openapi, sorted by name; fields sorted by")
    print("/// JSON name. Scalar fields without any merge rule are left out.")
    print("pub(super) static TYPES: &[TypeInfo] = &[")
    for definition in sorted(types):
        info = types[definition]
        rows = []
        for rust_name, field in info["fields"].items():
            elem = path_to_def.get(field["elem"]) if field["elem"] else None
            if elem is not None and elem not in types:
                elem = None  # a scalar-like definition (Quantity, Time, IntOrString, ...)
            kind, how, keys = info["strategies"].get(rust_name, (None, None, []))
            if kind == "list" and how == "map":
                item_fields = types.get(elem, {"fields": {}})["fields"]
                json_keys = [item_fields[k]["json"] if k in item_fields else k for k in keys]
                strategy = "L::Map { keys: %s }" % rust_str_list(json_keys)
            elif kind == "list":
                strategy = {"atomic": "L::Atomic", "set": "L::Set"}[how]
            elif kind == "map":
                strategy = {"atomic": "L::MapAtomic", "granular": "L::MapGranular"}[how]
            elif field["shape"] == "list":
                strategy = "L::Atomic"  # apply's default for lists without a list type
            elif field["shape"] == "map":
                strategy = "L::MapGranular"  # apply's default for maps
            else:
                strategy = "L::NotCollection"
            ps, pk = patch.get(definition, {}).get(field["json"], ("", ""))
            if elem is None and strategy == "L::NotCollection" and not ps and not pk:
                continue
            rows.append((field["json"], elem, strategy, ps, pk))
        print("    TypeInfo {")
        print('        name: "%s",' % definition)
        print("        fields: &[")
        for json_name, elem, strategy, ps, pk in sorted(rows):
            print("            FieldInfo {")
            print('                name: "%s",' % json_name)
            print("                item: %s," % ('Some("%s")' % elem if elem else "None"))
            print("                apply: %s," % strategy)
            print('                patch_strategy: "%s",' % ps)
            print('                merge_key: "%s",' % pk)
            print("            },")
        print("        ],")
        print("    },")
    print("];")


if __name__ == "__main__":
    main()
