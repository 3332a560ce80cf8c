//! Route templates (`/workorders/{0}/followup`) and the table that matches request paths
//! against them. `{0}` is the WorkOrderID: one whole path segment, percent-decoded, and
//! refused when it is empty, not UTF-8 or holds a control character.

use super::auth::TokenPolicy;
use anyhow::bail;
use percent_encoding::percent_decode_str;

pub use crate::contract::RouteKind;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    WorkOrderId,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parses a template; a book-job route must contain `{0}` exactly once, as a whole
    /// segment.
    pub fn parse(path: &str, kind: RouteKind) -> anyhow::Result<Template> {
        let Some(rest) = path.strip_prefix('/') else {
            bail!("path template must start with '/'");
        };
        let mut segments = Vec::new();
        for segment in rest.trim_end_matches('/').split('/') {
            if segment == "{0}" {
                segments.push(Segment::WorkOrderId);
            } else if segment.contains("{0}") {
                bail!("{{0}} must be a whole path segment, as in /workorders/{{0}}/followup");
            } else if segment.contains(['{', '}', '?', '#']) {
                bail!("unexpected character in path segment {segment:?}");
            } else {
                segments.push(Segment::Literal(segment.to_string()));
            }
        }
        let ids = segments
            .iter()
            .filter(|s| **s == Segment::WorkOrderId)
            .count();
        match (kind, ids) {
            (RouteKind::BookJob, 1) | (RouteKind::AppointmentSearch, 0 | 1) => {}
            (RouteKind::BookJob, 0) => bail!("a book-job route needs {{0}} for the WorkOrderID"),
            _ => bail!("{{0}} may appear only once"),
        }
        Ok(Template { segments })
    }

    /// A key equal for templates that match the same paths.
    pub fn shape(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::WorkOrderId => "{0}",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Matches a request path. `Some(Ok(id))` on a match (`id` is `None` without `{0}`),
    /// `Some(Err(reason))` when the path matches but its WorkOrderID is unusable.
    fn matches(&self, path: &str) -> Option<Result<Option<String>, String>> {
        let rest = path.strip_prefix('/')?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split('/');
        let mut id = None;
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::WorkOrderId => id = Some(part),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        let Some(raw) = id else {
            return Some(Ok(None));
        };
        Some(match percent_decode_str(raw).decode_utf8() {
            // The ID reaches plugins, and through them log lines and the URLs, headers and
            // bodies sent to customers' systems: a line feed or a NUL in it could forge a log
            // line or a header there, or end the ID early.
            Ok(id) => match id.chars().find(|c| c.is_control()) {
                Some(c) => Err(format!(
                    "the WorkOrderID in the path contains the control character U+{:04X}; \
                     only printable characters are allowed",
                    u32::from(c)
                )),
                None if id.trim().is_empty() => Err("the WorkOrderID in the path is empty".into()),
                None => Ok(Some(id.into_owned())),
            },
            Err(_) => Err("the WorkOrderID in the path is not UTF-8 once percent-decoded".into()),
        })
    }
}

/// A configured route, ready to match.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub kind: RouteKind,
    pub plugin: String,
    /// How this route checks `x-access-token`.
    pub token: TokenPolicy,
    template: Template,
}

impl Route {
    pub fn new(
        name: String,
        path: &str,
        kind: RouteKind,
        plugin: String,
        token: TokenPolicy,
    ) -> anyhow::Result<Self> {
        Ok(Route {
            name,
            kind,
            plugin,
            token,
            template: Template::parse(path, kind)?,
        })
    }
}

/// The routes in configuration order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// The outcome of matching a path.
#[derive(Debug, PartialEq)]
pub enum Matched<'a> {
    Route(&'a Route, Option<String>),
    /// The path matches a route, but its WorkOrderID segment is unusable.
    BadId(&'a Route, String),
    NotFound,
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.template == other.template
    }
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        RouteTable { routes }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route whose template matches `path` (the path only, without query).
    pub fn find(&self, path: &str) -> Matched<'_> {
        for route in &self.routes {
            match route.template.matches(path) {
                Some(Ok(id)) => return Matched::Route(route, id),
                Some(Err(reason)) => return Matched::BadId(route, reason),
                None => {}
            }
        }
        Matched::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::TokenConfig;

    fn table() -> RouteTable {
        let token = TokenPolicy::new(&TokenConfig::default()).unwrap();
        RouteTable::new(vec![
            Route::new(
                "f".into(),
                "/workorders/{0}/followup",
                RouteKind::BookJob,
                "p".into(),
                token.clone(),
            )
            .unwrap(),
            Route::new(
                "s".into(),
                "/appointments/search",
                RouteKind::AppointmentSearch,
                "p".into(),
                token,
            )
            .unwrap(),
        ])
    }

    #[test]
    fn matches_work_order_id_percent_decoded() {
        let t = table();
        match t.find("/workorders/WO%2F2024%20118/followup") {
            Matched::Route(r, id) => {
                assert_eq!(r.name, "f");
                assert_eq!(id.as_deref(), Some("WO/2024 118"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(t.find("/appointments/search/"), Matched::Route(r, None) if r.name == "s")
        );
    }

    #[test]
    fn unknown_and_partial_paths_do_not_match() {
        let t = table();
        assert_eq!(t.find("/workorders/1"), Matched::NotFound);
        assert_eq!(t.find("/workorders/1/followup/x"), Matched::NotFound);
        assert_eq!(t.find("/"), Matched::NotFound);
        assert_eq!(t.find(""), Matched::NotFound);
    }

    #[test]
    fn empty_or_non_utf8_ids_are_reported() {
        let t = table();
        assert!(
            matches!(t.find("/workorders//followup"), Matched::BadId(_, r) if r.contains("empty"))
        );
        assert!(
            matches!(t.find("/workorders/%FF/followup"), Matched::BadId(_, r) if r.contains("UTF-8"))
        );
    }

    #[test]
    fn ids_with_control_characters_are_reported() {
        let t = table();
        // C0 controls, DEL, and the C1 controls (U+0080..U+009F, `%C2%85` is NEL).
        for (id, code) in [
            ("A%00B", "U+0000"),
            ("A%0AB", "U+000A"),
            ("%0D%0A", "U+000D"),
            ("A%1F", "U+001F"),
            ("A%7FB", "U+007F"),
            ("A%C2%85B", "U+0085"),
        ] {
            match t.find(&format!("/workorders/{id}/followup")) {
                Matched::BadId(r, reason) => {
                    assert_eq!(r.name, "f");
                    assert!(reason.contains("control character"), "{id}: {reason}");
                    assert!(reason.contains(code), "{id}: {reason}");
                }
                other => panic!("{id}: unexpected {other:?}"),
            }
        }
        // Printable punctuation, spaces inside and non-ASCII letters stay allowed.
        for (id, decoded) in [
            ("A%20B", "A B"),
            ("%C3%89T%C3%89-1", "ÉTÉ-1"),
            ("A~B", "A~B"),
        ] {
            assert!(
                matches!(t.find(&format!("/workorders/{id}/followup")),
                    Matched::Route(_, Some(got)) if got == decoded),
                "{id}"
            );
        }
    }

    #[test]
    fn templates_are_checked() {
        assert!(Template::parse("workorders/{0}", RouteKind::BookJob).is_err());
        assert!(Template::parse("/wo-{0}/x", RouteKind::BookJob).is_err());
        assert!(Template::parse("/wo/x", RouteKind::BookJob).is_err());
        assert!(Template::parse("/wo/{0}/{0}", RouteKind::BookJob).is_err());
        assert!(Template::parse("/search", RouteKind::AppointmentSearch).is_ok());
    }
}
