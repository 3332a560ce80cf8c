//! The table of configured routes, matched in order against request paths (each through
//! its template, `contract/template.rs`).

use super::auth::TokenPolicy;
use crate::contract::Template;

pub use crate::contract::RouteKind;

/// A configured route, ready to match.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub kind: RouteKind,
    pub plugin: String,
    /// How this route checks `x-access-token`.
    pub token: TokenPolicy,
    /// An authentication route's signing key and throttle.
    pub logon: Option<std::sync::Arc<super::login::Logon>>,
    /// The configured path template (`/workorders/{0}/followup`), as traces name it.
    pub path: String,
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
            logon: None,
            path: path.to_string(),
            template: Template::parse(path, kind)?,
        })
    }

    /// The path template this route matches.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// This route mints tokens with `logon`.
    pub fn with_logon(mut self, logon: super::login::Logon) -> Self {
        self.logon = Some(std::sync::Arc::new(logon));
        self
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
    use crate::config::TokenConfig;

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
        // C0 controls, DEL, the C1 controls (U+0080..U+009F, `%C2%85` is NEL), and the
        // invisible characters that disguise text (line separators, bidi overrides,
        // zero-width characters).
        for (id, code, says) in [
            ("A%00B", "U+0000", "control character"),
            ("A%0AB", "U+000A", "control character"),
            ("%0D%0A", "U+000D", "control character"),
            ("A%1F", "U+001F", "control character"),
            ("A%7FB", "U+007F", "control character"),
            ("A%C2%85B", "U+0085", "control character"),
            ("A%E2%80%A8B", "U+2028", "can disguise text"),
            ("WO-1%E2%80%AEKO", "U+202E", "can disguise text"),
            ("W%E2%80%8BO", "U+200B", "can disguise text"),
            ("%EF%BB%BFWO", "U+FEFF", "can disguise text"),
            ("WO%E2%81%A6X", "U+2066", "can disguise text"),
        ] {
            match t.find(&format!("/workorders/{id}/followup")) {
                Matched::BadId(r, reason) => {
                    assert_eq!(r.name, "f");
                    assert!(reason.contains(says), "{id}: {reason}");
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
}
