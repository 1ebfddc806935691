//! The SOAP reply mapping path (hardened streaming parse + paths + value
//! tables + base64 documents) for 1 KB, 10 KB and 100 KB envelopes.
//!
//! `cargo bench -p raccordo-adapters --bench soap_mapping`
//! Plain `std::time` timing: each size runs for about two seconds after a
//! warm-up; the mean per reply and the throughput are printed.

use base64::Engine;
use raccordo_adapters::soap::config::{FaultMapping, ResponseMapping};
use raccordo_adapters::soap::response::Mapper;
use raccordo_adapters::soap::xml::Limits;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A certificate reply of about `target` bytes: household rows, and a
/// base64 document filling most of the larger sizes.
fn envelope(target: usize) -> String {
    let head = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Header/><soapenv:Body><ns2:rispostaCertificato xmlns:ns2="urn:anagrafe:certificati:v1"><ns2:esito>EMESSO</ns2:esito><ns2:idPratica>ANA-2026-000417</ns2:idPratica><ns2:protocollo><ns2:numero>2026/0012345</ns2:numero><ns2:data>2026-11-23</ns2:data></ns2:protocollo>"#;
    let tail = "</ns2:rispostaCertificato></soapenv:Body></soapenv:Envelope>";
    let row = r#"<ns2:componente><ns2:codiceFiscale>MZZNCL80A01D704X</ns2:codiceFiscale><ns2:cognome>Mazzà</ns2:cognome><ns2:nome>Niccolò</ns2:nome><ns2:relazione>FIGLIO</ns2:relazione></ns2:componente>"#;
    let mut out = String::from(head);
    let budget = target.saturating_sub(head.len() + tail.len());
    let (rows, doc) = if budget > 20_000 {
        (20, budget - 20 * row.len() - 200)
    } else {
        (budget / row.len(), 0)
    };
    for _ in 0..rows {
        out.push_str(row);
    }
    if doc > 0 {
        let raw = vec![0x25u8; doc * 3 / 4];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        out.push_str(r#"<ns2:certificato nomeFile="certificato.pdf" tipoMime="application/pdf">"#);
        out.push_str(&b64);
        out.push_str("</ns2:certificato>");
    }
    out.push_str(tail);
    out
}

fn main() {
    let ns: BTreeMap<String, String> =
        [("c".to_string(), "urn:anagrafe:certificati:v1".to_string())].into();
    let mapping: ResponseMapping = serde_json::from_value(serde_json::json!({
        "status_path": "c:rispostaCertificato/c:esito",
        "status_map": {"EMESSO": "APPROVED", "RESPINTO": "REJECTED"},
        "protocol_path": "c:rispostaCertificato/c:protocollo/c:numero",
        "date_path": "c:rispostaCertificato/c:protocollo/c:data",
        "reference_path": "c:rispostaCertificato/c:idPratica",
        "documents": [{"path": "c:rispostaCertificato/c:certificato", "name_attribute": "nomeFile"}]
    }))
    .unwrap();
    let mapper = Mapper::build(&mapping, &FaultMapping::default(), &ns).unwrap();
    let limits = Limits::default();
    println!("soap_mapping: read + map one reply (hardened parse, paths, tables, base64)");
    for target in [1_000usize, 10_000, 100_000] {
        let doc = envelope(target).into_bytes();
        let run = |n: u32| {
            for _ in 0..n {
                let reply = mapper
                    .read(black_box(&doc), Some("text/xml; charset=utf-8"), &limits)
                    .unwrap();
                black_box(mapper.map(&reply, "anagrafe", true).unwrap());
            }
        };
        run(200);
        let mut n = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            run(50);
            n += 50;
        }
        let per = start.elapsed() / n as u32;
        let mbps = doc.len() as f64 / per.as_secs_f64() / 1e6;
        println!(
            "  {:>7} bytes  {:>9.1} µs/reply  {:>8.0} replies/s  {:>7.1} MB/s",
            doc.len(),
            per.as_secs_f64() * 1e6,
            1.0 / per.as_secs_f64(),
            mbps
        );
    }
}
