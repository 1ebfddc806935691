//! Which roles may call which RPC. Every method the hub serves must be in
//! this table (a test enumerates the compiled descriptors): a new RPC
//! without a rule fails the build's tests rather than being left open.

use super::config::Role;
use Role::*;

/// Methods anyone may call without credentials: probes and reflection.
pub const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// `(method path, roles allowed)`. Tenant scope and citizen confinement are
/// checked in the handlers, where the request's tenant and applicant are known.
pub const RULES: &[(&str, &[Role])] = &[
    (
        "/raccordo.v1.PracticeService/SubmitPractice",
        &[Frontoffice, Operator, Citizen],
    ),
    (
        "/raccordo.v1.PracticeService/GetPractice",
        &[Frontoffice, Operator, Citizen],
    ),
    (
        "/raccordo.v1.PracticeService/ListPractices",
        &[Frontoffice, Operator, Citizen],
    ),
    (
        "/raccordo.v1.PracticeService/WatchPractice",
        &[Frontoffice, Operator, Citizen],
    ),
    (
        "/raccordo.v1.PracticeService/WatchPractices",
        &[Frontoffice, Operator, Citizen],
    ),
    (
        "/raccordo.v1.PracticeService/WithdrawPractice",
        &[Frontoffice, Operator, Citizen],
    ),
    (
        "/raccordo.v1.CatalogService/ListServices",
        &[Frontoffice, Operator, Citizen, Admin],
    ),
    (
        "/raccordo.v1.CatalogService/GetService",
        &[Frontoffice, Operator, Citizen, Admin],
    ),
    (
        "/raccordo.v1.DeliveryAdminService/ListDeadLetters",
        &[Admin],
    ),
    (
        "/raccordo.v1.DeliveryAdminService/ReplayDeadLetter",
        &[Admin],
    ),
    ("/raccordo.v1.DeliveryAdminService/GetHubStatus", &[Admin]),
];

/// Whether `path` needs no credentials.
pub fn is_public(path: &str) -> bool {
    PUBLIC_SERVICES.iter().any(|p| path.starts_with(p))
}

/// The roles allowed to call `path`; `None` for a method with no rule
/// (refused to everyone).
pub fn allowed_roles(path: &str) -> Option<&'static [Role]> {
    RULES.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_served_method_has_a_rule() {
        let set = prost_types::FileDescriptorSet::decode(raccordo_proto::v1::FILE_DESCRIPTOR_SET)
            .expect("descriptor");
        let mut methods = Vec::new();
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                for method in service.method {
                    methods.push(format!(
                        "/{package}.{}/{}",
                        service.name.as_deref().unwrap_or_default(),
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
        assert!(methods.len() >= 11, "{methods:?}");
        for m in &methods {
            assert!(
                allowed_roles(m).is_some() || is_public(m),
                "{m} has no authorization rule in security/rules.rs"
            );
        }
        for (path, _) in RULES {
            assert!(methods.iter().any(|m| m == path), "stale rule {path}");
        }
    }
}
