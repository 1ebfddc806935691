//! Validation beyond types: references between sections, patterns, codes,
//! and that every adapter instance builds. Collects every problem, so an
//! engineer fixes a file in one pass.

use super::Config;
use super::suggest::did_you_mean;
use crate::domain::identifiers::is_istat_code;
use std::fmt;

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    /// Dotted key path (`routes[2].adapter`).
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

/// Choices that are allowed but weaken security: `raccordo check` prints
/// them and the hub logs them at start.
pub fn warnings(cfg: &Config) -> Vec<ConfigIssue> {
    let mut out = Vec::new();
    if cfg.hub.tls.is_none() && cfg.hub.allow_plaintext {
        for (key, addr) in [
            ("hub.grpc_listen", cfg.hub.grpc_listen),
            ("hub.http_listen", cfg.hub.http_listen),
        ] {
            if !addr.ip().is_loopback() {
                out.push(ConfigIssue {
                    key: key.into(),
                    reason: format!(
                        "plain text on {addr} (hub.allow_plaintext): credentials and personal \
                         data cross the network unencrypted unless a TLS proxy is in front"
                    ),
                });
            }
        }
    }
    if cfg.store.kind == super::StoreKind::Postgres {
        let pg = cfg.store.postgres();
        if pg.tls == super::PgTlsMode::Require {
            out.push(ConfigIssue {
                key: "store.postgres.tls".into(),
                reason: "require encrypts but does not check the server's certificate: \
                         use verify-full with ca_file where the network is not trusted"
                    .into(),
            });
        }
    } else if cfg.store.postgres.is_some() {
        out.push(ConfigIssue {
            key: "store.postgres".into(),
            reason: "set, but store.kind is sqlite: it is ignored".into(),
        });
    }
    if cfg.clients.is_empty() && cfg.security.allow_anonymous == Some(true) {
        out.push(ConfigIssue {
            key: "security.allow_anonymous".into(),
            reason: "no clients are declared: every caller may call every RPC".into(),
        });
    }
    out
}

/// Checks a loaded configuration; an empty list means it is usable.
pub fn check(cfg: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut add = |key: String, reason: String| issues.push(ConfigIssue { key, reason });

    for (key, value) in [
        ("hub.max_calls_in_progress", cfg.hub.max_calls_in_progress),
        (
            "hub.max_watch_streams_per_client",
            cfg.hub.max_watch_streams_per_client,
        ),
        ("store.write_queue", cfg.store.write_queue),
    ] {
        if value == 0 {
            add(
                key.into(),
                "must be at least 1 (0 would refuse every call)".into(),
            );
        }
    }
    if let Some(budget) = cfg.hub.max_in_flight_request_bytes
        && budget < cfg.max_submit_request_bytes()
    {
        add(
            "hub.max_in_flight_request_bytes".into(),
            format!(
                "is {budget}, less than the largest SubmitPractice request the [limits] allow \
                 ({} bytes: limits.max_total_attachment_bytes + limits.max_data_bytes + 1 MiB), \
                 which would always be refused: raise it or lower the limits",
                cfg.max_submit_request_bytes()
            ),
        );
    }
    for code in cfg.tenants.keys() {
        if !is_istat_code(code) {
            add(
                format!("tenants.{code}"),
                "a tenant is keyed by its 6-digit ISTAT code".into(),
            );
        }
    }
    if let Err(refused) =
        crate::security::authn::Authenticator::build(&cfg.clients, &cfg.security, &cfg.base_dir)
    {
        for (client, (key, reason)) in refused {
            let key = if key.is_empty() {
                format!("clients.{client}")
            } else {
                format!("clients.{client}.{key}")
            };
            add(key, reason);
        }
    }
    for (name, client) in &cfg.clients {
        for (i, t) in client.tenants.iter().enumerate() {
            if t != "*" && !cfg.tenants.contains_key(t) && !cfg.declares("tenants", t) {
                add(
                    format!("clients.{name}.tenants[{i}]"),
                    format!(
                        "{t} is not a tenant of this hub{}",
                        did_you_mean(t, cfg.tenants.keys().map(String::as_str))
                    ),
                );
            }
        }
    }
    match &cfg.hub.tls {
        Some(tls) => {
            if let Err((key, reason)) = crate::tls::setup(tls, &cfg.base_dir, &[b"h2"]) {
                let key = if key.is_empty() {
                    "hub.tls".into()
                } else {
                    format!("hub.tls.{key}")
                };
                add(key, reason);
            }
        }
        None if !cfg.hub.allow_plaintext => {
            for (key, addr) in [
                ("hub.grpc_listen", cfg.hub.grpc_listen),
                ("hub.http_listen", cfg.hub.http_listen),
            ] {
                if !addr.ip().is_loopback() {
                    add(
                        key.into(),
                        format!(
                            "{addr} is not loopback and hub.tls is not set: configure [hub.tls], \
                             or set hub.allow_plaintext = true if a TLS proxy is in front"
                        ),
                    );
                }
            }
        }
        None => {}
    }
    if cfg.clients.is_empty()
        && !cfg.hub.grpc_listen.ip().is_loopback()
        && cfg.security.allow_anonymous != Some(true)
    {
        add(
            "clients".into(),
            format!(
                "none declared, so anyone reaching {} could call the API: declare clients, \
                 or set security.allow_anonymous = true to accept that",
                cfg.hub.grpc_listen
            ),
        );
    }
    if cfg.store.kind == super::StoreKind::Postgres {
        let pg = cfg.store.postgres();
        let checked = pg.connection_url(&cfg.base_dir).and_then(|url| {
            let opts = crate::store::postgres::PgOptions::from_config(&pg, &cfg.base_dir);
            crate::store::postgres::pool::build(&url, &opts).map(drop)
        });
        if let Err((key, reason)) = checked {
            add(format!("store.postgres.{key}"), reason);
        }
    }
    for (name, adapter) in &cfg.adapters {
        if let Err(e) = crate::adapters::build(name, adapter, &cfg.base_dir) {
            add(format!("adapters.{name}.{}", e.key), e.reason);
        }
    }
    for (code, service) in &cfg.services {
        if service.legal_term_days == 0 {
            add(
                format!("services.{code}.legal_term_days"),
                "must be at least 1".into(),
            );
        }
        for (list, fields) in [
            ("fields", &service.fields),
            ("outcome_data", &service.outcome_data),
        ] {
            let mut seen = std::collections::HashSet::new();
            for (i, field) in fields.iter().enumerate() {
                let key = format!("services.{code}.{list}[{i}]");
                if field.name.is_empty() {
                    add(format!("{key}.name"), "is empty".into());
                } else if !seen.insert(field.name.as_str()) {
                    add(
                        format!("{key}.name"),
                        format!("field '{}' is declared twice", field.name),
                    );
                }
                if list == "outcome_data" && field.required {
                    add(
                        format!("{key}.required"),
                        "results bring outcome data in parts: an outcome field cannot be required"
                            .into(),
                    );
                }
                if field.pattern.is_some() && field.field_type != super::FieldType::String {
                    add(
                        format!("{key}.pattern"),
                        "applies to string fields only".into(),
                    );
                }
                if let Some(p) = &field.pattern
                    && let Err(e) = regex::Regex::new(&format!("^(?:{p})$"))
                {
                    // regex reports over several lines; keep one line per problem.
                    let e = e
                        .to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    add(
                        format!("{key}.pattern"),
                        format!("not a valid regular expression: {e}"),
                    );
                }
            }
        }
    }
    let mut bound = std::collections::HashMap::new();
    for (i, route) in cfg.routes.iter().enumerate() {
        let key = cfg.route_key(i);
        if route.tenants.is_empty() {
            add(format!("{key}.tenants"), "lists no tenant".into());
        }
        for (t_index, t) in route.tenants.iter().enumerate() {
            if !cfg.tenants.contains_key(t) && !cfg.declares("tenants", t) {
                add(
                    format!("{key}.tenants[{t_index}]"),
                    format!(
                        "'{t}' is not declared under [tenants]{}",
                        did_you_mean(t, cfg.tenants.keys().map(String::as_str))
                    ),
                );
            }
            if let Some(prev) = bound.insert((t.clone(), route.service.clone()), i) {
                add(
                    format!("{key}.service"),
                    format!(
                        "tenant {t} already routes '{}' in {}",
                        route.service,
                        cfg.route_key(prev)
                    ),
                );
            }
        }
        if !cfg.services.contains_key(&route.service) && !cfg.declares("services", &route.service) {
            add(
                format!("{key}.service"),
                format!(
                    "'{}' is not declared under [services]{}",
                    route.service,
                    did_you_mean(&route.service, cfg.services.keys().map(String::as_str))
                ),
            );
        }
        if !cfg.adapters.contains_key(&route.adapter) && !cfg.declares("adapters", &route.adapter) {
            add(
                format!("{key}.adapter"),
                format!(
                    "'{}' is not declared under [adapters]{}",
                    route.adapter,
                    did_you_mean(&route.adapter, cfg.adapters.keys().map(String::as_str))
                ),
            );
        }
        if route.max_attempts == Some(0) {
            add(format!("{key}.max_attempts"), "must be at least 1".into());
        }
        if route.deadline.is_zero() {
            add(format!("{key}.deadline"), "must be longer than zero".into());
        }
    }
    if cfg.delivery.max_attempts == 0 {
        add("delivery.max_attempts".into(), "must be at least 1".into());
    }
    if cfg.delivery.poll_interval < std::time::Duration::from_millis(10) {
        add(
            "delivery.poll_interval".into(),
            "must be at least 10ms (workers are woken on new work; this is only a safety net)"
                .into(),
        );
    }
    if cfg.delivery.lease < std::time::Duration::from_secs(1) {
        add(
            "delivery.lease".into(),
            "must be at least 1s (it is renewed every third of it, through the database)".into(),
        );
    } else if cfg.delivery.lease > std::time::Duration::from_secs(3600) {
        add(
            "delivery.lease".into(),
            "must be at most 1h (an attempt whose hub stopped waits this long to be sent again)"
                .into(),
        );
    }
    if cfg.delivery.initial_backoff > cfg.delivery.max_backoff {
        add(
            "delivery.initial_backoff".into(),
            "is longer than delivery.max_backoff".into(),
        );
    }
    let mut ports = std::collections::HashMap::new();
    let listeners = [
        ("hub.grpc_listen".to_string(), cfg.hub.grpc_listen),
        ("hub.http_listen".to_string(), cfg.hub.http_listen),
    ]
    .into_iter()
    .chain(
        cfg.simulators
            .iter()
            .map(|(n, s)| (format!("simulators.{n}.listen"), s.listen)),
    );
    for (key, addr) in listeners {
        if addr.port() != 0
            && let Some(other) = ports.insert(addr, key.clone())
        {
            add(key, format!("{addr} is also used by {other}"));
        }
    }
    // Adapters that are declared but never routed are not errors: an engineer
    // may prepare a vendor before switching services to it.
    issues
}
