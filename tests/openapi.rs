//! The API reference (`/api/openapi.json`) names exactly the routes the fairing mounts.

mod common;

use std::collections::BTreeSet;

use common::{Auth, Backend, Harness};

#[test]
fn openapi_document_matches_the_mounted_routes() {
    let h = Harness::start(Backend::Sqlite).expect("SQLite is always there");
    let reply = h.get("/api/openapi.json", &Auth::None);
    assert_eq!(reply.status.code, 200);
    assert_eq!(reply.body["openapi"], "3.1.0");

    let mut documented = BTreeSet::new();
    for (path, item) in reply.body["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mounted: BTreeSet<(String, String)> = h
        .client
        .rocket()
        .routes()
        .filter(|r| r.uri.base().starts_with(latchkey::API_BASE))
        .map(|r| {
            let path = r.uri.path().to_string().replace("<_..>", "{path}");
            let path = path.replace('<', "{").replace('>', "}");
            (r.method.as_str().to_string(), path)
        })
        .collect();
    let missing: Vec<_> = mounted.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "undocumented routes: {missing:?}; documented but not mounted: {stale:?}"
    );
    assert!(mounted.len() >= 19, "{mounted:?}");
}
