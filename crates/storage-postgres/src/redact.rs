//! Redacting a PostgreSQL DSN for logs and errors.
//!
//! This module owns [`redact_pg_dsn`] (URL and `key=value` forms, password
//! in the userinfo or as a query parameter). It must never return any part
//! of a password. (A later change unifies this with the config crate's
//! redaction.)

/// The DSN with its password removed, for logs and errors.
///
/// ```
/// use deltaforge_storage_postgres::redact_pg_dsn;
/// assert_eq!(redact_pg_dsn("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
/// assert_eq!(redact_pg_dsn("host=db user=app password=s3cret"), "host=db user=app password=***");
/// ```
pub fn redact_pg_dsn(dsn: &str) -> String {
    if let Some((scheme, rest)) = dsn.split_once("://") {
        // userinfo ends at the last '@' before the first '/'.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***{}", &rest[at..]);
            }
        }
        // A password may also come as a query parameter.
        return redact_query_password(dsn);
    }
    // key=value form.
    dsn.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Redacts a `password` query parameter of a URL DSN.
fn redact_query_password(dsn: &str) -> String {
    let Some((base, query)) = dsn.split_once('?') else { return dsn.to_string() };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}
