//! What a route serves (the operation kinds) and where: endpoint URI templates
//! (`/workorders/{0}/followup`), which ServiceMobility calls with `{0}` replaced by the
//! WorkOrderID. `{0}` is one whole path segment, percent-decoded, and refused when it is
//! empty, not UTF-8, or holds a control character or an invisible character that disguises
//! text.

use anyhow::bail;
use percent_encoding::percent_decode_str;

/// What a route serves: which export of a plugin answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    /// The Followup WorkOrder interface: a Book Job Object in, a Book Job Response out.
    BookJob,
    /// The Appointment Search interface: an Appointment Search Object in, open slots out.
    AppointmentSearch,
    /// The Authentication interface: `{"username","password"}` in, `{"token"}` out, the
    /// token minted by the host from the identity the plugin vouches for.
    Authentication,
}

impl RouteKind {
    /// The plugin export that serves routes of this kind, as `plugin check` names it.
    pub fn export(self) -> &'static str {
        match self {
            RouteKind::BookJob => "servicemobility:booking/followup (book)",
            RouteKind::AppointmentSearch => "servicemobility:booking/appointments (search)",
            RouteKind::Authentication => "servicemobility:booking/authentication (authenticate)",
        }
    }

    /// The name of this kind in the configuration file (`kind = "…"`).
    pub fn label(self) -> &'static str {
        match self {
            RouteKind::BookJob => "book-job",
            RouteKind::AppointmentSearch => "appointment-search",
            RouteKind::Authentication => "authentication",
        }
    }
}

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
            (RouteKind::BookJob, 1)
            | (RouteKind::AppointmentSearch, 0 | 1)
            | (RouteKind::Authentication, 0) => {}
            (RouteKind::BookJob, 0) => bail!("a book-job route needs {{0}} for the WorkOrderID"),
            (RouteKind::Authentication, _) => {
                bail!("an authentication route takes no {{0}}: it is not about a work order")
            }
            _ => bail!("{{0}} may appear only once"),
        }
        Ok(Template { segments })
    }

    /// The template as an OpenAPI path, `{0}` written as `{name}`.
    pub fn path(&self, name: &str) -> String {
        let segments: Vec<String> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.clone(),
                Segment::WorkOrderId => format!("{{{name}}}"),
            })
            .collect();
        format!("/{}", segments.join("/"))
    }

    /// Whether the template takes a WorkOrderID.
    pub fn has_work_order_id(&self) -> bool {
        self.segments.contains(&Segment::WorkOrderId)
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
    pub fn matches(&self, path: &str) -> Option<Result<Option<String>, String>> {
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
            Ok(id) => match id.chars().find(|c| c.is_control() || disguises(*c)) {
                Some(c) if c.is_control() => Err(format!(
                    "the WorkOrderID in the path contains the control character U+{:04X}; \
                     only printable characters are allowed",
                    u32::from(c)
                )),
                Some(c) => Err(format!(
                    "the WorkOrderID in the path contains U+{:04X}, an invisible formatting \
                     character that can disguise text; only printable characters are allowed",
                    u32::from(c)
                )),
                None if id.trim().is_empty() => Err("the WorkOrderID in the path is empty".into()),
                None => Ok(Some(id.into_owned())),
            },
            Err(_) => Err("the WorkOrderID in the path is not UTF-8 once percent-decoded".into()),
        })
    }
}

/// Invisible characters that change how the text around them reads: line and paragraph
/// separators (a new line to many log viewers), bidirectional overrides and isolates
/// (`WO-1\u{202E}KO` shows as `WO-1OK`), and zero-width characters (two IDs that look the
/// same). An ID has no use for them; downstream they disguise what it says.
fn disguises(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}'
            | '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked() {
        assert!(Template::parse("workorders/{0}", RouteKind::BookJob).is_err());
        assert!(Template::parse("/wo-{0}/x", RouteKind::BookJob).is_err());
        assert!(Template::parse("/wo/x", RouteKind::BookJob).is_err());
        assert!(Template::parse("/wo/{0}/{0}", RouteKind::BookJob).is_err());
        assert!(Template::parse("/search", RouteKind::AppointmentSearch).is_ok());
    }
}
