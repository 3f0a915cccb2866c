//! Every sample event in `events/` parses as its function expects, and the
//! S3 ones route to the stage their name says.

use chat_archive_core::events::{object_keys, FetchRequest};
use chat_archive_core::stages::Stage;

fn read(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn s3_events_route_to_their_stage() {
    for (name, stage) in [
        ("s3-put-raw.json", Stage::Decrypt),
        ("s3-put-plain.json", Stage::Convert),
        ("s3-put-mail.json", Stage::Import),
    ] {
        let event = serde_json::from_slice(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let keys = object_keys(&event).unwrap();
        assert_eq!(keys.len(), 1, "{name}");
        assert_eq!(Stage::for_key(&keys[0]), Some(stage), "{name}");
    }
}

#[test]
fn fetch_events_parse_as_requests() {
    let backfill: FetchRequest = serde_json::from_slice(&read("backfill.json")).unwrap();
    assert!(backfill.since.is_some() && backfill.until.is_some());
    let refetch: FetchRequest = serde_json::from_slice(&read("refetch-files.json")).unwrap();
    assert_eq!(refetch.files, vec!["ACME_2026-11-20.xml.pgp"]);
    // A schedule event carries no request fields: it means "everything new".
    let schedule: FetchRequest = serde_json::from_slice(&read("schedule.json")).unwrap();
    assert_eq!(schedule, FetchRequest::default());
}

#[test]
fn the_rsmf_export_event_names_a_day() {
    let event: serde_json::Value = serde_json::from_slice(&read("export-rsmf.json")).unwrap();
    assert_eq!(event["export_rsmf"]["day"], "2026-11-20");
    let request: chat_archive_core::aws::RsmfExportRequest =
        serde_json::from_value(event["export_rsmf"].clone()).expect("an export request");
    assert!(request.day.is_some());
}
