//! `commit --change`: Dockerfile instructions applied to the new image's config, as
//! `docker commit --change` accepts them: `CMD`, `ENTRYPOINT` (JSON exec form, or shell
//! form run by the config's `Shell`, `/bin/sh -c` by default; an `ENTRYPOINT` clears an
//! inherited `CMD` unless a `CMD` comes with it, as in a Dockerfile), `ENV` and `LABEL`
//! (`K=V …`, or the legacy `K V`), `EXPOSE` (`80`, `53/udp`, `8000-8010/tcp`), `VOLUME`
//! (JSON array or words), `WORKDIR` (relative to the previous one), `USER` and `ONBUILD`.
//! Words are read as Docker's shell lexer reads them: quotes, backslash escapes, and
//! `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}` from the config's environment (not in
//! `CMD`/`ENTRYPOINT`, as Docker).

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// The instructions `--change` accepts.
pub const ACCEPTED: &str = "CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR";

/// Most ports one EXPOSE range may name.
const MAX_PORTS: u32 = 65_536;

fn bad(change: &str, why: impl std::fmt::Display) -> Error {
    Error::Invalid {
        file: format!("--change {change:?}"),
        detail: why.to_string(),
    }
}

/// The value of `name` in an environment list (`K=V` strings).
fn env_get<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter().rev().find_map(|kv| {
        kv.split_once('=')
            .and_then(|(k, v)| (k == name).then_some(v))
    })
}

/// Splits `s` into words: unquoted whitespace separates, quotes and backslashes are
/// removed, variables expanded from `env` (when given).
fn words(s: &str, env: Option<&[String]>) -> std::result::Result<Vec<String>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                i += 1;
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.get(i + 1) {
                    cur.push(*n);
                }
                i += 2;
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    cur.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated single quote".into());
                }
                i += 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated double quote".into()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) => {
                            cur.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') if env.is_some() => {
                            i = expand(&chars, i, env.unwrap_or_default(), &mut cur)?;
                        }
                        Some(c) => {
                            cur.push(*c);
                            i += 1;
                        }
                    }
                }
            }
            '$' if env.is_some() => {
                in_word = true;
                i = expand(&chars, i, env.unwrap_or_default(), &mut cur)?;
            }
            c => {
                in_word = true;
                cur.push(c);
                i += 1;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Expands the variable at `chars[i]` (a `$`) into `out`; returns the index after it.
fn expand(
    chars: &[char],
    i: usize,
    env: &[String],
    out: &mut String,
) -> std::result::Result<usize, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let close = chars[i + 2..]
                .iter()
                .position(|c| *c == '}')
                .ok_or("missing } in ${…}")?;
            let inner: String = chars[i + 2..i + 2 + close].iter().collect();
            let (name, op) = match inner.find(":-").or_else(|| inner.find(":+")) {
                Some(p) => (&inner[..p], Some((&inner[p..p + 2], &inner[p + 2..]))),
                None => (inner.as_str(), None),
            };
            if name.is_empty() || !name.chars().all(is_name) {
                return Err(format!("bad substitution ${{{inner}}}"));
            }
            let val = env_get(env, name).filter(|v| !v.is_empty());
            match (op, val) {
                (None, v) => out.push_str(v.unwrap_or_default()),
                (Some((":-", w)), None) => out.push_str(w),
                (Some((":-", _)), Some(v)) => out.push_str(v),
                (Some((_, w)), Some(_)) => out.push_str(w),
                (Some(_), None) => {}
            }
            Ok(i + 3 + close)
        }
        Some(c) if is_name(*c) => {
            let len = chars[i + 1..].iter().take_while(|c| is_name(**c)).count();
            let name: String = chars[i + 1..i + 1 + len].iter().collect();
            out.push_str(env_get(env, &name).unwrap_or_default());
            Ok(i + 1 + len)
        }
        _ => {
            out.push('$');
            Ok(i + 1)
        }
    }
}

fn env_list(cfg: &Map<String, Value>) -> Vec<String> {
    cfg.get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `K=V` pairs, or the legacy `K V` form (one pair, the rest of the line its value).
fn pairs(change: &str, rest: &str, env: &[String]) -> Result<Vec<(String, String)>> {
    let first = rest.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let value = rest[first.len()..].trim();
        if first.is_empty() || value.is_empty() {
            return Err(bad(change, "wants NAME=VALUE (or NAME VALUE)"));
        }
        let key = words(first, Some(env)).map_err(|e| bad(change, e))?;
        let val = words(value, Some(env)).map_err(|e| bad(change, e))?;
        return Ok(vec![(key.concat(), val.join(" "))]);
    }
    let mut out = Vec::new();
    for w in words(rest, Some(env)).map_err(|e| bad(change, e))? {
        let Some((k, v)) = w.split_once('=') else {
            return Err(bad(change, format!("{w:?} is not NAME=VALUE")));
        };
        if k.is_empty() {
            return Err(bad(change, format!("{w:?} has no name")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// A JSON array of strings, if `rest` is one.
fn json_array(rest: &str) -> Option<Vec<String>> {
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(rest).ok()
}

/// `CMD`/`ENTRYPOINT` arguments: exec form, or shell form through the config's shell.
fn command(rest: &str, cfg: &Map<String, Value>) -> Value {
    if let Some(a) = json_array(rest) {
        return json!(a);
    }
    let mut shell: Vec<String> = cfg
        .get("Shell")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .filter(|v: &Vec<String>| !v.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
    shell.push(rest.to_string());
    json!(shell)
}

/// `80`, `80/tcp`, `8000-8010/udp` → `["80/tcp"]`, ….
fn ports(change: &str, spec: &str) -> Result<Vec<String>> {
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(change, format!("{spec}: unknown protocol {proto}")));
    }
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| bad(change, format!("{spec}: {s:?} is not a port number")))
    };
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(range)?;
            (p, p)
        }
    };
    if hi < lo || u32::from(hi - lo) >= MAX_PORTS {
        return Err(bad(change, format!("{spec}: invalid range")));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Lexically cleaned absolute path (`/a/./b/../c` → `/a/c`).
fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Adds `items` to the object `cfg[key]` (made one if it is not).
fn merge_into(cfg: &mut Map<String, Value>, key: &str, items: Vec<(String, Value)>) {
    let mut m = match cfg.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in items {
        m.insert(k, v);
    }
    cfg.insert(key.into(), Value::Object(m));
}

/// Applies `changes` in order to `cfg` (the config's `config` object).
pub fn apply(cfg: &mut Map<String, Value>, changes: &[String]) -> Result<()> {
    let mut cmd_set = false;
    for change in changes {
        let line = change.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instr, rest) = match line.split_once(char::is_whitespace) {
            Some((i, r)) => (i.to_ascii_uppercase(), r.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        let env = env_list(cfg);
        let one_word = |what: &str| -> Result<String> {
            let w = words(rest, Some(&env)).map_err(|e| bad(change, e))?;
            match w.as_slice() {
                [one] if !one.is_empty() => Ok(one.clone()),
                _ => Err(bad(change, format!("{what} takes one argument"))),
            }
        };
        match instr.as_str() {
            "CMD" => {
                cfg.insert("Cmd".into(), command(rest, cfg));
                cmd_set = true;
            }
            "ENTRYPOINT" => {
                cfg.insert("Entrypoint".into(), command(rest, cfg));
                if !cmd_set {
                    cfg.insert("Cmd".into(), Value::Null);
                }
            }
            "ENV" => {
                let mut env = env;
                for (k, v) in pairs(change, rest, &env)? {
                    let kv = format!("{k}={v}");
                    match env
                        .iter()
                        .position(|e| e.split_once('=').map(|x| x.0) == Some(&k))
                    {
                        Some(i) => env[i] = kv,
                        None => env.push(kv),
                    }
                }
                cfg.insert("Env".into(), json!(env));
            }
            "LABEL" => {
                let labels = pairs(change, rest, &env)?;
                merge_into(
                    cfg,
                    "Labels",
                    labels.into_iter().map(|(k, v)| (k, json!(v))).collect(),
                );
            }
            "EXPOSE" => {
                let specs = words(rest, Some(&env)).map_err(|e| bad(change, e))?;
                if specs.is_empty() {
                    return Err(bad(change, "EXPOSE needs a port"));
                }
                let mut all = Vec::new();
                for s in specs {
                    all.extend(ports(change, &s)?);
                }
                merge_into(
                    cfg,
                    "ExposedPorts",
                    all.into_iter().map(|p| (p, json!({}))).collect(),
                );
            }
            "VOLUME" => {
                let vols = match json_array(rest) {
                    Some(a) => a,
                    None => words(rest, Some(&env)).map_err(|e| bad(change, e))?,
                };
                if vols.is_empty() || vols.iter().any(|v| v.trim().is_empty()) {
                    return Err(bad(change, "VOLUME needs non-empty paths"));
                }
                merge_into(
                    cfg,
                    "Volumes",
                    vols.into_iter().map(|v| (v, json!({}))).collect(),
                );
            }
            "WORKDIR" => {
                let dir = one_word("WORKDIR")?;
                let base = cfg
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("/")
                    .to_string();
                let joined = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{base}/{dir}")
                };
                cfg.insert("WorkingDir".into(), json!(clean_abs(&joined)));
            }
            "USER" => {
                let user = one_word("USER")?;
                cfg.insert("User".into(), json!(user));
            }
            "ONBUILD" => {
                let (i, r) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let i = i.to_ascii_uppercase();
                if i.is_empty() || matches!(i.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(bad(
                        change,
                        "ONBUILD needs an instruction (not ONBUILD, FROM or MAINTAINER)",
                    ));
                }
                let trigger = format!("{i} {}", r.trim()).trim_end().to_string();
                let slot = cfg.entry("OnBuild").or_insert_with(|| json!([]));
                match slot {
                    Value::Array(a) => a.push(json!(trigger)),
                    other => *other = json!([trigger]),
                }
            }
            other => {
                return Err(bad(
                    change,
                    format!("{other} is not an instruction commit accepts ({ACCEPTED})"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(base: Value, changes: &[&str]) -> Value {
        let mut m = base.as_object().unwrap().clone();
        let ch: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
        apply(&mut m, &ch).unwrap();
        Value::Object(m)
    }

    #[test]
    fn docker_commit_changes() {
        let base = json!({"Env": ["PATH=/bin", "HOME=/root"], "Cmd": ["sh"], "WorkingDir": "/srv"});
        let c = applied(
            base.clone(),
            &[
                r#"CMD ["/app", "--flag"]"#,
                "ENV K=V Q=\"two words\" P=$HOME/x",
                "ENV LEGACY value with  spaces",
                "env HOME=/home/u",
                "LABEL a=1 \"b c\"=2",
                "EXPOSE 80 53/udp 8000-8002/tcp",
                "VOLUME /data /cache",
                r#"VOLUME ["/v"]"#,
                "WORKDIR app",
                "WORKDIR ../lib/./x",
                "USER 1000:1000",
                "ONBUILD run echo hi",
            ],
        );
        assert_eq!(c["Cmd"], json!(["/app", "--flag"]));
        assert_eq!(
            c["Env"],
            json!([
                "PATH=/bin",
                "HOME=/home/u",
                "K=V",
                "Q=two words",
                "P=/root/x",
                "LEGACY=value with spaces"
            ])
        );
        assert_eq!(c["Labels"], json!({"a": "1", "b c": "2"}));
        let ports: Vec<&String> = c["ExposedPorts"].as_object().unwrap().keys().collect();
        assert_eq!(
            ports,
            ["53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(c["Volumes"], json!({"/data": {}, "/cache": {}, "/v": {}}));
        assert_eq!(c["WorkingDir"], "/srv/lib/x");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["OnBuild"], json!(["RUN echo hi"]));

        // ENTRYPOINT clears an inherited CMD, unless a CMD comes with it.
        let c = applied(base.clone(), &["ENTRYPOINT /run.sh --x"]);
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/run.sh --x"]));
        assert_eq!(c["Cmd"], Value::Null);
        let c = applied(base, &["CMD [\"-v\"]", "ENTRYPOINT [\"/bin/app\"]"]);
        assert_eq!(c["Cmd"], json!(["-v"]));
        let c = applied(
            json!({"Shell": ["/bin/bash", "-lc"], "Env": ["A=1"]}),
            &["CMD echo $A ${B:-dflt}"],
        );
        // No expansion in CMD: the shell does it.
        assert_eq!(c["Cmd"], json!(["/bin/bash", "-lc", "echo $A ${B:-dflt}"]));
        let c = applied(
            json!({"Env": ["A=1"]}),
            &["ENV X=${A:+set} Y=${B:-dflt} Z='$A'"],
        );
        assert_eq!(c["Env"], json!(["A=1", "X=set", "Y=dflt", "Z=$A"]));
    }

    #[test]
    fn bad_changes_are_refused() {
        for bad in [
            "RUN echo",
            "FROM x",
            "ENV",
            "ENV =x",
            "EXPOSE 99999",
            "EXPOSE 80/icmp",
            "EXPOSE 10-5",
            "WORKDIR a b",
            "USER",
            "ENV A=\"open",
            "ONBUILD FROM x",
            "VOLUME",
        ] {
            let mut m = Map::new();
            assert!(apply(&mut m, &[bad.to_string()]).is_err(), "{bad} accepted");
        }
    }
}
