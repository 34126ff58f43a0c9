//! The rooms of `src/` and their one-way dependencies.
//!
//! Every folder of `src/` is a room, and so is every shared leaf file of the
//! crate root (`config.rs`, `error.rs`, `backoff.rs`); `lib.rs` and
//! `main.rs` are the entry points and use anything. The table of which room
//! may use which is written once, as the `//! Uses: …` line at the top of
//! each room's `mod.rs` (or leaf file). This test reads those lines, checks
//! that the table has no cycle, and fails for every path in the code
//! (`crate::room`, `use crate::{room, …}`, or `super::` climbing out of a
//! room) that reaches a room its own room may not use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rooms by name: what each may use.
type Table = BTreeMap<String, BTreeSet<String>>;

/// One import that runs the wrong way.
#[derive(Debug, PartialEq, Eq)]
struct WrongWay {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// A source file: its path relative to `src/` and its text.
struct Source {
    relative: PathBuf,
    text: String,
}

fn sources(src: &Path) -> Vec<Source> {
    let mut found = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(Source {
                    relative: path.strip_prefix(src).expect("under src").to_path_buf(),
                    text: std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                });
            }
        }
    }
    found.sort_by(|a, b| a.relative.cmp(&b.relative));
    found
}

/// The room of a file (`None` for `lib.rs` and `main.rs`) and its module
/// path inside the crate (`["cleanup", "controller"]`).
fn place(relative: &Path) -> (Option<String>, Vec<String>) {
    let parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let mut module: Vec<String> = parts
        .iter()
        .map(|part| part.trim_end_matches(".rs").to_string())
        .collect();
    if module.last().is_some_and(|last| last == "mod") {
        module.pop();
    }
    match module.as_slice() {
        [only] if parts.len() == 1 && (only == "lib" || only == "main") => (None, Vec::new()),
        _ => (module.first().cloned(), module),
    }
}

/// The `Uses:` line of a room's doc comment: the rooms it names.
fn uses_line(text: &str) -> Option<BTreeSet<String>> {
    text.lines()
        .take_while(|line| line.starts_with("//!") || line.trim().is_empty())
        .find_map(|line| line.strip_prefix("//! Uses:"))
        .map(|list| {
            list.trim()
                .trim_end_matches('.')
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty() && *name != "nothing")
                .map(str::to_string)
                .collect()
        })
}

/// The table from the rooms' `Uses:` lines; a room without one is an error.
fn table(sources: &[Source]) -> Result<Table, Vec<String>> {
    let mut rooms = Table::new();
    let mut problems = Vec::new();
    for source in sources {
        let (room, module) = place(&source.relative);
        let Some(room) = room else { continue };
        if module.len() != 1 {
            continue;
        }
        match uses_line(&source.text) {
            Some(uses) => {
                rooms.insert(room, uses);
            }
            None => problems.push(format!(
                "{}: room {room} has no `//! Uses: …` line in its top doc comment",
                source.relative.display()
            )),
        }
    }
    for (room, uses) in &rooms {
        for used in uses {
            if !rooms.contains_key(used) {
                problems.push(format!("room {room} uses {used:?}, which is not a room"));
            }
        }
    }
    if problems.is_empty() {
        Ok(rooms)
    } else {
        Err(problems)
    }
}

/// A cycle in the table, as the rooms along it, if there is one.
fn cycle(table: &Table) -> Option<Vec<String>> {
    fn visit(
        room: &str,
        table: &Table,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == room) {
            let mut found = path[at..].to_vec();
            found.push(room.to_string());
            return Some(found);
        }
        if done.contains(room) {
            return None;
        }
        path.push(room.to_string());
        for used in table.get(room).into_iter().flatten() {
            if let Some(found) = visit(used, table, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(room.to_string());
        None
    }
    let mut done = BTreeSet::new();
    table
        .keys()
        .find_map(|room| visit(room, table, &mut Vec::new(), &mut done))
}

/// The text without comments and string literals (so a doc link or a
/// message naming a module is not an import).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal such as '"' or '{' must not open a string or a group.
            '\'' if text_is_char_literal(&mut chars) => out.push_str("' '"),
            c => out.push(c),
        }
    }
    out
}

/// Consumes a char literal after its opening quote, if one follows (not a
/// lifetime).
fn text_is_char_literal(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut ahead = chars.clone();
    let literal_length = match (ahead.next(), ahead.next(), ahead.next()) {
        (Some('\\'), Some(_), Some('\'')) => 3,
        (Some(_), Some('\''), _) => 2,
        _ => return false,
    };
    for _ in 0..literal_length {
        chars.next();
    }
    true
}

/// The rooms a piece of code reaches, with the line of each reach: every
/// `crate::name`, the top-level names of `crate::{…}`, and `super::`
/// chains that climb to the crate root, from a file at `module`.
fn reaches(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |from: usize| -> String {
        code[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let inline_depth = inline_module_depths(code);
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let after = at + "crate::".len();
        if code[after..].starts_with('{') {
            found.extend(
                group_names(&code[after + 1..])
                    .into_iter()
                    .map(|name| (line_of(at), name)),
            );
        } else {
            found.push((line_of(at), ident(after)));
        }
    }
    let mut at = 0;
    while let Some(offset) = code[at..].find("super::") {
        let start = at + offset;
        let before = code[..start].chars().next_back();
        let mut end = start;
        let mut climbs = 0;
        while code[end..].starts_with("super::") {
            climbs += 1;
            end += "super::".len();
        }
        at = end;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        // A file's own module is `module` (deeper inside an inline `mod`);
        // `super` of it is one level up.
        if climbs >= module.len() + inline_depth[start] {
            let names = if code[end..].starts_with('{') {
                group_names(&code[end + 1..])
            } else {
                vec![ident(end)]
            };
            found.extend(names.into_iter().map(|name| (line_of(start), name)));
        }
    }
    found
}

/// For every byte of `code`, how many inline `mod name { … }` blocks
/// enclose it.
fn inline_module_depths(code: &str) -> Vec<usize> {
    let mut depths = vec![0; code.len() + 1];
    // For each open brace, whether it opened an inline module.
    let mut braces: Vec<bool> = Vec::new();
    let mut modules = 0;
    for (at, c) in code.char_indices() {
        match c {
            '{' => {
                let before = code[..at].trim_end();
                let name_start = before
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |i| i + 1);
                let opens_module =
                    before[..name_start].trim_end().ends_with("mod") && name_start < before.len();
                braces.push(opens_module);
                if opens_module {
                    modules += 1;
                }
            }
            '}' => modules -= usize::from(braces.pop() == Some(true)),
            _ => {}
        }
        depths[at] = modules;
    }
    depths
}

/// The top-level names of a `{…}` group whose text starts after the `{`.
fn group_names(rest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in rest.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            item.push(c);
        }
    }
    names.push(item);
    names
        .iter()
        .map(|item| {
            item.trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Every import of `sources` that runs the wrong way under `table`.
fn wrong_ways(sources: &[Source], table: &Table) -> Vec<WrongWay> {
    let mut wrong = Vec::new();
    for source in sources {
        let (Some(room), module) = place(&source.relative) else {
            continue;
        };
        let allowed = table.get(&room).cloned().unwrap_or_default();
        for (line, reached) in reaches(&code_only(&source.text), &module) {
            let is_room = table.contains_key(&reached);
            if reached != room && (!is_room || !allowed.contains(&reached)) {
                wrong.push(WrongWay {
                    file: source.relative.display().to_string(),
                    line,
                    from: room.clone(),
                    to: reached,
                });
            }
        }
    }
    wrong
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_room_says_what_it_may_use_and_the_table_has_no_cycle() {
    let sources = sources(&src_dir());
    let table = table(&sources).unwrap_or_else(|problems| panic!("{}", problems.join("\n")));
    for room in [
        "objects",
        "device",
        "observe",
        "api",
        "discover",
        "provision",
        "cleanup",
        "cli",
        "controller",
    ] {
        assert!(
            table.contains_key(room),
            "room {room} is missing: {table:?}"
        );
    }
    assert_eq!(cycle(&table), None, "the rooms' Uses lines form a cycle");
}

#[test]
fn no_import_runs_the_wrong_way() {
    let sources = sources(&src_dir());
    let table = table(&sources).unwrap_or_else(|problems| panic!("{}", problems.join("\n")));
    let wrong = wrong_ways(&sources, &table);
    let listing: Vec<String> = wrong
        .iter()
        .map(|w| {
            format!(
                "src/{}:{}: room {} uses {}, which its `Uses:` line does not allow",
                w.file, w.line, w.from, w.to
            )
        })
        .collect();
    assert!(listing.is_empty(), "\n{}", listing.join("\n"));
}

/// The check itself, on a small tree with one import planted in each form
/// it must catch.
#[test]
fn a_planted_wrong_way_import_is_caught_in_every_form() {
    let file = |path: &str, text: &str| Source {
        relative: PathBuf::from(path),
        text: text.to_string(),
    };
    let tree = vec![
        file("lib.rs", "pub mod low;\npub mod high;\n"),
        file(
            "low/mod.rs",
            "//! Low.\n//!\n//! Uses: nothing.\n\npub mod a;\npub mod b;\npub mod c;\npub mod d;\n",
        ),
        file(
            "high/mod.rs",
            "//! High.\n//!\n//! Uses: low.\n\npub mod x;\n",
        ),
        file(
            "high/x.rs",
            "use crate::low::a::Thing;\nuse super::y;\nmod tests {\n    use super::*;\n    use super::super::y;\n}\n",
        ),
        file("low/a.rs", "use crate::high::x::Thing;\n"),
        file("low/b.rs", "use crate::{low::a, high::x};\n"),
        file("low/c.rs", "use super::super::high::x;\n"),
        file(
            "low/d.rs",
            "// crate::high in a comment\nconst S: &str = \"crate::high\";\nconst Q: char = '\"';\nfn f() { crate::high::x::go(); }\n",
        ),
    ];
    let table = table(&tree).expect("table");
    assert_eq!(cycle(&table), None);
    let caught: Vec<(String, usize, String)> = wrong_ways(&tree, &table)
        .into_iter()
        .map(|w| (w.file, w.line, w.to))
        .collect();
    assert_eq!(
        caught,
        vec![
            ("low/a.rs".to_string(), 1, "high".to_string()),
            ("low/b.rs".to_string(), 1, "high".to_string()),
            ("low/c.rs".to_string(), 1, "high".to_string()),
            ("low/d.rs".to_string(), 4, "high".to_string()),
        ]
    );
    let mut looped = table.clone();
    looped
        .get_mut("low")
        .expect("low")
        .insert("high".to_string());
    assert_eq!(
        cycle(&looped),
        Some(vec!["high".into(), "low".into(), "high".into()])
    );
}
