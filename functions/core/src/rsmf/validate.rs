//! Checks an RSMF file as Relativity's validator does: the manifest against
//! the 2.0.0 schema's rules (required fields, enumerations, non-empty ids,
//! timestamps with an explicit offset), and what the schema cannot say:
//! every participant and conversation an event names exists, every
//! attachment is a file in the zip and every file in the zip is named, and
//! the headers agree with the manifest (event count, begin and end dates,
//! participants).

use std::collections::{BTreeSet, HashSet};
use std::io::Read;

use mail_parser::{MessageParser, MimeHeaders};

use super::{Manifest, MANIFEST_NAME, VERSION, ZIP_NAME};

const EVENT_TYPES: [&str; 6] = [
    "message",
    "disclaimer",
    "join",
    "leave",
    "history",
    "unknown",
];

/// Every problem found, each a sentence naming the place; empty when valid.
pub fn validate(raw: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let first_header = raw
        .split(|&b| b == b'\n')
        .next()
        .map(|line| String::from_utf8_lossy(line).trim_end().to_string())
        .unwrap_or_default();
    if first_header != format!("X-RSMF-Version: {VERSION}") {
        problems.push(format!(
            "the first header is {first_header:?}, not \"X-RSMF-Version: {VERSION}\""
        ));
    }
    let Some(message) = MessageParser::default().parse(raw) else {
        problems.push("not an RFC 5322 message".into());
        return problems;
    };
    let header = |name: &str| message.header_raw(name).map(|v| v.trim().to_string());
    let zips: Vec<_> = message
        .attachments()
        .filter(|a| a.attachment_name() == Some(ZIP_NAME))
        .collect();
    if message.attachment_count() != 1 || zips.len() != 1 {
        problems.push(format!(
            "an RSMF has exactly one attachment, {ZIP_NAME}; this one has {} ({} named {ZIP_NAME})",
            message.attachment_count(),
            zips.len()
        ));
    }
    let Some(zip_part) = zips.first() else {
        return problems;
    };
    let mut archive = match zip::ZipArchive::new(std::io::Cursor::new(zip_part.contents())) {
        Ok(archive) => archive,
        Err(e) => {
            problems.push(format!("{ZIP_NAME}: not a ZIP file: {e}"));
            return problems;
        }
    };
    let names: BTreeSet<String> = archive.file_names().map(str::to_string).collect();
    let manifest: Manifest = match archive.by_name(MANIFEST_NAME) {
        Err(_) => {
            problems.push(format!("{ZIP_NAME} holds no {MANIFEST_NAME}"));
            return problems;
        }
        Ok(mut file) => {
            let mut text = String::new();
            if let Err(e) = file.read_to_string(&mut text) {
                problems.push(format!("{MANIFEST_NAME}: unreadable: {e}"));
                return problems;
            }
            match serde_json::from_str::<serde_json::Value>(&text) {
                Err(e) => {
                    problems.push(format!("{MANIFEST_NAME}: not JSON: {e}"));
                    return problems;
                }
                Ok(value) => {
                    problems.extend(schema_problems(&value));
                    match serde_json::from_value(value) {
                        Ok(manifest) => manifest,
                        Err(e) => {
                            problems.push(format!("{MANIFEST_NAME}: {e}"));
                            return problems;
                        }
                    }
                }
            }
        }
    };
    problems.extend(cross_check(&manifest, &names));
    // The headers agree with the manifest.
    if let Some(count) = header("X-RSMF-EventCount") {
        if count != manifest.events.len().to_string() {
            problems.push(format!(
                "X-RSMF-EventCount says {count}, the manifest has {} events",
                manifest.events.len()
            ));
        }
    }
    let times: Vec<&str> = manifest
        .events
        .iter()
        .filter_map(|e| e.timestamp.as_deref())
        .collect();
    for (name, expected) in [
        ("X-RSMF-BeginDate", times.iter().min()),
        ("X-RSMF-EndDate", times.iter().max()),
    ] {
        if let (Some(value), Some(expected)) = (header(name), expected) {
            if value != **expected {
                problems.push(format!(
                    "{name} is {value}, the manifest's events say {expected}"
                ));
            }
        }
    }
    if let Some(count) = header("X-RSMF-AttachmentCount") {
        let files = names.iter().filter(|n| *n != MANIFEST_NAME).count();
        if count != files.to_string() {
            problems.push(format!(
                "X-RSMF-AttachmentCount says {count}, {ZIP_NAME} holds {files} file(s)"
            ));
        }
    }
    problems
}

/// The schema's rules, on the JSON as written (so a missing field is seen
/// as missing, not defaulted).
fn schema_problems(value: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let text =
        |v: &serde_json::Value, path: &str, problems: &mut Vec<String>, required: bool| match v {
            serde_json::Value::Null if !required => {}
            serde_json::Value::String(s) if !s.is_empty() => {}
            serde_json::Value::String(_) => problems.push(format!("{path}: empty")),
            serde_json::Value::Null => problems.push(format!("{path}: required")),
            other => problems.push(format!("{path}: {other} is not a string")),
        };
    let customs = |v: &serde_json::Value, path: &str, problems: &mut Vec<String>| {
        for (i, c) in v.as_array().into_iter().flatten().enumerate() {
            text(
                &c["name"],
                &format!("{path}.custom[{i}].name"),
                problems,
                true,
            );
            text(
                &c["value"],
                &format!("{path}.custom[{i}].value"),
                problems,
                true,
            );
        }
    };
    match value["version"].as_str() {
        Some(v) if v.len() >= 5 => {}
        _ => problems.push("version: required, at least 5 characters (\"2.0.0\")".into()),
    }
    for list in ["participants", "conversations", "events"] {
        if !value[list].is_array() {
            problems.push(format!("{list}: required array"));
        }
    }
    for (i, p) in value["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("participants[{i}]");
        text(&p["id"], &format!("{path}.id"), &mut problems, true);
        customs(&p["custom"], &path, &mut problems);
    }
    for (i, c) in value["conversations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("conversations[{i}]");
        text(&c["id"], &format!("{path}.id"), &mut problems, true);
        text(
            &c["platform"],
            &format!("{path}.platform"),
            &mut problems,
            true,
        );
        if !c["participants"].is_array() {
            problems.push(format!("{path}.participants: required array"));
        }
        if let Some(kind) = c.get("type").and_then(|t| t.as_str()) {
            if !["direct", "channel"].contains(&kind) {
                problems.push(format!("{path}.type: {kind:?} is not direct or channel"));
            }
        }
        customs(&c["custom"], &path, &mut problems);
    }
    for (i, e) in value["events"].as_array().into_iter().flatten().enumerate() {
        let path = format!("events[{i}]");
        match e["type"].as_str() {
            Some(kind) if EVENT_TYPES.contains(&kind) => {}
            other => problems.push(format!(
                "{path}.type: {other:?} is not one of {}",
                EVENT_TYPES.join(", ")
            )),
        }
        if let Some(time) = e.get("timestamp").and_then(|t| t.as_str()) {
            if chrono::DateTime::parse_from_rfc3339(time).is_err() {
                problems.push(format!(
                    "{path}.timestamp: {time:?} is not an ISO 8601 time with an offset"
                ));
            }
        }
        for (j, a) in e["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            text(
                &a["id"],
                &format!("{path}.attachments[{j}].id"),
                &mut problems,
                true,
            );
        }
        customs(&e["custom"], &path, &mut problems);
    }
    problems
}

/// What the schema cannot say: references resolve, files and attachments
/// match one to one.
fn cross_check(manifest: &Manifest, names: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let participants: HashSet<&str> = manifest
        .participants
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    let conversations: HashSet<&str> = manifest
        .conversations
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    if participants.len() != manifest.participants.len() {
        problems.push("participants: an id is used twice".into());
    }
    for c in &manifest.conversations {
        for p in &c.participants {
            if !participants.contains(p.as_str()) {
                problems.push(format!(
                    "conversation {:?}: participant {p:?} is not defined",
                    c.id
                ));
            }
        }
        if let Some(custodian) = &c.custodian {
            if !c.participants.contains(custodian) {
                problems.push(format!(
                    "conversation {:?}: custodian {custodian:?} is not one of its participants",
                    c.id
                ));
            }
        }
    }
    let mut referenced = BTreeSet::new();
    let mut ids = HashSet::new();
    for (i, e) in manifest.events.iter().enumerate() {
        if let Some(p) = &e.participant {
            if !participants.contains(p.as_str()) {
                problems.push(format!("events[{i}]: participant {p:?} is not defined"));
            }
        }
        if let Some(c) = &e.conversation {
            if !conversations.contains(c.as_str()) {
                problems.push(format!("events[{i}]: conversation {c:?} is not defined"));
            }
        }
        if let Some(id) = &e.id {
            if !ids.insert((e.conversation.clone(), id.clone())) {
                problems.push(format!(
                    "events[{i}]: id {id:?} is used twice in its conversation"
                ));
            }
        }
        for a in &e.attachments {
            if !names.contains(&a.id) {
                problems.push(format!(
                    "events[{i}]: attachment {:?} is not a file in {ZIP_NAME}",
                    a.id
                ));
            }
            referenced.insert(a.id.clone());
        }
    }
    for name in names {
        if name != MANIFEST_NAME && !referenced.contains(name) {
            problems.push(format!("{ZIP_NAME}: {name:?} is named by no event"));
        }
    }
    problems
}

#[cfg(test)]
pub(super) fn cross_check_for_tests(manifest: &Manifest, names: &BTreeSet<String>) -> Vec<String> {
    cross_check(manifest, names)
}
