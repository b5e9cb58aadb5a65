//! `--format`: the part of Docker's Go templates that people type every day.
//!
//! Supported: literal text; `{{.Field}}` and `{{.Field.Sub}}` (field names match
//! case-insensitively and ignore `_`, so `{{.RepoTags}}` finds `repo_tags`); `{{.}}`;
//! `{{json .Field}}` / `{{json .}}`; a leading `table` (a header row, columns aligned
//! as Docker's tabwriter does); `\t` and `\n` typed literally, as Docker replaces them.
//! Values print as Go prints them: strings bare, lists `[a b]`, maps `map[k:v]`,
//! a missing key under a field `<no value>`, an unknown field of the row an error (as
//! Docker fails on a field its row struct lacks). Anything else (`range`, `if`, pipes) is
//! refused with a message saying what is supported, never half-rendered.

use anyhow::bail;
use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Field { path: Vec<String>, json: bool },
}

const SUPPORTED: &str = "layerfs --format supports text, {{.Field}}, {{.Field.Sub}}, \
                         {{json .Field}}, {{json .}} and a leading `table`";

impl Template {
    pub fn parse(src: &str) -> anyhow::Result<Template> {
        let (table, body) = match src.trim_start().strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, src),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("unterminated {{{{ in --format {src:?}");
            };
            parts.push(parse_action(after[..end].trim(), src)?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { table, parts })
    }

    /// Renders one value. A field the value (a row: an image, a container, a history
    /// entry) does not have fails, as Docker fails on a field its row struct lacks; a key
    /// missing deeper down (`.Config.Labels.x`, a map in Docker) is `<no value>`.
    pub fn render(&self, v: &Value) -> anyhow::Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, json } => {
                    if let Some(first) = path.first() {
                        check_field(v, first)?;
                    }
                    let found = lookup(v, path);
                    if *json {
                        out.push_str(
                            &serde_json::to_string(found.unwrap_or(&Value::Null))
                                .unwrap_or_default(),
                        );
                    } else {
                        match found {
                            Some(x) => out.push_str(&go_string(x)),
                            None => out.push_str("<no value>"),
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The header row of a table: each field replaced by its header (from `headers`,
    /// else the field name in capitals).
    fn header(&self, headers: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, .. } => {
                    let name = path.last().map(String::as_str).unwrap_or("");
                    let h = headers
                        .iter()
                        .find(|(f, _)| norm(f) == norm(name))
                        .map(|(_, h)| h.to_string())
                        .unwrap_or_else(|| name.to_uppercase());
                    out.push_str(&h);
                }
            }
        }
        out
    }

    /// Prints every value, with a header and aligned columns for `table`; nothing when a
    /// value cannot be rendered (see [`Template::render`]).
    pub fn print(&self, values: &[Value], headers: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut lines: Vec<String> = Vec::new();
        if self.table {
            lines.push(self.header(headers));
        }
        for v in values {
            lines.push(self.render(v)?);
        }
        let text = if self.table { align(&lines) } else { lines };
        for l in text {
            println!("{l}");
        }
        Ok(())
    }
}

fn parse_action(a: &str, src: &str) -> anyhow::Result<Part> {
    let (json, expr) = match a.strip_prefix("json") {
        Some(rest) if rest.starts_with(char::is_whitespace) => (true, rest.trim()),
        _ => (false, a),
    };
    if expr == "." {
        return Ok(Part::Field {
            path: Vec::new(),
            json,
        });
    }
    let Some(fields) = expr.strip_prefix('.') else {
        bail!("unsupported action {{{{{a}}}}} in --format {src:?}: {SUPPORTED}");
    };
    let path: Vec<String> = fields.split('.').map(str::to_string).collect();
    let ok = path
        .iter()
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if !ok {
        bail!("unsupported action {{{{{a}}}}} in --format {src:?}: {SUPPORTED}");
    }
    Ok(Part::Field { path, json })
}

/// A field name compared loosely: `RepoTags` = `repo_tags` = `repotags`.
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Fails unless row `v` has the top-level field `name` (matched loosely), naming the
/// fields it has.
fn check_field(v: &Value, name: &str) -> anyhow::Result<()> {
    let Some(obj) = v.as_object() else {
        return Ok(());
    };
    let want = norm(name);
    if obj.keys().any(|k| k == name || norm(k) == want) {
        return Ok(());
    }
    let known: Vec<String> = obj.keys().map(|k| format!(".{k}")).collect();
    bail!(
        "--format: can't evaluate field {name}: no such field (fields: {})",
        known.join(" ")
    )
}

fn lookup<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = v;
    for p in path {
        let obj = cur.as_object()?;
        let want = norm(p);
        cur = obj
            .get(p)
            .or_else(|| obj.iter().find(|(k, _)| norm(k) == want).map(|(_, v)| v))?;
    }
    Some(cur)
}

/// A value as Go's `fmt.Print` shows it.
fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(o) => {
            let mut kv: Vec<(&String, &Value)> = o.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            format!(
                "map[{}]",
                kv.iter()
                    .map(|(k, v)| format!("{k}:{}", go_string(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

/// Docker's tabwriter (minwidth 10, padding 3): cells split at tabs, each column as wide
/// as its widest cell plus 3, the last cell of a line unpadded.
fn align(lines: &[String]) -> Vec<String> {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max(c.chars().count() + PADDING).max(MIN_WIDTH);
        }
    }
    rows.iter()
        .map(|r| {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate() {
                s.push_str(c);
                if i + 1 < r.len() {
                    s.push_str(&" ".repeat(widths[i].saturating_sub(c.chars().count())));
                }
            }
            s.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_json_and_go_values() {
        let v = json!({"id": "sha256:ab", "repo_tags": ["a:1", "b:2"], "config": {"Env": ["X=1"]}});
        let t = Template::parse("{{.Id}} {{.RepoTags}} {{.Config.Env}} {{.Config.Nope}}").unwrap();
        assert_eq!(
            t.render(&v).unwrap(),
            "sha256:ab [a:1 b:2] [X=1] <no value>"
        );
        let t = Template::parse("{{json .Config}}").unwrap();
        assert_eq!(t.render(&v).unwrap(), r#"{"Env":["X=1"]}"#);
        let t = Template::parse(r"{{.ID}}\t{{ .id }}").unwrap();
        assert_eq!(t.render(&v).unwrap(), "sha256:ab\tsha256:ab");
    }

    #[test]
    fn an_unknown_field_of_a_row_fails() {
        let v = json!({"ID": "abc", "Repository": "busybox"});
        for bad in ["{{.Nope}}", "{{json .Nope}}", "{{.Nope.Deeper}}"] {
            let e = Template::parse(bad).unwrap().render(&v).unwrap_err();
            let e = e.to_string();
            assert!(
                e.contains("field Nope") && e.contains(".ID .Repository"),
                "{e}"
            );
        }
    }

    #[test]
    fn tables_have_headers_and_columns() {
        let t = Template::parse(r"table {{.ID}}\t{{.Repository}}").unwrap();
        assert!(t.table);
        let rows = [json!({"ID": "abc", "Repository": "busybox"})];
        let mut lines = vec![t.header(&[("ID", "IMAGE ID")])];
        lines.extend(rows.iter().map(|r| t.render(r).unwrap()));
        assert_eq!(
            align(&lines),
            ["IMAGE ID   REPOSITORY", "abc        busybox"]
        );
    }

    #[test]
    fn unsupported_actions_are_refused() {
        for bad in [
            "{{range .X}}",
            "{{.X | upper}}",
            "{{if .X}}",
            "{{.X",
            "{{json}}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
