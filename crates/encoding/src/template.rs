//! Routing templates: `orders.${db}.${table}`, `${after.customer_id}`.
//!
//! Placeholders: `${db}`, `${table}`, `${op}`, `${tenant}`, `${pipeline}`,
//! `${after.COLUMN}` and `${before.COLUMN}` (a missing or NULL column renders
//! as an empty string; strings render without quotes, other values as
//! JSON). Environment variables (`${UPPER_CASE}`) are expanded earlier, when
//! the config is loaded, so they never reach this parser.

use std::fmt;

use deltaforge_core::{ConfigProblem, Event};

/// A template that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

impl TemplateError {
    /// This parse error as a config problem at `field`, the config key that
    /// holds the template (`topic`, `subject`, `url`, …).
    ///
    /// ```
    /// use deltaforge_encoding::Template;
    /// let p = Template::parse("${nope}").unwrap_err().at("topic");
    /// assert_eq!(p.field, "topic");
    /// assert!(p.message.contains("unknown placeholder ${nope}"));
    /// ```
    pub fn at(self, field: &str) -> ConfigProblem {
        ConfigProblem::new(field, self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Db,
    Table,
    Op,
    Tenant,
    Pipeline,
    After(String),
    Before(String),
}

/// A parsed template.
///
/// ```
/// use deltaforge_encoding::Template;
/// let t = Template::parse("cdc.${db}.${table}").unwrap();
/// assert!(t.is_static() == false);
/// assert!(Template::parse("${nope}").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template, rejecting unknown placeholders.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end =
                after.find('}').ok_or_else(|| TemplateError(format!("unclosed placeholder in template {text:?}")))?;
            let name = &after[..end];
            parts.push(match name {
                "db" => Part::Db,
                "table" => Part::Table,
                "op" => Part::Op,
                "tenant" => Part::Tenant,
                "pipeline" => Part::Pipeline,
                n if n.starts_with("after.") && n.len() > 6 => Part::After(n[6..].to_string()),
                n if n.starts_with("before.") && n.len() > 7 => Part::Before(n[7..].to_string()),
                n => {
                    return Err(TemplateError(format!(
                        "unknown placeholder ${{{n}}} in template {text:?}; known: ${{db}}, ${{table}}, ${{op}}, \
                         ${{tenant}}, ${{pipeline}}, ${{after.COLUMN}}, ${{before.COLUMN}}"
                    )))
                }
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// True when the template has no placeholder.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Renders the template for an event.
    pub fn render(&self, e: &Event) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Db => out.push_str(&e.source.db),
                Part::Table => out.push_str(&e.source.table),
                Part::Op => out.push_str(e.op.code()),
                Part::Tenant => out.push_str(&e.source.tenant),
                Part::Pipeline => out.push_str(&e.source.pipeline),
                Part::After(c) => push_value(&mut out, e.after.as_ref().and_then(|r| r.get(c))),
                Part::Before(c) => push_value(&mut out, e.before.as_ref().and_then(|r| r.get(c))),
            }
        }
        out
    }
}

fn push_value(out: &mut String, v: Option<&serde_json::Value>) {
    match v {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => out.push_str(s),
        Some(other) => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::testing::EventBuilder;
    use deltaforge_core::Op;
    use serde_json::json;

    fn ev() -> Event {
        EventBuilder::new(1)
            .op(Op::Update)
            .before(json!({"id": 7, "region": "eu"}))
            .after(json!({"id": 7, "region": "us"}))
            .pipeline("orders-cdc", "acme")
            .table("public.orders")
            .build()
    }

    #[test]
    fn renders_every_placeholder() {
        let t =
            Template::parse("${tenant}/${pipeline}/${db}.${table}/${op}/${after.region}/${before.region}/${after.id}")
                .unwrap();
        assert_eq!(t.render(&ev()), "acme/orders-cdc/public.orders/u/us/eu/7");
    }

    #[test]
    fn rejects_unknown_and_unclosed() {
        assert!(Template::parse("${schema}").unwrap_err().0.contains("unknown placeholder ${schema}"));
        assert!(Template::parse("x.${db").unwrap_err().0.contains("unclosed"));
        assert!(Template::parse("${after.}").is_err());
        let p = Template::parse("${schema}").unwrap_err().at("subject");
        assert_eq!((p.field.as_str(), p.to_string().starts_with("subject: unknown placeholder")), ("subject", true));
    }

    #[test]
    fn static_templates() {
        assert!(Template::parse("orders").unwrap().is_static());
        assert_eq!(Template::parse("orders").unwrap().render(&ev()), "orders");
    }
}
