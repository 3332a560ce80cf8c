//! JSON paths as operators write them (`$.Account.Contacts`, `$.RequiredParts[*].Qty`,
//! `$['Odd key'][0]`): what recording leaves out (`redact`) and what a replay's comparison
//! ignores (`--ignore`), and the paths at which two answers differ.

use serde_json::Value;

/// A step of a concrete path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A step of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Key(String),
    Index(usize),
    Any,
}

/// A parsed JSON path: `$` followed by `.name`, `.*`, `[N]`, `[*]` or `['name']` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Pattern>,
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for JsonPath {
    type Err = String;

    fn from_str(text: &str) -> Result<JsonPath, String> {
        let bad = |why: &str| format!("JSON path {text:?} {why}; write e.g. $.Account.Contacts");
        let mut rest = text
            .trim()
            .strip_prefix('$')
            .ok_or_else(|| bad("must start with $"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    return Err(bad("has an empty name"));
                }
                steps.push(if name == "*" {
                    Pattern::Any
                } else {
                    Pattern::Key(name.to_string())
                });
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').ok_or_else(|| bad("has an unclosed ["))?;
                let inner = after[..end].trim();
                steps.push(if inner == "*" {
                    Pattern::Any
                } else if let Ok(i) = inner.parse::<usize>() {
                    Pattern::Index(i)
                } else if let Some(name) = quoted(inner) {
                    Pattern::Key(name.to_string())
                } else {
                    return Err(bad(
                        "has a step that is neither a number, * nor a quoted name",
                    ));
                });
                rest = &after[end + 1..];
            } else {
                return Err(bad("has a step that starts with neither . nor ["));
            }
        }
        Ok(JsonPath {
            text: text.trim().to_string(),
            steps,
        })
    }
}

fn quoted(text: &str) -> Option<&str> {
    ['\'', '"'].into_iter().find_map(|q| {
        text.strip_prefix(q)
            .and_then(|t| t.strip_suffix(q))
            .filter(|t| !t.contains(q))
    })
}

impl JsonPath {
    /// Whether `path` lies at or under what this pattern names.
    pub fn covers(&self, path: &[Step]) -> bool {
        self.steps.len() <= path.len()
            && self.steps.iter().zip(path).all(|(p, s)| match (p, s) {
                (Pattern::Any, _) => true,
                (Pattern::Key(k), Step::Key(s)) => k == s,
                (Pattern::Index(i), Step::Index(s)) => i == s,
                _ => false,
            })
    }

    /// Removes from `value` everything this path names. The root itself is never removed.
    pub fn redact(&self, value: &mut Value) {
        fn walk(value: &mut Value, steps: &[Pattern]) {
            let Some((step, rest)) = steps.split_first() else {
                return;
            };
            match (step, value) {
                (Pattern::Key(k), Value::Object(map)) => {
                    if rest.is_empty() {
                        map.remove(k);
                    } else if let Some(v) = map.get_mut(k) {
                        walk(v, rest);
                    }
                }
                (Pattern::Any, Value::Object(map)) => {
                    if rest.is_empty() {
                        map.clear();
                    } else {
                        map.values_mut().for_each(|v| walk(v, rest));
                    }
                }
                (Pattern::Index(i), Value::Array(items)) => {
                    if rest.is_empty() {
                        if *i < items.len() {
                            items.remove(*i);
                        }
                    } else if let Some(v) = items.get_mut(*i) {
                        walk(v, rest);
                    }
                }
                (Pattern::Any, Value::Array(items)) => {
                    if rest.is_empty() {
                        items.clear();
                    } else {
                        items.iter_mut().for_each(|v| walk(v, rest));
                    }
                }
                _ => {}
            }
        }
        walk(value, &self.steps);
    }
}

/// A concrete path as text: `$.PartsOrders[0].Id`, `$['odd key']`.
pub fn render(path: &[Step]) -> String {
    let mut out = String::from("$");
    for step in path {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(k)
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                out.push('.');
                out.push_str(k);
            }
            Step::Key(k) => out.push_str(&format!("[{}]", serde_json::json!(k))),
        }
    }
    out
}

/// The paths at which `a` and `b` differ (a member or element on one side only counts
/// as a difference at its path), leaving out those under `ignore`; at most `max`.
pub fn differences(a: &Value, b: &Value, ignore: &[JsonPath], max: usize) -> Vec<String> {
    fn walk(
        a: Option<&Value>,
        b: Option<&Value>,
        at: &mut Vec<Step>,
        ignore: &[JsonPath],
        out: &mut Vec<String>,
        max: usize,
    ) {
        if out.len() >= max || a == b || ignore.iter().any(|p| p.covers(at)) {
            return;
        }
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    at.push(Step::Key(k.clone()));
                    walk(x.get(k), y.get(k), at, ignore, out, max);
                    at.pop();
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) => {
                for i in 0..x.len().max(y.len()) {
                    at.push(Step::Index(i));
                    walk(x.get(i), y.get(i), at, ignore, out, max);
                    at.pop();
                }
            }
            _ => out.push(render(at)),
        }
    }
    let mut out = Vec::new();
    walk(Some(a), Some(b), &mut Vec::new(), ignore, &mut out, max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> JsonPath {
        text.parse().unwrap()
    }

    #[test]
    fn paths_parse_strictly() {
        for good in ["$", "$.A", "$.A.B[0]", "$.A[*].B", "$['odd key'].x", "$.*"] {
            assert!(good.parse::<JsonPath>().is_ok(), "{good}");
        }
        for bad in ["A.B", "$..A", "$.A[", "$.A[x]", "$A"] {
            let err = bad.parse::<JsonPath>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn redaction_removes_what_the_path_names_and_nothing_else() {
        let mut v = json!({
            "Account": {"AccountNum": "A", "Contacts": [{"Name": "x"}]},
            "RequiredParts": [{"Qty": 1, "PartNum": "p"}, {"Qty": 2, "PartNum": "q"}],
        });
        path("$.Account.Contacts").redact(&mut v);
        path("$.RequiredParts[*].Qty").redact(&mut v);
        path("$.Missing.Deep").redact(&mut v);
        assert_eq!(
            v,
            json!({
                "Account": {"AccountNum": "A"},
                "RequiredParts": [{"PartNum": "p"}, {"PartNum": "q"}],
            })
        );
    }

    #[test]
    fn differences_name_every_changed_path_except_ignored_ones() {
        let a = json!({"OrderNum": "FU-1", "Parts": [{"Id": "a"}], "Same": true});
        let b = json!({"OrderNum": "FU-2", "Parts": [{"Id": "a"}, {"Id": "b"}], "Same": true,
                       "odd key": 1});
        assert_eq!(
            differences(&a, &b, &[], 10),
            ["$.OrderNum", "$.Parts[1]", "$[\"odd key\"]"]
        );
        assert_eq!(
            differences(&a, &b, &[path("$.OrderNum"), path("$.Parts")], 10),
            ["$[\"odd key\"]"]
        );
        assert!(differences(&a, &a, &[], 10).is_empty());
        assert_eq!(differences(&a, &b, &[], 1).len(), 1);
    }
}
