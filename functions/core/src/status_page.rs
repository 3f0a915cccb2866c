//! The status page: one self-contained HTML file (no scripts, fonts or
//! external resources; it opens offline) with, per connector, the last days
//! as an inline SVG chart, the latest day's failures, unmapped participants,
//! what waits in quarantine and why, and links to each day's CSV and JSON.
//!
//! Every number is written into an element with a `data-count` attribute
//! naming the count, so a browser test can compare the DOM with the JSON.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::error::Result;
use crate::ports::ObjectStore;
use crate::status::{self, DayStatus};

/// Days shown per connector.
pub const DAYS_SHOWN: usize = 30;

/// One connector's part of the page.
#[derive(Debug, Clone, Default)]
pub struct ConnectorPage {
    pub connector: String,
    /// Oldest first.
    pub days: Vec<DayStatus>,
}

/// Something waiting in quarantine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Quarantined {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub error: String,
    /// The copy under `quarantine/`.
    #[serde(skip)]
    pub copy: String,
}

/// The status logs of the last [`DAYS_SHOWN`] days on record of a connector
/// (rebuilt from their records).
pub async fn connector_page(store: &dyn ObjectStore, connector: &str) -> Result<ConnectorPage> {
    let days = status::days(store, connector).await?;
    let recent = &days[days.len().saturating_sub(DAYS_SHOWN)..];
    // A day is folded again only when records came since its last fold (it
    // is marked) or it has none: re-reading every record of 30 days on every
    // schedule run was the largest cost of a busy archive (docs/cost.md).
    let marks = crate::layout::status_dirty_prefix(connector);
    let marked: std::collections::BTreeSet<String> = store
        .list(&marks)
        .await?
        .iter()
        .filter_map(|key| key.strip_prefix(&marks).map(str::to_string))
        .collect();
    let mut page = ConnectorPage {
        connector: connector.to_string(),
        days: Vec::with_capacity(recent.len()),
    };
    for day in recent {
        let folded = match marked.contains(day) {
            true => None,
            false => status::read_day(store, connector, day).await?,
        };
        let status = match folded {
            Some(status) => status,
            None => status::rebuild_day(store, connector, day).await?,
        };
        page.days.push(status);
    }
    Ok(page)
}

/// What waits in quarantine for these connectors, with the reason recorded
/// beside each copy.
pub async fn quarantined(store: &dyn ObjectStore, connectors: &[&str]) -> Result<Vec<Quarantined>> {
    let mut keys = Vec::new();
    for connector in connectors {
        for stage in ["raw", "plain"] {
            keys.extend(
                store
                    .list(&crate::layout::quarantine_prefix(stage, connector))
                    .await?,
            );
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let Some(copy) = key.strip_suffix(".reason.json") else {
            continue;
        };
        let bytes = store.get_bytes(&key).await?;
        let mut entry: Quarantined = serde_json::from_slice(&bytes).unwrap_or_default();
        entry.copy = copy.to_string();
        out.push(entry);
    }
    Ok(out)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#1b1f24}\
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccd}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccd;padding:3px 8px;text-align:left}\
td.n{text-align:right}td:first-child{white-space:nowrap}.bad{color:#b00020}.ok{color:#0a7b34}.muted{color:#667}\
.legend span{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}";

const SERIES: [(&str, &str); 4] = [
    ("available_from_source", "#5b8def"),
    ("imported", "#2fa360"),
    ("skipped_duplicates", "#c9a227"),
    ("failed", "#d64545"),
];

fn series_value(day: &DayStatus, name: &str) -> u64 {
    match name {
        "available_from_source" => day.available_from_source,
        "imported" => day.imported,
        "skipped_duplicates" => day.skipped_duplicates,
        _ => day.failed,
    }
}

/// The whole page. `reports_href` is where `reports/` is, seen from the
/// page (`reports` locally next to the store, `.` on S3 under `reports/`).
pub fn render(
    pages: &[ConnectorPage],
    quarantine: &[Quarantined],
    alerts: &[crate::alerts::Alert],
    reports_href: &str,
    generated: &str,
) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Chat archive status</title><style>{STYLE}</style></head><body>\
         <h1>Chat archive status</h1><p class=\"muted\">Generated {}</p>",
        escape(generated)
    );
    let _ = write!(
        html,
        "<h2>Alerts</h2><p><span data-count=\"alerts\">{}</span> alert(s) before data is lost.</p>",
        alerts.len()
    );
    if !alerts.is_empty() {
        html.push_str("<ul id=\"alerts\">");
        for alert in alerts {
            let _ = write!(html, "<li class=\"bad\">{}</li>", escape(&alert.message));
        }
        html.push_str("</ul>");
    }
    for page in pages {
        render_connector(&mut html, page, reports_href);
    }
    html.push_str("<h2>Quarantine</h2>");
    let _ = write!(
        html,
        "<p><span data-count=\"quarantined\">{}</span> object(s) wait in quarantine.</p>",
        quarantine.len()
    );
    if !quarantine.is_empty() {
        html.push_str(
            "<table id=\"quarantine\"><tr><th>Object</th><th>Stage</th><th>Reason</th></tr>",
        );
        for entry in quarantine {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
                escape(&entry.copy),
                escape(&entry.stage),
                escape(&entry.error)
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>\n");
    html
}

fn render_connector(html: &mut String, page: &ConnectorPage, reports_href: &str) {
    let connector = escape(&page.connector);
    let _ = write!(
        html,
        "<section id=\"connector-{connector}\"><h2>{connector}</h2>"
    );
    let Some(latest) = page.days.last() else {
        html.push_str("<p class=\"muted\">No status log yet.</p></section>");
        return;
    };
    chart(html, page);
    html.push_str(
        "<table class=\"days\"><tr><th>Day</th><th>Available</th><th>After fan-out</th>\
        <th>Imported</th><th>Partial</th><th>Imported, attachments kept in the archive</th><th>Duplicates</th><th>Failed</th><th>Pending</th>\
        <th>Events received / delivered / already / quarantined</th><th>Log</th></tr>",
    );
    for day in page.days.iter().rev() {
        let d = escape(&day.day);
        let _ = write!(html, "<tr data-day=\"{d}\"><td>{d}</td>");
        for (name, value) in [
            ("available_from_source", day.available_from_source),
            ("available_after_fanout", day.available_after_fanout),
            ("imported", day.imported),
            ("partially_imported", day.partially_imported),
            ("imported_attachments_kept", day.imported_attachments_kept),
            ("skipped_duplicates", day.skipped_duplicates),
            ("failed", day.failed),
            ("pending", day.pending),
        ] {
            let class = if name == "failed" && value > 0 {
                "n bad"
            } else {
                "n"
            };
            let _ = write!(
                html,
                "<td class=\"{class}\" data-count=\"{name}\">{value}</td>"
            );
        }
        let e = &day.events;
        let _ = write!(
            html,
            "<td class=\"n\">{} / {} / {} / {}</td>",
            e.received, e.delivered, e.already_delivered, e.quarantined
        );
        let base = format!("{reports_href}/{connector}/{d}");
        let _ = write!(
            html,
            "<td><a href=\"{base}/status.csv\">CSV</a> <a href=\"{base}/status.json\">JSON</a>{}</td></tr>",
            if day.available_from_source == 0 {
                " <span class=\"muted\">no items</span>"
            } else {
                ""
            }
        );
    }
    html.push_str("</table>");
    let _ = write!(html, "<h3>Failures on {}</h3>", escape(&latest.day));
    if latest.failures.is_empty() {
        html.push_str("<p class=\"ok\">None.</p>");
    } else {
        html.push_str("<table class=\"failures\"><tr><th>Item</th><th>ImId</th><th>Mailbox</th><th>Reason</th></tr>");
        for row in &latest.failures {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
                escape(&row.item_id),
                escape(&row.source_user),
                escape(&row.target_mailbox),
                escape(&row.reason)
            );
        }
        html.push_str("</table>");
    }
    let _ = write!(
        html,
        "<h3>Unmapped participants on {}</h3>",
        escape(&latest.day)
    );
    if latest.unmapped_participants.is_empty() {
        html.push_str("<p class=\"ok\">None.</p>");
    } else {
        html.push_str("<table class=\"unmapped\"><tr><th>ImId</th><th>Item</th><th>Why</th></tr>");
        for row in &latest.unmapped_participants {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&row.source_user),
                escape(&row.item_id),
                escape(&row.reason)
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</section>");
}

/// Grouped bars per day: available, imported, duplicates, failed.
fn chart(html: &mut String, page: &ConnectorPage) {
    let max = page
        .days
        .iter()
        .map(|d| d.available_from_source.max(d.failed).max(1))
        .max()
        .unwrap_or(1);
    let (bar, gap, height) = (6usize, 6usize, 120usize);
    let group = bar * SERIES.len() + gap;
    let width = group * page.days.len().max(1) + 40;
    let _ = write!(
        html,
        "<svg role=\"img\" aria-label=\"items per day\" width=\"{width}\" height=\"{}\" \
         viewBox=\"0 0 {width} {}\">",
        height + 30,
        height + 30
    );
    for (i, day) in page.days.iter().enumerate() {
        let x0 = 30 + i * group;
        for (j, (name, color)) in SERIES.iter().enumerate() {
            let value = series_value(day, name);
            let h = (value as usize * height) / max as usize;
            let _ = write!(
                html,
                "<rect x=\"{}\" y=\"{}\" width=\"{bar}\" height=\"{h}\" fill=\"{color}\">\
                 <title>{} {name}: {value}</title></rect>",
                x0 + j * bar,
                height - h,
                escape(&day.day)
            );
        }
        if i == 0 || i + 1 == page.days.len() {
            let _ = write!(
                html,
                "<text x=\"{x0}\" y=\"{}\" font-size=\"10\">{}</text>",
                height + 14,
                escape(&day.day[day.day.len().saturating_sub(5)..])
            );
        }
    }
    let _ = write!(
        html,
        "<text x=\"0\" y=\"10\" font-size=\"10\">{max}</text></svg>"
    );
    html.push_str("<div class=\"legend\">");
    for (name, color) in SERIES {
        let _ = write!(
            html,
            "<span style=\"background:{color}\"></span>{}",
            name.replace('_', " ")
        );
    }
    html.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let mut day = DayStatus::from_records("ice", "2026-11-20", &[], Vec::new());
        day.failures.push(crate::status::FailureRow {
            item_id: "x".into(),
            source_user: "<script>alert(1)</script>".into(),
            target_mailbox: String::new(),
            reason: "r".into(),
        });
        let page = ConnectorPage {
            connector: "ice".into(),
            days: vec![day],
        };
        let html = render(&[page], &[], &[], "reports", "now");
        assert!(
            !html.contains("<script"),
            "no scripts, and chat data is escaped"
        );
        assert!(html.contains("&lt;script&gt;"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing external"
        );
        assert!(html.contains("href=\"reports/ice/2026-11-20/status.csv\""));
        assert!(html.contains("no items"));
    }

    /// The page reads each day as last folded, and folds again only a day
    /// marked since (or never folded), so a schedule run costs a read per
    /// day shown, not one per record.
    #[tokio::test]
    async fn the_page_folds_again_only_the_days_marked_since() {
        use crate::adapters::LocalStore;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let failed =
            |n: u32| status::file_failure("ice", "2026-11-20", &format!("raw/ice/f{n}"), "bad");
        status::write_item(&store, &failed(1)).await.unwrap();
        let first = connector_page(&store, "ice").await.unwrap();
        assert_eq!(first.days[0].failed, 1, "never folded: folded now");

        status::write_item(&store, &failed(2)).await.unwrap();
        let unmarked = connector_page(&store, "ice").await.unwrap();
        assert_eq!(unmarked.days[0].failed, 1, "as last folded");

        let mark = format!("{}2026-11-20", crate::layout::status_dirty_prefix("ice"));
        store
            .put_bytes(&mark, Vec::new(), &Default::default())
            .await
            .unwrap();
        let marked = connector_page(&store, "ice").await.unwrap();
        assert_eq!(marked.days[0].failed, 2, "marked: folded again");
    }
}
