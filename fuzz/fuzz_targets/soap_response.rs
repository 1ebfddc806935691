//! The SOAP reply and fault reader on arbitrary bytes: MTOM splitting,
//! character-set decoding, the hardened streaming parse, fault reading and
//! mapping must never panic, whatever the vendor sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raccordo_adapters::soap::config::{FaultMapping, ResponseMapping};
use raccordo_adapters::soap::response::Mapper;
use raccordo_adapters::soap::xml::Limits;
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn mapper() -> &'static Mapper {
    static M: OnceLock<Mapper> = OnceLock::new();
    M.get_or_init(|| {
        let ns: BTreeMap<String, String> =
            [("c".to_string(), "urn:c".to_string())].into();
        let mut mapping = ResponseMapping::default();
        mapping.status_path = Some("c:r/c:esito".into());
        mapping.reason_path = Some("*:r/@motivo".into());
        let faults = FaultMapping {
            code_path: Some("*:Fault/*:detail/*:codice".into()),
            map: BTreeMap::new(),
        };
        Mapper::build(&mapping, &faults, &ns).expect("valid mapping")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the reply is announced.
    let (ct, body) = match data.split_first() {
        Some((b, rest)) => (
            match b % 4 {
                0 => "text/xml",
                1 => "text/xml; charset=ISO-8859-1",
                2 => "multipart/related; boundary=b; start=\"<r>\"",
                _ => "application/soap+xml; charset=windows-1252",
            },
            rest,
        ),
        None => ("text/xml", data),
    };
    let limits = Limits {
        max_bytes: 1 << 20,
        max_depth: 32,
        max_attributes: 16,
        max_text_bytes: 1 << 16,
    };
    let m = mapper();
    if let Ok(reply) = m.read(body, Some(ct), &limits) {
        match &reply.parsed.fault {
            Some(f) => {
                let _ = m.fault_error(&reply, f);
            }
            None => {
                let _ = m.map(&reply, "fuzz", true);
            }
        }
    }
});
