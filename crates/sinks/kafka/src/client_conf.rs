//! Which librdkafka properties `client_conf` may set: the rule that keeps a
//! pipeline spec (which may come through the REST API) from loading code,
//! running commands or sending a file's contents through the Kafka client.
//!
//! This module owns the refused-property list and its reasons; it must
//! never look at a property's value except to refuse shell-unsafe Kerberos
//! settings, and never quote a value in its messages.
//!
//! Refused:
//! - code loading: `plugin.library.paths`, `interceptors`,
//!   `ssl.engine.location`, `ssl.engine.id`, `ssl.providers`;
//! - callbacks and pointers, which only a program can set: every `*_cb`
//!   property, `opaque`, `ssl_engine_callback_data`, `default_topic_conf`;
//! - commands: `sasl.kerberos.kinit.cmd`, and `sasl.kerberos.principal` /
//!   `sasl.kerberos.keytab` values with characters a shell would interpret
//!   (librdkafka pastes them into the default `kinit` command line);
//! - files whose contents would be sent out: `sasl.oauthbearer.assertion.file`
//!   and `sasl.oauthbearer.assertion.jwt.template.file` (sent to the token
//!   endpoint), and `offset.store.path` (writes files).
//!
//! Allowed, because TLS and Kerberos need them and their contents never
//! leave the process except as a public certificate: `ssl.ca.location`,
//! `ssl.certificate.location`, `ssl.key.location`, `ssl.keystore.location`,
//! `ssl.crl.location`, `https.ca.location`, `sasl.kerberos.keytab`,
//! `sasl.oauthbearer.assertion.private.key.file`. They are read with the
//! DeltaForge process's permissions: see docs/security.md.

/// Properties refused outright, with why.
const REFUSED: &[(&str, &str)] = &[
    ("plugin.library.paths", "loads shared libraries into the DeltaForge process"),
    ("interceptors", "loads interceptor plugins into the DeltaForge process"),
    ("ssl.engine.location", "loads an OpenSSL engine library into the DeltaForge process"),
    ("ssl.engine.id", "selects an OpenSSL engine, which loads a library"),
    ("ssl.providers", "loads OpenSSL provider libraries into the DeltaForge process"),
    ("ssl_engine_callback_data", "is a pointer only a program can set"),
    ("opaque", "is a pointer only a program can set"),
    ("default_topic_conf", "is a pointer only a program can set"),
    ("sasl.kerberos.kinit.cmd", "runs a shell command"),
    ("sasl.oauthbearer.assertion.file", "sends a file's contents to the token endpoint"),
    ("sasl.oauthbearer.assertion.jwt.template.file", "sends a file's contents to the token endpoint"),
    ("offset.store.path", "makes librdkafka write files"),
];

/// Kerberos settings librdkafka pastes into the `kinit` shell command.
const KINIT_ARGUMENTS: &[&str] = &["sasl.kerberos.principal", "sasl.kerberos.keytab"];

/// Why `client_conf` may not set `key` to `value` (a librdkafka property
/// and its value as text), or `None` when it may.
///
/// ```
/// use deltaforge_sink_kafka::client_conf::refusal;
/// assert!(refusal("plugin.library.paths", "/tmp/evil.so").is_some());
/// assert!(refusal("error_cb", "x").is_some());
/// assert!(refusal("ssl.ca.location", "/etc/ssl/ca.pem").is_none());
/// assert!(refusal("sasl.kerberos.principal", "kafka/h@REALM; rm -rf /").is_some());
/// ```
pub fn refusal(key: &str, value: &str) -> Option<&'static str> {
    let k = key.trim().to_ascii_lowercase();
    if let Some((_, why)) = REFUSED.iter().find(|(r, _)| *r == k) {
        return Some(why);
    }
    if k.ends_with("_cb") || k.ends_with(".cb") {
        return Some("is a callback only a program can set");
    }
    let shell_safe = |c: char| c.is_ascii_alphanumeric() || "._-/@+=:,".contains(c);
    if KINIT_ARGUMENTS.contains(&k.as_str()) && !value.chars().all(shell_safe) {
        return Some(
            "is pasted into librdkafka's kinit shell command: only letters, digits and . _ - / @ + = : , are allowed",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_loading_callbacks_and_commands_are_refused() {
        for key in [
            "plugin.library.paths",
            "Plugin.Library.Paths",
            "interceptors",
            "ssl.engine.location",
            "ssl.engine.id",
            "ssl.providers",
            "ssl_engine_callback_data",
            "oauthbearer_token_refresh_cb",
            "log_cb",
            "error_cb",
            "dr_msg_cb",
            "ssl.certificate.verify_cb",
            "opaque",
            "sasl.kerberos.kinit.cmd",
            "sasl.oauthbearer.assertion.file",
            "sasl.oauthbearer.assertion.jwt.template.file",
            "offset.store.path",
        ] {
            assert!(refusal(key, "x").is_some(), "{key}");
        }
        for (key, value) in [("sasl.kerberos.principal", "a`id`"), ("sasl.kerberos.keytab", "/k $(id)")] {
            assert!(refusal(key, value).is_some(), "{key}={value}");
        }
    }

    #[test]
    fn tls_files_and_ordinary_properties_are_allowed() {
        for key in [
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
            "ssl.keystore.location",
            "ssl.crl.location",
            "https.ca.location",
            "sasl.oauthbearer.assertion.private.key.file",
            "compression.type",
            "linger.ms",
            "sasl.password",
        ] {
            assert!(refusal(key, "/etc/ssl/x.pem").is_none(), "{key}");
        }
        assert!(refusal("sasl.kerberos.principal", "kafka/broker-1.example@EXAMPLE.COM").is_none());
        assert!(refusal("sasl.kerberos.keytab", "/etc/security/kafka.keytab").is_none());
    }
}
