//! What each function did, as CloudWatch embedded-metric-format (EMF) log
//! lines: CloudWatch Logs turns every such line into metrics by itself (no
//! API call, no extra permission), and the template's alarms watch them.
//! One line per invocation, with the connector as the dimension the alarms
//! use and the function as a second, finer one.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::alerts::AlertKind;
use crate::error::Result;
use crate::function::{Function, Response};

/// The CloudWatch namespace of every metric (the template's alarms name it).
pub const NAMESPACE: &str = "ChatArchive";

/// Objects a stage wrote (plain exports, mails, sidecars).
pub const OBJECTS_WRITTEN: &str = "ObjectsWritten";
/// Whole files or single conversations put in quarantine.
pub const QUARANTINED: &str = "Quarantined";
/// Mails imported (or found already present) by the import stage.
pub const MAILS_IMPORTED: &str = "MailsImported";
/// Mails that reached no mailbox (status `failed`).
pub const IMPORT_FAILURES: &str = "ImportFailures";
/// Invocations that ended in an error (Lambda retries them).
pub const INVOCATION_ERRORS: &str = "InvocationErrors";

/// Every metric a function can emit, alerts included.
pub fn names() -> Vec<&'static str> {
    let mut names = vec![
        OBJECTS_WRITTEN,
        QUARANTINED,
        MAILS_IMPORTED,
        IMPORT_FAILURES,
        INVOCATION_ERRORS,
    ];
    names.extend(ALERT_KINDS.iter().map(|kind| alert_metric(*kind)));
    names
}

const ALERT_KINDS: [AlertKind; 4] = [
    AlertKind::NoFileForDay,
    AlertKind::UnfetchedOnSource,
    AlertKind::KeyExpiring,
    AlertKind::QuarantineWaiting,
];

/// The metric counting one kind of alert.
pub fn alert_metric(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::NoFileForDay => "AlertNoFileForDay",
        AlertKind::UnfetchedOnSource => "AlertUnfetchedOnSource",
        AlertKind::KeyExpiring => "AlertKeyExpiring",
        AlertKind::QuarantineWaiting => "AlertQuarantineWaiting",
    }
}

/// The counts of one invocation. An alert kind the invocation looked at is
/// reported even at zero, so an alarm sees it clear.
pub fn counts(function: Function, result: &Result<Response>) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let Ok(response) = result else {
        counts.insert(INVOCATION_ERRORS, 1);
        return counts;
    };
    counts.insert(INVOCATION_ERRORS, 0);
    counts.insert(OBJECTS_WRITTEN, response.written.len() as u64);
    counts.insert(QUARANTINED, response.quarantined.len() as u64);
    if function == Function::Import {
        counts.insert(MAILS_IMPORTED, response.imported.len() as u64);
        counts.insert(IMPORT_FAILURES, response.failed as u64);
    }
    for kind in &response.alerts_checked {
        counts.insert(alert_metric(*kind), 0);
    }
    for alert in &response.alerts {
        *counts.entry(alert_metric(alert.kind)).or_insert(0) += 1;
    }
    counts
}

/// One EMF log line (a JSON object) for the counts.
pub fn emf_line(
    function: Function,
    connector: &str,
    counts: &BTreeMap<&'static str, u64>,
    timestamp_ms: i64,
) -> Value {
    let metrics: Vec<Value> = counts
        .keys()
        .map(|name| json!({ "Name": name, "Unit": "Count" }))
        .collect();
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Connector"], ["Connector", "Function"]],
                "Metrics": metrics,
            }],
        },
        "Connector": connector,
        "Function": function.name(),
    });
    for (name, value) in counts {
        line[*name] = json!(value);
    }
    line
}

/// Prints the invocation's EMF line on stdout, where Lambda's log capture
/// hands it to CloudWatch.
pub fn emit(function: Function, connector: &str, result: &Result<Response>) {
    let line = emf_line(
        function,
        connector,
        &counts(function, result),
        chrono::Utc::now().timestamp_millis(),
    );
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Alert;
    use crate::error::Error;

    #[test]
    fn a_line_declares_every_value_it_carries_under_the_namespace() {
        let response = Response {
            written: vec!["mail/a".into(), "mail/b".into()],
            quarantined: vec!["quarantine/x".into()],
            ..Default::default()
        };
        let line = emf_line(
            Function::Convert,
            "ice",
            &counts(Function::Convert, &Ok(response)),
            1_700_000_000_000,
        );
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        assert_eq!(line["Connector"], "ice");
        assert_eq!(line["Function"], "convert");
        for set in directive["Dimensions"].as_array().unwrap() {
            for dimension in set.as_array().unwrap() {
                assert!(line[dimension.as_str().unwrap()].is_string());
            }
        }
        let declared: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(declared.len(), 3, "{declared:?}");
        for name in declared {
            assert!(line[name].is_u64(), "{name} has a value");
        }
        assert_eq!(line[OBJECTS_WRITTEN], 2);
        assert_eq!(line[QUARANTINED], 1);
    }

    #[test]
    fn alerts_count_per_kind_and_checked_kinds_clear_at_zero() {
        let response = Response {
            alerts: vec![
                Alert {
                    kind: AlertKind::NoFileForDay,
                    message: "a".into(),
                },
                Alert {
                    kind: AlertKind::NoFileForDay,
                    message: "b".into(),
                },
            ],
            alerts_checked: vec![AlertKind::NoFileForDay, AlertKind::KeyExpiring],
            failed: 3,
            imported: vec!["x Failed".into()],
            ..Default::default()
        };
        let counts = counts(Function::Import, &Ok(response));
        assert_eq!(counts["AlertNoFileForDay"], 2);
        assert_eq!(counts["AlertKeyExpiring"], 0);
        assert!(!counts.contains_key("AlertUnfetchedOnSource"));
        assert_eq!(counts[IMPORT_FAILURES], 3);
        let failed = super::counts(Function::Fetch, &Err(Error::Config("x".into())));
        assert_eq!(failed[INVOCATION_ERRORS], 1);
        for name in counts.keys().chain(failed.keys()) {
            assert!(names().contains(name), "{name} is listed");
        }
    }
}
