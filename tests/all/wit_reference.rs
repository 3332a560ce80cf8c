//! `docs/wit-reference.md` is generated from `wit/booking.wit`, so it cannot drift: this
//! test renders the WIT package and fails when the committed file differs. Regenerate with
//! `FOLLOWUP_BLESS=1 cargo test --release -p followup-tests --test all wit_reference`.

use std::fmt::Write as _;
use std::path::Path;
use wit_parser::{Docs, Resolve, Type, TypeDefKind};

fn docs(out: &mut String, d: &Docs) {
    if let Some(text) = &d.contents {
        for line in text.trim().lines() {
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out.push('\n');
    }
}

/// One line of prose for a table cell.
fn cell(d: &Docs) -> String {
    d.contents
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn ty(resolve: &Resolve, t: &Type) -> String {
    render_type(resolve, t, true)
}

/// A type's name; named types link to their section unless `link` is false (inside code).
fn render_type(resolve: &Resolve, t: &Type, link: bool) -> String {
    match t {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "s8".into(),
        Type::S16 => "s16".into(),
        Type::S32 => "s32".into(),
        Type::S64 => "s64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::ErrorContext => "error-context".into(),
        Type::Id(id) => {
            let def = &resolve.types[*id];
            match &def.name {
                Some(name) if link => format!("[`{name}`](#{name})"),
                Some(name) => name.clone(),
                None => kind(resolve, &def.kind, link),
            }
        }
    }
}

/// A type's structure, for anonymous types and aliases.
fn kind(resolve: &Resolve, kind: &TypeDefKind, link: bool) -> String {
    let ty = |resolve: &Resolve, t: &Type| render_type(resolve, t, link);
    match kind {
        TypeDefKind::Option(t) => format!("option<{}>", ty(resolve, t)),
        TypeDefKind::List(t) => format!("list<{}>", ty(resolve, t)),
        TypeDefKind::Result(r) => format!(
            "result<{}, {}>",
            r.ok.as_ref().map_or("_".into(), |t| ty(resolve, t)),
            r.err.as_ref().map_or("_".into(), |t| ty(resolve, t))
        ),
        TypeDefKind::Tuple(t) => format!(
            "tuple<{}>",
            t.types
                .iter()
                .map(|t| ty(resolve, t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        TypeDefKind::Type(t) => ty(resolve, t),
        other => format!("{other:?}"),
    }
}

fn render(wit: &Path) -> String {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_dir(wit).expect("the WIT package parses");
    let package = &resolve.packages[pkg];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# WIT reference: `{}`\n\n<!-- Generated from wit/booking.wit by tests/all/wit_reference.rs; do not edit. -->\n",
        package.name
    );
    docs(&mut out, &package.docs);
    out.push_str("## Worlds\n\n");
    for (name, id) in &package.worlds {
        let world = &resolve.worlds[*id];
        let names = |keys: Vec<&wit_parser::WorldKey>| {
            keys.into_iter()
                .map(|k| format!("`{}`", resolve.name_world_key(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "### `{name}`\n");
        docs(&mut out, &world.docs);
        let _ = writeln!(out, "- imports: {}", names(world.imports.keys().collect()));
        let exports = names(world.exports.keys().collect());
        let _ = writeln!(
            out,
            "- exports: {}\n",
            if exports.is_empty() {
                "none".into()
            } else {
                exports
            }
        );
    }
    for (name, id) in &package.interfaces {
        let iface = &resolve.interfaces[*id];
        let _ = writeln!(out, "## Interface `{name}`\n");
        docs(&mut out, &iface.docs);
        for (type_name, tid) in &iface.types {
            let def = &resolve.types[*tid];
            // Types `use`d from another interface are documented there.
            if let TypeDefKind::Type(Type::Id(other)) = &def.kind
                && resolve.types[*other].owner != def.owner
            {
                continue;
            }
            let _ = writeln!(out, "### `{type_name}`\n");
            docs(&mut out, &def.docs);
            match &def.kind {
                TypeDefKind::Record(r) => {
                    out.push_str("| field | type | meaning |\n|---|---|---|\n");
                    for f in &r.fields {
                        let _ = writeln!(
                            out,
                            "| `{}` | {} | {} |",
                            f.name,
                            ty(&resolve, &f.ty),
                            cell(&f.docs)
                        );
                    }
                }
                TypeDefKind::Variant(v) => {
                    out.push_str("| case | payload | meaning |\n|---|---|---|\n");
                    for c in &v.cases {
                        let payload = c.ty.as_ref().map_or("—".into(), |t| ty(&resolve, t));
                        let _ = writeln!(out, "| `{}` | {payload} | {} |", c.name, cell(&c.docs));
                    }
                }
                TypeDefKind::Enum(e) => {
                    out.push_str("| case | meaning |\n|---|---|\n");
                    for c in &e.cases {
                        let _ = writeln!(out, "| `{}` | {} |", c.name, cell(&c.docs));
                    }
                }
                other => {
                    let _ = writeln!(out, "`{type_name} = {}`", kind(&resolve, other, false));
                }
            }
            out.push('\n');
        }
        for (fname, f) in &iface.functions {
            let params = f
                .params
                .iter()
                .map(|p| format!("{}: {}", p.name, render_type(&resolve, &p.ty, false)))
                .collect::<Vec<_>>()
                .join(", ");
            let result = f.result.as_ref().map_or(String::new(), |t| {
                format!(" -> {}", render_type(&resolve, t, false))
            });
            let _ = writeln!(out, "### `{fname}`\n\n`{fname}: func({params}){result}`\n");
            docs(&mut out, &f.docs);
        }
    }
    out
}

#[test]
fn the_wit_reference_is_generated_from_the_wit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = render(&root.join("wit"));
    let committed_path = root.join("docs/wit-reference.md");
    if std::env::var_os("FOLLOWUP_BLESS").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/wit-reference.md is out of date; regenerate it with FOLLOWUP_BLESS=1 \
         cargo test --release -p followup-tests --test all wit_reference"
    );
}
