//! Who gets a copy: participants -> mailboxes of the firm.
//!
//! Precedence for each participant:
//! 1. the custom CSV (`ImId,Mailbox`), when its mailbox is valid;
//! 2. else, with automatic mapping on, the participant's own address
//!    (SenderEmail / RecipientEmail / Email), when it is a valid mailbox;
//! 3. else unmapped.
//!
//! "Valid" = a plausible address, inside the firm's domains, and a mailbox
//! the sink can open. The domain check comes first and cannot be bypassed by
//! the CSV: another firm's trader never receives a copy.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::ConnectorConfig;
use crate::error::{InputError, Place, Result};
use crate::mail::is_plausible_address;
use crate::model::Participant;
use crate::ports::MailboxSink;

pub const CSV_HEADER: [&str; 2] = ["ImId", "Mailbox"];

/// The template operators fill in (`mapping template`).
pub fn csv_template() -> String {
    "ImId,Mailbox\n\
     # One row per chat user whose archive mailbox is not the address ICE reports.\n\
     # Lines starting with # and blank lines are ignored; the first row for an ImId wins.\n\
     # ImIds match case-insensitively; mailboxes must be inside the firm's domains.\n\
     jdoe1,john.doe@acme.example\n"
        .to_string()
}

/// Rows added, removed and changed (ImId, old mailbox, new mailbox) between
/// two mapping CSVs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MappingDiff {
    pub added: Vec<(String, String)>,
    pub removed: Vec<(String, String)>,
    pub changed: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct MappingTable {
    /// Lower-cased ImId -> (mailbox, CSV row).
    rows: HashMap<String, (String, u64)>,
    /// Rows that could not be used, each naming its row number.
    pub problems: Vec<InputError>,
}

impl MappingTable {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every usable row: lower-cased ImId -> mailbox, in ImId order.
    pub fn rows(&self) -> std::collections::BTreeMap<&str, &str> {
        self.rows
            .iter()
            .map(|(im_id, (mailbox, _))| (im_id.as_str(), mailbox.as_str()))
            .collect()
    }

    /// What changes from `self` (the mapping in use) to `new`.
    pub fn diff(&self, new: &MappingTable) -> MappingDiff {
        let (old, new) = (self.rows(), new.rows());
        let mut diff = MappingDiff::default();
        for (im_id, mailbox) in &new {
            match old.get(im_id) {
                None => diff.added.push((im_id.to_string(), mailbox.to_string())),
                Some(before) if before != mailbox => {
                    diff.changed
                        .push((im_id.to_string(), before.to_string(), mailbox.to_string()))
                }
                Some(_) => {}
            }
        }
        for (im_id, mailbox) in &old {
            if !new.contains_key(im_id) {
                diff.removed.push((im_id.to_string(), mailbox.to_string()));
            }
        }
        diff
    }

    pub fn mailbox_for(&self, im_id: &str) -> Option<(&str, u64)> {
        self.rows
            .get(&im_id.trim().to_lowercase())
            .map(|(mailbox, row)| (mailbox.as_str(), *row))
    }

    /// Loads the CSV leniently: good rows are used, bad rows are reported
    /// with their row number (1-based, header included) and skipped.
    pub fn from_csv(bytes: &[u8], file: &str) -> Self {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let bytes = lone_cr_to_lf(bytes);
        let bytes = bytes.as_ref();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(bytes);
        let mut table = MappingTable::default();
        for (index, record) in reader.records().enumerate() {
            // The line an editor shows (the csv crate does not count skipped
            // blank lines), from the record's byte offset. An unreadable row
            // (bad UTF-8) has its offset in the error: counting records
            // instead would skip blank and comment lines and name a wrong row.
            let position = match &record {
                Ok(record) => record.position(),
                Err(e) => e.position(),
            };
            let row = position
                .and_then(|p| usize::try_from(p.byte()).ok())
                .map(|start| line_of(bytes, start))
                .unwrap_or(index as u64 + 1);
            let problem = |reason: String| InputError::new(file, Place::Row(row), reason);
            match record {
                Ok(record) => {
                    if let Err(reason) = table.add(&record, row) {
                        table.problems.push(problem(reason));
                    }
                }
                Err(e) => table.problems.push(problem(format!("unreadable CSV: {e}"))),
            }
        }
        table
    }

    fn add(&mut self, record: &csv::StringRecord, row: u64) -> std::result::Result<(), String> {
        if record.iter().all(str::is_empty) {
            return Ok(());
        }
        let fields: Vec<&str> = record.iter().collect();
        if fields.len() >= 2
            && fields[0].eq_ignore_ascii_case(CSV_HEADER[0])
            && fields[1].eq_ignore_ascii_case(CSV_HEADER[1])
        {
            return Ok(());
        }
        if fields.len() != 2 {
            return Err(format!(
                "expected 2 fields (ImId,Mailbox), found {}",
                fields.len()
            ));
        }
        let (im_id, mailbox) = (fields[0], fields[1]);
        if im_id.is_empty() {
            return Err("empty ImId".into());
        }
        if !is_plausible_address(mailbox) {
            return Err(format!("mailbox {mailbox:?} is not an e-mail address"));
        }
        let key = im_id.to_lowercase();
        if let Some((first, first_row)) = self.rows.get(&key) {
            return Err(format!(
                "duplicate ImId {im_id:?}: row {first_row} ({first}) wins, this row is ignored"
            ));
        }
        self.rows.insert(key, (mailbox.to_lowercase(), row));
        Ok(())
    }
}

/// Lone CRs (old Mac line ends, Excel's "CSV (Macintosh)") become LFs. The
/// csv reader ends records at a lone CR but a comment only at LF, so a
/// comment line would silently swallow every row after it; and editors count
/// lines the same way either way. One byte for one: offsets stay valid.
fn lone_cr_to_lf(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let lone = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    if !(0..bytes.len()).any(lone) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let normalized = (0..bytes.len())
        .map(|i| if lone(i) { b'\n' } else { bytes[i] })
        .collect();
    std::borrow::Cow::Owned(normalized)
}

/// The 1-based line of the record recorded at `start`. The csv reader
/// records a record's start before the blank and comment lines that precede
/// it, so those are skipped first (a record never starts with `#`: such a
/// line is a comment). Line ends are LF or CR LF (see [`lone_cr_to_lf`]).
fn line_of(bytes: &[u8], start: usize) -> u64 {
    let mut at = start.min(bytes.len());
    loop {
        match bytes.get(at) {
            Some(b'\r' | b'\n') => at += 1,
            Some(b'#') => {
                at = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |end| at + end + 1)
            }
            _ => break,
        }
    }
    1 + bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64
}

/// How one participant was mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Mapping {
    Csv { mailbox: String, row: u64 },
    Address { mailbox: String },
    Unmapped { reason: String },
}

impl Mapping {
    pub fn mailbox(&self) -> Option<&str> {
        match self {
            Mapping::Csv { mailbox, .. } | Mapping::Address { mailbox } => Some(mailbox),
            Mapping::Unmapped { .. } => None,
        }
    }
}

/// Maps participants, asking the sink about each mailbox once.
pub struct Mapper<'a> {
    pub config: &'a ConnectorConfig,
    pub table: &'a MappingTable,
    pub sink: &'a dyn MailboxSink,
    valid: HashMap<String, std::result::Result<(), String>>,
}

impl<'a> Mapper<'a> {
    pub fn new(
        config: &'a ConnectorConfig,
        table: &'a MappingTable,
        sink: &'a dyn MailboxSink,
    ) -> Self {
        Self {
            config,
            table,
            sink,
            valid: HashMap::new(),
        }
    }

    /// Why a mailbox cannot receive mail, or `Ok` when it can.
    async fn check_mailbox(&mut self, mailbox: &str) -> Result<std::result::Result<(), String>> {
        let mailbox = mailbox.trim().to_lowercase();
        if let Some(answer) = self.valid.get(&mailbox) {
            return Ok(answer.clone());
        }
        let answer = if !is_plausible_address(&mailbox) {
            Err(format!("{mailbox:?} is not an e-mail address"))
        } else if !self.config.in_firm_domains(&mailbox) {
            Err(format!("{mailbox} is outside the firm's domains"))
        } else if !self.sink.is_valid_mailbox(&mailbox).await? {
            Err(format!("{mailbox} is not a mailbox of the mail system"))
        } else {
            Ok(())
        };
        self.valid.insert(mailbox, answer.clone());
        Ok(answer)
    }

    pub async fn map(&mut self, participant: &Participant) -> Result<Mapping> {
        let mut reasons = Vec::new();
        if let Some((mailbox, row)) = self.table.mailbox_for(&participant.im_id) {
            match self.check_mailbox(mailbox).await? {
                Ok(()) => {
                    return Ok(Mapping::Csv {
                        mailbox: mailbox.to_string(),
                        row,
                    })
                }
                Err(reason) => reasons.push(format!("CSV row {row}: {reason}")),
            }
        }
        if !self.config.auto_mapping {
            reasons.push("automatic mapping is off".into());
        } else {
            match participant
                .email
                .as_deref()
                .map(str::trim)
                .filter(|e| !e.is_empty())
            {
                Some(email) => match self.check_mailbox(email).await? {
                    Ok(()) => {
                        return Ok(Mapping::Address {
                            mailbox: email.to_lowercase(),
                        })
                    }
                    Err(reason) => reasons.push(format!("address: {reason}")),
                },
                None => reasons.push("no address in the source".into()),
            }
        }
        if self.table.mailbox_for(&participant.im_id).is_none() {
            reasons.insert(0, "no CSV row".into());
        }
        Ok(Mapping::Unmapped {
            reason: reasons.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_checked_and_numbered() {
        let csv = "\u{feff}ImId,Mailbox\n\njdoe1,John.Doe@acme.example\n\"ann, a\",ann@acme.example\nbad-row\nJDOE1,other@acme.example\nx,not-an-address\n";
        let table = MappingTable::from_csv(csv.as_bytes(), "mapping.csv");
        assert_eq!(
            table.mailbox_for("jdoe1"),
            Some(("john.doe@acme.example", 3))
        );
        assert_eq!(table.mailbox_for("ann, a"), Some(("ann@acme.example", 4)));
        assert_eq!(table.len(), 2);
        let rows: Vec<_> = table.problems.iter().map(|p| p.place.clone()).collect();
        assert_eq!(rows, vec![Place::Row(5), Place::Row(6), Place::Row(7)]);
        assert!(
            table.problems[1].reason.contains("row 3"),
            "{}",
            table.problems[1]
        );
    }

    /// Found by `cargo fuzz run mapping_csv` (tests/fuzz): `x`, a lone CR,
    /// then a byte that is not UTF-8. The unreadable row was numbered by
    /// record count and lone CRs were not counted as line breaks; looking
    /// into it showed that in a CR-only file a comment swallowed the rows
    /// after it, and that rows after comment lines got the comment's number.
    #[test]
    fn fuzz_lone_cr_and_bad_utf8_rows_are_numbered_as_lines() {
        let found =
            include_bytes!("../../../tests/fuzz/regressions/mapping_csv/lone-cr-bad-utf8.csv");
        let table = MappingTable::from_csv(found, "mapping.csv");
        let rows: Vec<_> = table.problems.iter().map(|p| p.place.clone()).collect();
        assert_eq!(rows, vec![Place::Row(1), Place::Row(2)]);
        assert!(table.problems[1].reason.contains("unreadable"));

        let old_mac =
            b"ImId,Mailbox\rjdoe1,jdoe@acme.example\r\r# note\rbad-row\r\n\xff\n\xff,x@acme.example\r";
        let table = MappingTable::from_csv(old_mac, "mapping.csv");
        assert_eq!(table.mailbox_for("jdoe1"), Some(("jdoe@acme.example", 2)));
        let rows: Vec<_> = table.problems.iter().map(|p| p.place.clone()).collect();
        assert_eq!(rows, vec![Place::Row(5), Place::Row(6), Place::Row(7)]);

        let template = MappingTable::from_csv(csv_template().as_bytes(), "template");
        assert_eq!(
            template.mailbox_for("jdoe1"),
            Some(("john.doe@acme.example", 5))
        );
    }

    #[test]
    fn the_template_loads_cleanly() {
        let table = MappingTable::from_csv(csv_template().as_bytes(), "template");
        assert!(table.problems.is_empty(), "{:?}", table.problems);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_new_csv_is_compared_row_by_row_with_the_one_in_use() {
        let old = MappingTable::from_csv(
            b"ImId,Mailbox\njdoe1,jdoe@acme.example\nasmith2,asmith@acme.example\n",
            "old.csv",
        );
        let new = MappingTable::from_csv(
            b"ImId,Mailbox\nJDOE1,john.doe@acme.example\nbwayne3,bwayne@acme.example\n",
            "new.csv",
        );
        let diff = old.diff(&new);
        assert_eq!(
            diff.added,
            [("bwayne3".to_string(), "bwayne@acme.example".to_string())]
        );
        assert_eq!(
            diff.removed,
            [("asmith2".to_string(), "asmith@acme.example".to_string())]
        );
        assert_eq!(
            diff.changed,
            [(
                "jdoe1".to_string(),
                "jdoe@acme.example".to_string(),
                "john.doe@acme.example".to_string()
            )]
        );
        assert_eq!(new.diff(&new), MappingDiff::default());
    }
}
