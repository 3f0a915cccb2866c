//! Hostile and malformed inputs, end to end through the local pipeline
//! (fixtures made by GnuPG, dropped as ICE would, `Pipeline::run`).
//!
//! For bad input each test shows: a clear error naming the file, the place
//! and the reason; a copy under `quarantine/` with its `*.reason.json`; and
//! nothing lost from the rest of the run (the other files and conversations
//! are imported, the status log counts add up). Inputs that are hostile in
//! shape but legitimate (a huge message, a huge room, header-like text) must
//! instead be imported whole and safely.

use std::collections::BTreeSet;

use base64::Engine as _;
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::error::{InputError, Place};
use chat_archive_core::events::FetchRequest;
use chat_archive_core::pipeline::{RunSummary, Silent};
use chat_archive_core::ports::ObjectStore;
use integration_tests::fixtures::{header, parse, SAMPLE};
use integration_tests::hostile::{
    assert_clean_lines, assert_failed_file_day, assert_quarantined, check_header_framing,
    day_status, files_containing, files_under, header_section, occurs_near, sha256_hex,
    write_huge_message_export,
};
use integration_tests::local::{Firm, FIRM_UID, SIGNER_UID};
use mail_parser::{Address, MimeHeaders};

const SAMPLE_FILE: &str = "ACME_2026-11-20.xml.pgp";
const SAMPLE_DAY: &str = "2026-11-20";
const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
/// A counterparty whose mailbox exists on the mail system but lies outside
/// the firm's domains: it must never receive a copy.
const ZOE: &str = "zoe.mueller@globex.example";

async fn run(firm: &Firm) -> RunSummary {
    firm.pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .expect("the run itself must not fail on bad input")
}

/// The conversation a mail is about, read from its header section only
/// (some mails here are hundreds of MB).
fn conversation_of(raw: &[u8]) -> Vec<String> {
    header(&parse(header_section(raw)), "X-Chat-Conversation-Id")
}

fn conversation_ids(messages: &[Vec<u8>]) -> BTreeSet<String> {
    messages
        .iter()
        .flat_map(|raw| conversation_of(raw))
        .collect()
}

fn find_by_conversation<'a>(messages: &'a [Vec<u8>], conversation: &str) -> &'a [u8] {
    messages
        .iter()
        .find(|raw| conversation_of(raw) == [conversation])
        .unwrap_or_else(|| panic!("no mail for conversation {conversation:?}"))
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The rest of the batch: the sample export, signed, went through whole.
fn assert_sample_imported(firm: &Firm) {
    for (mailbox, expected) in [
        (JDOE, set(["c-1001", "c-1002", "c-1003"])),
        (ASMITH, set(["c-1001", "c-1003"])),
    ] {
        let ids = conversation_ids(&firm.folder(mailbox, "ICE Chat"));
        let sample: BTreeSet<String> = ids
            .into_iter()
            .filter(|id| id.starts_with("c-100"))
            .collect();
        assert_eq!(sample, expected, "{mailbox}");
    }
    let status = day_status(firm, SAMPLE_DAY);
    assert!(status.counts_add_up(), "{status:?}");
    assert_eq!(
        (status.available_from_source, status.imported, status.failed),
        (3, 3, 0)
    );
}

fn line_column(error: &InputError) -> (u64, u64) {
    match error.place {
        Place::LineColumn { line, column } => (line, column),
        ref other => panic!("expected a line and column, got {other:?}"),
    }
}

/// 1-based line and column (in characters) of a byte offset, as an editor
/// shows them.
fn place_of(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count() as u64;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count() as u64;
    (line, column)
}

fn offset_of(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// Nothing of a conversation reached the mail stage or any mailbox.
fn assert_no_mail_contains(firm: &Firm, needle: &str) {
    let store = firm.layout.store();
    assert_eq!(
        files_containing(&store.join("mail"), needle.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "{needle} reached mail/"
    );
    assert_eq!(
        files_containing(&firm.layout.mailboxes(), needle.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "{needle} reached a mailbox"
    );
}

#[tokio::test]
async fn entity_expansion_is_refused_and_the_rest_goes_on() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export(SAMPLE_FILE, SAMPLE.as_bytes(), true);
    // Billion laughs: ten levels of ten-fold expansion, 10^9 "lol"s (3 GB)
    // from a file of a few hundred bytes.
    let mut entities = String::from("  <!ENTITY lol0 \"lol\">\n");
    for level in 1..=9 {
        let refs = format!("&lol{};", level - 1).repeat(10);
        entities.push_str(&format!("  <!ENTITY lol{level} \"{refs}\">\n"));
    }
    let bomb = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE IceChatExport [\n{entities}]>\n\
         <IceChatExport FirmCode=\"ACME\" ExportDate=\"2026-11-21\" Version=\"1\">\n  \
         <Conversation Id=\"c-lol\" Type=\"OneToOne\" StartTime=\"2026-11-21T08:00:00Z\">\n    \
         <Participants><Participant ImId=\"jdoe1\" Name=\"LOL-MARKER\" Email=\"jdoe@acme.example\"/></Participants>\n    \
         <Message Id=\"m-lol\" ImId=\"jdoe1\" Timestamp=\"2026-11-21T08:00:01Z\">&lol9;</Message>\n  \
         </Conversation>\n</IceChatExport>\n"
    );
    firm.drop_export("ACME_2026-11-21_lol.xml.pgp", bomb.as_bytes(), true);

    let summary = run(&firm).await;

    assert_eq!(summary.quarantined.len(), 1, "{:#?}", summary.quarantined);
    let key = "plain/ice/ACME_2026-11-21_lol.xml";
    let error = assert_quarantined(&firm, &summary, key, "DOCTYPE is not allowed");
    assert!(error.reason.contains("entity expansion"), "{error}");
    assert_eq!(error.file, key);
    assert_eq!(
        line_column(&error),
        place_of(bomb.as_bytes(), offset_of(bomb.as_bytes(), b"<!DOCTYPE")),
        "{error}"
    );
    // Nothing of the bomb was expanded into a mail, a mailbox or the log.
    assert_no_mail_contains(&firm, "LOL-MARKER");
    assert_no_mail_contains(&firm, "lollollol");
    assert_failed_file_day(&firm, "2026-11-21", &error);

    assert_sample_imported(&firm);
}

#[tokio::test]
async fn external_entities_are_refused_and_never_read() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export(SAMPLE_FILE, SAMPLE.as_bytes(), true);
    // A local file with a secret, a network DTD that records any attempt to
    // fetch it, and the classic /etc/passwd.
    let secret = format!("XXE-CANARY-{}-do-not-leak", std::process::id());
    let secret_file = firm.dir.path().join("secret.txt");
    std::fs::write(&secret_file, &secret).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let xxe = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE IceChatExport [\n  \
         <!ENTITY passwd SYSTEM \"file:///etc/passwd\">\n  \
         <!ENTITY secret SYSTEM \"file://{}\">\n  \
         <!ENTITY % remote SYSTEM \"http://127.0.0.1:{port}/evil.dtd\">\n  \
         %remote;\n]>\n\
         <IceChatExport FirmCode=\"ACME\" ExportDate=\"2026-11-22\" Version=\"1\">\n  \
         <Conversation Id=\"c-xxe\" Type=\"OneToOne\" StartTime=\"2026-11-22T08:00:00Z\">\n    \
         <Participants><Participant ImId=\"jdoe1\" Name=\"&passwd;\" Email=\"jdoe@acme.example\"/></Participants>\n    \
         <Message Id=\"m-xxe\" ImId=\"jdoe1\" Timestamp=\"2026-11-22T08:00:01Z\">&passwd; &secret;</Message>\n  \
         </Conversation>\n</IceChatExport>\n",
        secret_file.display()
    );
    firm.drop_export("ACME_2026-11-22_xxe.xml.pgp", xxe.as_bytes(), true);

    let summary = run(&firm).await;

    assert_eq!(summary.quarantined.len(), 1, "{:#?}", summary.quarantined);
    let key = "plain/ice/ACME_2026-11-22_xxe.xml";
    let error = assert_quarantined(&firm, &summary, key, "external entities");
    assert!(error.reason.contains("DOCTYPE"), "{error}");
    assert_eq!(
        line_column(&error),
        place_of(xxe.as_bytes(), offset_of(xxe.as_bytes(), b"<!DOCTYPE")),
        "{error}"
    );
    // Never read, never fetched: the secret and the passwd file appear
    // nowhere in the data directory, and nobody connected to the DTD host.
    let data = &firm.layout.data_dir;
    assert_eq!(
        files_containing(data, secret.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if let Some(first) = passwd.lines().next().filter(|l| l.len() > 8) {
        assert_eq!(
            files_containing(data, first.as_bytes()),
            Vec::<std::path::PathBuf>::new()
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the external DTD was fetched: {other:?}"),
    }
    assert_no_mail_contains(&firm, "c-xxe");
    assert_failed_file_day(&firm, "2026-11-22", &error);

    assert_sample_imported(&firm);
}

#[tokio::test]
async fn invalid_utf8_quarantines_its_conversation_alone_and_the_rest_of_the_file_goes_on() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export(SAMPLE_FILE, SAMPLE.as_bytes(), true);
    let participants = "<Participants>\
         <Participant ImId=\"jdoe1\" Name=\"John Doe\" Email=\"jdoe@acme.example\"/>\
         <Participant ImId=\"asmith2\" Name=\"Alice Smith\" Email=\"asmith@acme.example\"/>\
         </Participants>";
    let mut latin1 = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <IceChatExport FirmCode=\"ACME\" ExportDate=\"2026-11-23\" Version=\"1\">\n  \
         <Conversation Id=\"c-2301\" Type=\"OneToOne\" StartTime=\"2026-11-23T08:00:00Z\">\n    \
         {participants}\n    \
         <Message Id=\"m-1\" ImId=\"jdoe1\" Timestamp=\"2026-11-23T08:00:01Z\">Grüße, all fine before the fault</Message>\n  \
         </Conversation>\n  \
         <Conversation Id=\"c-2302\" Type=\"OneToOne\" StartTime=\"2026-11-23T09:00:00Z\">\n    \
         {participants}\n    \
         <Message Id=\"m-2\" ImId=\"asmith2\" Timestamp=\"2026-11-23T09:00:01Z\">Zoë says: caf"
    )
    .into_bytes();
    // "é" and "è" in ISO-8859-1: bytes that are not UTF-8.
    let bad_at = latin1.len();
    latin1.extend_from_slice(b"\xE9 cr\xE8me LATIN1-MARKER</Message>\n  </Conversation>\n  ");
    // A conversation after the fault: the reader resynchronises at the next
    // conversation, so only the damaged one waits in quarantine.
    latin1.extend_from_slice(
        format!(
            "<Conversation Id=\"c-2303\" Type=\"OneToOne\" StartTime=\"2026-11-23T10:00:00Z\">\n    \
             {participants}\n    \
             <Message Id=\"m-3\" ImId=\"jdoe1\" Timestamp=\"2026-11-23T10:00:01Z\">AFTER-FAULT-MARKER</Message>\n  \
             </Conversation>\n</IceChatExport>\n"
        )
        .as_bytes(),
    );
    firm.drop_export("ACME_2026-11-23_latin1.xml.pgp", &latin1, true);

    let summary = run(&firm).await;

    assert_eq!(summary.quarantined.len(), 1, "{:#?}", summary.quarantined);
    let (key, error) = &summary.quarantined[0];
    let from = offset_of(&latin1, b"<Conversation Id=\"c-2302\"");
    let line = place_of(&latin1, from).0;
    assert_eq!(
        key,
        &format!("plain/ice/ACME_2026-11-23_latin1.xml/conversation-line-{line}.xml")
    );
    assert_eq!(error.file, "plain/ice/ACME_2026-11-23_latin1.xml");
    assert!(error.reason.contains("invalid UTF-8"), "{error}");
    assert_eq!(line_column(error), place_of(&latin1, bad_at), "{error}");
    // The copy holds exactly the damaged conversation's bytes, and its
    // reason names the file, the place and the reason.
    let copy = std::fs::read(firm.layout.store().join("quarantine").join(key)).unwrap();
    let to = offset_of(&latin1, b"<Conversation Id=\"c-2303\"");
    let damaged = latin1[from..to].trim_ascii_end();
    assert_eq!(
        copy, damaged,
        "the quarantined copy is the damaged conversation"
    );
    let reason: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            firm.layout
                .store()
                .join("quarantine")
                .join(format!("{key}.reason.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(reason["file"], error.file.as_str());
    assert_eq!(reason["place"], error.place.to_string().as_str());
    assert_eq!(reason["reason"], error.reason.as_str());

    // The conversations before and after the fault are imported; nothing of
    // the damaged one became a mail.
    let jdoe = firm.folder(JDOE, "ICE Chat");
    let asmith = firm.folder(ASMITH, "ICE Chat");
    for folder in [&jdoe, &asmith] {
        let ids = conversation_ids(folder);
        assert!(ids.contains("c-2301") && ids.contains("c-2303"), "{ids:?}");
        assert!(!ids.contains("c-2302"), "{ids:?}");
    }
    let before = parse(find_by_conversation(&jdoe, "c-2301"))
        .body_text(0)
        .unwrap()
        .into_owned();
    assert!(
        before.contains("Grüße, all fine before the fault"),
        "{before}"
    );
    let after = parse(find_by_conversation(&jdoe, "c-2303"))
        .body_text(0)
        .unwrap()
        .into_owned();
    assert!(after.contains("AFTER-FAULT-MARKER"), "{after}");
    assert_no_mail_contains(&firm, "LATIN1-MARKER");

    let status = day_status(&firm, "2026-11-23");
    assert!(status.counts_add_up(), "{status:?}");
    assert_eq!(
        (status.available_from_source, status.imported, status.failed),
        (3, 2, 1),
        "{status:?}"
    );
    assert_eq!(status.failures.len(), 1, "{status:?}");
    assert!(
        status.failures[0].reason.contains(&error.to_string()),
        "{status:?}"
    );
    assert_eq!(status.sources.len(), 1);
    assert_eq!(
        status.sources[0].problem, None,
        "the file itself was readable"
    );
    let events = status.sources[0].events;
    assert_eq!(
        (events.received, events.delivered, events.quarantined),
        (3, 2, 1),
        "{status:?}"
    );

    assert_sample_imported(&firm);
}

#[tokio::test]
async fn a_200_mb_message_is_imported_whole() {
    let firm = Firm::new(&[JDOE, ASMITH, ZOE], SignaturePolicy::Required);
    firm.drop_export(SAMPLE_FILE, SAMPLE.as_bytes(), true);
    // Generated straight to disk and encrypted (zlib-compressed) by GnuPG:
    // neither the fixture nor its ciphertext is ever whole in the test's
    // memory.
    const TEXT_BYTES: u64 = 200 << 20;
    let day = "2026-11-24";
    let plain = firm.dir.path().join("huge.xml");
    let huge =
        write_huge_message_export(std::fs::File::create(&plain).unwrap(), day, TEXT_BYTES).unwrap();
    assert_eq!(huge.text_len, TEXT_BYTES);
    let name = format!("ACME_{day}_huge.xml.pgp");
    firm.gpg.encrypt(
        &plain,
        &firm.layout.drop_dir().join(&name),
        FIRM_UID,
        Some(SIGNER_UID),
        false,
    );
    std::fs::remove_file(&plain).unwrap();

    let summary = run(&firm).await;

    assert!(summary.quarantined.is_empty(), "{:#?}", summary.quarantined);
    assert!(
        !firm.layout.store().join("quarantine").exists(),
        "nothing is quarantined for being large"
    );
    // The huge conversation reached its one firm participant only; the small
    // conversation after it in the same file went through too.
    assert_eq!(
        firm.mailboxes_with_mail(),
        vec![ASMITH.to_string(), JDOE.to_string()]
    );
    let asmith = conversation_ids(&firm.folder(ASMITH, "ICE Chat"));
    assert!(
        asmith.contains("c-after") && !asmith.contains("c-huge"),
        "{asmith:?}"
    );
    let status = day_status(&firm, day);
    assert!(status.counts_add_up(), "{status:?}");
    assert_eq!(
        (status.available_from_source, status.imported, status.failed),
        (2, 2, 0),
        "{status:?}"
    );
    assert_sample_imported(&firm);

    // Whole: the text of the message and the original XML, byte for byte.
    // (The mail is parsed once; searches stay near the ends of the 200 MB.)
    let jdoe = firm.folder(JDOE, "ICE Chat");
    let raw = find_by_conversation(&jdoe, "c-huge");
    let message = parse(raw);
    let text = message.body_text(0).expect("text body");
    let text = text.as_bytes();
    let prefix = format!("[{day} 08:00:01 UTC] John Doe (jdoe1): ");
    let start = text[..text.len().min(1 << 16)]
        .windows(prefix.len())
        .position(|w| w == prefix.as_bytes())
        .expect("the message line")
        + prefix.len();
    // The mail carries the text with CRLF line ends, then the transcript
    // line's own CRLF.
    assert!(text.ends_with(b"\r\n"));
    let body = &text[start..text.len() - 2];
    assert_eq!(body.len() as u64, huge.text_crlf_len, "message text length");
    assert_eq!(
        sha256_hex(body),
        huge.text_crlf_sha256,
        "message text digest"
    );

    let original = message
        .attachments()
        .find(|a| a.attachment_name() == Some("conversation-c-huge.xml"))
        .expect("original XML attached");
    assert_eq!(original.contents().len() as u64, huge.conversation_len);
    assert_eq!(sha256_hex(original.contents()), huge.conversation_sha256);

    let html = message.body_html(0).expect("HTML body");
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let html = html.as_bytes();
    let first = escape(&huge.first_line);
    let last = escape(&huge.last_line);
    assert!(
        occurs_near(html, first.as_bytes(), 1 << 16, false),
        "first line in HTML"
    );
    assert!(
        occurs_near(html, last.as_bytes(), 1 << 16, true),
        "last line in HTML"
    );
    assert!(
        html.len() as u64 > huge.text_len,
        "the whole text is in the HTML"
    );
}

#[tokio::test]
async fn a_room_of_100_000_participants_reaches_only_the_firms_mailboxes() {
    const PARTICIPANTS: usize = 100_000;
    let ghost = "ghost@acme.example"; // in the firm's domain, not a mailbox
    let firm = Firm::new(&[JDOE, ASMITH, ZOE], SignaturePolicy::Required);
    firm.drop_export(SAMPLE_FILE, SAMPLE.as_bytes(), true);
    let day = "2026-11-25";
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <IceChatExport FirmCode=\"ACME\" ExportDate=\"{day}\" Version=\"1\">\n  \
         <Conversation Id=\"c-crowd\" Type=\"Group\" RoomName=\"Global markets town hall\" StartTime=\"{day}T08:00:00Z\">\n    \
         <Participants>\n      \
         <Participant ImId=\"jdoe1\" Name=\"John Doe\" Company=\"ACME Bank\" Email=\"{JDOE}\"/>\n      \
         <Participant ImId=\"asmith2\" Name=\"Alice Smith\" Company=\"ACME Bank\" Email=\"{ASMITH}\"/>\n      \
         <Participant ImId=\"zmuller7\" Name=\"Zoë Müller\" Company=\"Globex AG\" Email=\"{ZOE}\"/>\n      \
         <Participant ImId=\"ghost1\" Name=\"Ghost\" Company=\"ACME Bank\" Email=\"{ghost}\"/>\n"
    );
    // The others: counterparties of many firms, some without an address,
    // some with a look-alike of the firm's domain, some with names that are
    // not ASCII.
    for n in 4..PARTICIPANTS {
        let email = match n % 4 {
            0 => format!(" Email=\"trader{n}@bank{}.example\"", n % 97),
            1 => String::new(),
            2 => format!(" Email=\"t{n}@acme.example.bank{}.example\"", n % 13),
            _ => format!(" Email=\"broker{n}@globex.example\""),
        };
        xml.push_str(&format!(
            "      <Participant ImId=\"ext{n}\" Name=\"Trader Nº{n} Ünal\" Company=\"Bank {}\"{email}/>\n",
            n % 97
        ));
    }
    xml.push_str(&format!(
        "    </Participants>\n    \
         <Message Id=\"m-1\" ImId=\"jdoe1\" Timestamp=\"{day}T08:00:01Z\">Welcome, everyone.</Message>\n    \
         <Message Id=\"m-2\" ImId=\"ext99999\" Timestamp=\"{day}T08:00:02Z\" SenderEmail=\"broker99999@globex.example\">Thanks!</Message>\n    \
         <Entered ImId=\"late1\" Timestamp=\"{day}T08:00:03Z\"/>\n    \
         <Message Id=\"m-3\" ImId=\"asmith2\" Timestamp=\"{day}T08:00:04Z\">Q&amp;A at the end.</Message>\n  \
         </Conversation>\n</IceChatExport>\n"
    ));
    firm.drop_export(&format!("ACME_{day}_crowd.xml.pgp"), xml.as_bytes(), true);
    drop(xml);

    let summary = run(&firm).await;

    assert!(summary.quarantined.is_empty(), "{:#?}", summary.quarantined);
    // Only the firm's mapped mailboxes got a copy: not the counterparty whose
    // mailbox exists on the mail system, not the look-alike domains.
    assert_eq!(
        firm.mailboxes_with_mail(),
        vec![ASMITH.to_string(), JDOE.to_string()]
    );
    let jdoe = firm.folder(JDOE, "ICE Chat");
    let asmith = firm.folder(ASMITH, "ICE Chat");
    let raw = find_by_conversation(&jdoe, "c-crowd");
    assert_eq!(
        raw,
        find_by_conversation(&asmith, "c-crowd"),
        "one mail, two copies"
    );

    // Valid headers: RFC 5322 framing everywhere, mail-parser reads them all.
    assert_clean_lines(raw);
    let names = check_header_framing(header_section(raw));
    let message = parse(raw);
    assert_eq!(
        names.len(),
        message.headers().len(),
        "mail-parser sees every header field"
    );
    assert!(message
        .subject()
        .unwrap()
        .contains("Global markets town hall"));
    assert_eq!(
        header(&message, "X-Chat-Participant").len(),
        PARTICIPANTS + 1,
        "every listed participant, and the one who entered unlisted"
    );
    let to: Vec<_> = message.to().expect("To").iter().collect();
    assert_eq!(to.len(), PARTICIPANTS, "everyone but the sender");
    assert!(to
        .iter()
        .all(|a| a.address().is_some_and(|a| a.contains('@'))));
    assert_eq!(
        message
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.address()),
        Some(JDOE)
    );
    let text = message.body_text(0).unwrap();
    assert!(
        text.contains("Trader Nº99999 Ünal"),
        "the transcript lists everyone"
    );
    assert!(text.contains("Q&A at the end."));

    let status = day_status(&firm, day);
    assert!(status.counts_add_up(), "{status:?}");
    assert_eq!(
        (
            status.available_from_source,
            status.available_after_fanout,
            status.imported,
            status.failed
        ),
        (1, 2, 1, 0)
    );
    assert_eq!(
        status.unmapped_participants.len(),
        PARTICIPANTS + 1 - 2,
        "everyone but the two firm users is reported unmapped"
    );
    let reason_of = |im_id: &str| {
        status
            .unmapped_participants
            .iter()
            .find(|u| u.source_user == im_id)
            .map(|u| u.reason.clone())
            .unwrap_or_else(|| panic!("{im_id} not reported"))
    };
    assert!(reason_of("zmuller7").contains("outside the firm's domains"));
    assert!(reason_of("ghost1").contains("not a mailbox of the mail system"));
    assert!(reason_of("ext6").contains("outside the firm's domains"));
    assert!(reason_of("ext5").contains("no address"));
    assert_sample_imported(&firm);
}

#[tokio::test]
async fn header_like_text_never_becomes_a_header() {
    let victim = "victim@acme.example"; // a real mailbox of the firm, not in the chat
    let evil = "victim@evil.example";
    let firm = Firm::new(&[JDOE, ASMITH, victim, evil], SignaturePolicy::Required);
    firm.drop_export(SAMPLE_FILE, SAMPLE.as_bytes(), true);
    let day = "2026-11-26";
    const CRLF: &str = "&#13;&#10;";
    // A text file with a lone CR and a NUL: bytes that must not reach the
    // mail unencoded.
    const NOTES: &[u8] = b"hello\rX-Injected: 1\r\nBcc: victim@evil.example\n\0end";
    let notes = base64::engine::general_purpose::STANDARD.encode(NOTES);
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <IceChatExport FirmCode=\"ACME\" ExportDate=\"{day}\" Version=\"1\">\n  \
         <Conversation Id=\"c-inj{CRLF}X-Injected: 1\" Type=\"Group\" \
           RoomName=\"Rates{CRLF}Bcc: {victim}{CRLF}X-Injected: 1\" StartTime=\"{day}T08:00:00Z\">\n    \
         <Participants>\n      \
         <Participant ImId=\"eve{CRLF}X-Injected: 1\" Name=\"Eve{CRLF}{CRLF}X-Injected: 1\" \
           Company=\"Evil{CRLF}Bcc: {evil}\" Email=\"eve@globex.example{CRLF}Bcc: {victim}\"/>\n      \
         <Participant ImId=\"jdoe1\" Name=\"John{CRLF}Bcc: {victim}\" Email=\"{JDOE}\"/>\n      \
         <Participant ImId=\"asmith2\" Name=\"Alice&#10;X-Injected: 1&#13;Bcc: {evil}\" Email=\"{ASMITH}\"/>\n    \
         </Participants>\n    \
         <Message Id=\"m-1\" ImId=\"eve{CRLF}X-Injected: 1\" Timestamp=\"{day}T08:00:01Z\">hello{CRLF}Bcc: {victim}{CRLF}X-Injected: 1{CRLF}{CRLF}--fake-boundary</Message>\n    \
         <Message Id=\"m-2\" ImId=\"jdoe1\" Timestamp=\"{day}T08:00:02Z\">line one\nBcc: {evil}\nX-Injected: 2</Message>\n    \
         <FileTransfer Id=\"f-1\" ImId=\"jdoe1\" Timestamp=\"{day}T08:00:03Z\" FileName=\"a.txt{CRLF}X-Injected: 1\" \
           ContentType=\"text/plain{CRLF}X-Injected: 1\" Size=\"5\">aGVsbG8=</FileTransfer>\n    \
         <FileTransfer Id=\"f-2\" ImId=\"jdoe1\" Timestamp=\"{day}T08:00:04Z\" FileName=\"notes.txt\" \
           ContentType=\"text/plain\">{notes}</FileTransfer>\n  \
         </Conversation>\n</IceChatExport>\n"
    );
    firm.drop_export(&format!("ACME_{day}_inject.xml.pgp"), xml.as_bytes(), true);

    let summary = run(&firm).await;

    assert!(summary.quarantined.is_empty(), "{:#?}", summary.quarantined);
    assert_eq!(
        firm.mailboxes_with_mail(),
        vec![ASMITH.to_string(), JDOE.to_string()],
        "no copy for the addresses named in the text"
    );
    let jdoe = firm.folder(JDOE, "ICE Chat");
    let benign = parse(find_by_conversation(&jdoe, "c-1002"));
    let benign_names: BTreeSet<String> = benign
        .headers()
        .iter()
        .map(|h| h.name().to_ascii_lowercase())
        .collect();
    let conversation = "c-inj X-Injected: 1";
    let raw = find_by_conversation(&jdoe, conversation);
    assert_eq!(
        raw,
        find_by_conversation(&firm.folder(ASMITH, "ICE Chat"), conversation)
    );

    // No injected header, at the top or in any MIME part, by the raw framing
    // and by mail-parser's reading; no bare CR or LF, no NUL anywhere in the mail.
    assert_clean_lines(raw);
    let message = parse(raw);
    let raw_names = check_header_framing(header_section(raw));
    let names: BTreeSet<String> = message
        .headers()
        .iter()
        .map(|h| h.name().to_ascii_lowercase())
        .collect();
    assert_eq!(raw_names.len(), message.headers().len());
    assert_eq!(
        names, benign_names,
        "the same header fields as any other mail"
    );
    for part in &message.parts {
        let section = &raw[part.offset_header as usize..part.offset_body as usize];
        for name in check_header_framing(section) {
            let name = name.to_ascii_lowercase();
            assert!(
                !matches!(name.as_str(), "bcc" | "cc" | "x-injected"),
                "injected {name} in a part"
            );
        }
    }
    let addresses: Vec<String> = [message.from(), message.to(), message.cc(), message.bcc()]
        .into_iter()
        .flatten()
        .flat_map(Address::iter)
        .filter_map(|a| a.address().map(str::to_string))
        .collect();
    assert!(
        addresses.iter().all(|a| !a.contains("victim")),
        "{addresses:?}"
    );
    assert!(message.cc().is_none() && message.bcc().is_none());

    // The text is all there, on one line per header, safely encoded.
    let subject = message.subject().unwrap();
    assert!(
        subject.contains(&format!("Rates Bcc: {victim} X-Injected: 1")),
        "{subject}"
    );
    let from = message.from().and_then(|f| f.first()).unwrap();
    assert_eq!(from.name(), Some("Eve X-Injected: 1"));
    assert!(
        from.address().unwrap().ends_with(".invalid"),
        "an address that is not one is not used: {from:?}"
    );
    let to_names: Vec<_> = message
        .to()
        .unwrap()
        .iter()
        .filter_map(|a| a.name())
        .collect();
    assert!(
        to_names.contains(&&*format!("John Bcc: {victim}")),
        "{to_names:?}"
    );
    assert!(
        to_names.contains(&&*format!("Alice X-Injected: 1 Bcc: {evil}")),
        "{to_names:?}"
    );
    let participants = header(&message, "X-Chat-Participant").join("\n");
    for expected in [
        "ImId=\"eve X-Injected: 1\"",
        &format!("Email=\"eve@globex.example Bcc: {victim}\""),
        &format!("Company=\"Evil Bcc: {evil}\""),
        &format!("Name=\"John Bcc: {victim}\""),
    ] {
        assert!(
            participants.contains(expected),
            "{expected} in {participants}"
        );
    }
    let text = message.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(
        text.contains(&format!(
            "hello\n    Bcc: {victim}\n    X-Injected: 1\n    \n    --fake-boundary"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("line one\n    Bcc: {evil}\n    X-Injected: 2")),
        "{text}"
    );
    let html = message.body_html(0).unwrap();
    assert!(
        html.contains(&format!("hello<br>    Bcc: {victim}")),
        "{html}"
    );
    let file = message
        .attachments()
        .find(|a| a.contents() == b"hello")
        .expect("the file transfer");
    assert_eq!(file.attachment_name(), Some("a.txt X-Injected: 1"));
    assert_eq!(
        file.content_type().map(|c| (c.ctype(), c.subtype())),
        Some(("application", Some("octet-stream"))),
        "an invalid content type falls back to application/octet-stream"
    );
    let notes = message
        .attachments()
        .find(|a| a.attachment_name() == Some("notes.txt"))
        .expect("the text file");
    assert_eq!(notes.contents(), NOTES, "the text file, byte for byte");

    let status = day_status(&firm, day);
    assert!(status.counts_add_up(), "{status:?}");
    assert_eq!((status.available_from_source, status.imported), (1, 1));
    assert!(status
        .unmapped_participants
        .iter()
        .any(|u| u.source_user == "eve\r\nX-Injected: 1"
            && u.reason.contains("not an e-mail address")));
    assert_sample_imported(&firm);
}

#[tokio::test]
async fn a_file_encrypted_to_another_key_is_quarantined() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export(SAMPLE_FILE, SAMPLE.as_bytes(), true);
    let other = integration_tests::gpg::Gpg::new();
    other.generate_recipient("Other <other@else.example>", "pw");
    let plain = firm.dir.path().join("other.xml");
    std::fs::write(
        &plain,
        SAMPLE
            .replace("2026-11-20", "2026-11-27")
            .replace("c-10", "WRONGKEY-MARKER-"),
    )
    .unwrap();
    let name = "ACME_2026-11-27_wrongkey.xml.pgp";
    other.encrypt(
        &plain,
        &firm.layout.drop_dir().join(name),
        "other@else.example",
        None,
        false,
    );

    let summary = run(&firm).await;

    assert_eq!(summary.quarantined.len(), 1, "{:#?}", summary.quarantined);
    let key = format!("raw/ice/{name}");
    let error = assert_quarantined(&firm, &summary, &key, "not encrypted to our key");
    assert_eq!(error.file, key);
    let size = std::fs::metadata(firm.layout.drop_dir().join(name))
        .unwrap()
        .len();
    assert!(
        matches!(error.place, Place::Offset(at) if at > 0 && at <= size),
        "a byte offset inside the file: {error}"
    );
    // The reason names the key we expected, so the operator can tell ICE.
    let fingerprint = firm_fingerprint(&firm);
    assert!(
        error.reason.to_lowercase().contains(&fingerprint),
        "{error} does not name {fingerprint}"
    );
    assert!(!firm
        .layout
        .store()
        .join("plain/ice/ACME_2026-11-27_wrongkey.xml")
        .exists());
    assert_no_mail_contains(&firm, "WRONGKEY-MARKER");
    assert_failed_file_day(&firm, "2026-11-27", &error);

    assert_sample_imported(&firm);
}

/// The primary key fingerprint of the firm's key, lower-case hex.
fn firm_fingerprint(firm: &Firm) -> String {
    let output = std::process::Command::new("gpg")
        .env("GNUPGHOME", firm.gpg.home())
        .args(["--batch", "--with-colons", "--fingerprint", FIRM_UID])
        .output()
        .expect("gpg runs");
    let listing = String::from_utf8(output.stdout).expect("utf-8");
    listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| !f.is_empty()))
        .expect("a fingerprint")
        .to_lowercase()
}

#[tokio::test]
async fn a_truncated_pgp_file_never_becomes_plaintext() {
    let firm = Firm::new(&[JDOE, ASMITH], SignaturePolicy::Required);
    firm.drop_export(SAMPLE_FILE, SAMPLE.as_bytes(), true);
    // Large enough that the part before the cut decrypts to far more than
    // the stage's pipe holds: partial plaintext does reach the store's write.
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <IceChatExport FirmCode=\"ACME\" ExportDate=\"2026-11-28\" Version=\"1\">\n",
    );
    for n in 0..5000 {
        xml.push_str(&format!(
            "  <Conversation Id=\"c-t{n}\" Type=\"OneToOne\" StartTime=\"2026-11-28T08:00:00Z\">\n    \
             <Participants><Participant ImId=\"jdoe1\" Name=\"John Doe\" Email=\"{JDOE}\"/></Participants>\n    \
             <Message Id=\"m-t{n}\" ImId=\"jdoe1\" Timestamp=\"2026-11-28T08:00:01Z\">TRUNCATED-MARKER {n:05} {}</Message>\n  \
             </Conversation>\n",
            "x".repeat(n % 200)
        ));
    }
    xml.push_str("</IceChatExport>\n");
    let name = "ACME_2026-11-28_truncated.xml.pgp";
    let whole = firm.drop_export(name, xml.as_bytes(), true);
    let bytes = std::fs::read(&whole).unwrap();
    let cut = bytes.len() / 2;
    std::fs::write(&whole, &bytes[..cut]).unwrap();

    let summary = run(&firm).await;

    assert_eq!(summary.quarantined.len(), 1, "{:#?}", summary.quarantined);
    let key = format!("raw/ice/{name}");
    let error = assert_quarantined(&firm, &summary, &key, "truncated or corrupt");
    assert!(
        matches!(error.place, Place::Offset(at) if at > 0 && at <= cut as u64),
        "a byte offset inside the file: {error}"
    );
    let copy = std::fs::read(firm.layout.store().join("quarantine").join(&key)).unwrap();
    assert_eq!(copy, &bytes[..cut], "the truncated file as received");
    // No plaintext of it anywhere: no plain object, nothing in the store's
    // temporary files, no mail, no mailbox.
    let store = firm.layout.store();
    assert!(!store
        .join("plain/ice/ACME_2026-11-28_truncated.xml")
        .exists());
    assert!(
        files_under(&store.join("plain"))
            .iter()
            .all(|f| !f.contains("truncated")),
        "{:?}",
        files_under(&store.join("plain"))
    );
    assert_eq!(
        files_containing(&firm.layout.data_dir, b"TRUNCATED-MARKER"),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(files_under(&store.join("mail/ice/2026-11-28")).is_empty());
    assert_failed_file_day(&firm, "2026-11-28", &error);

    assert_sample_imported(&firm);
}

#[tokio::test]
async fn mapping_csv_bom_quotes_duplicates_and_blank_lines() {
    let (desk, ann, other, li) = (
        "rates.desk@acme.example",
        "ann@acme.example",
        "other@acme.example",
        "li.desk@acme.example",
    );
    let firm = Firm::new(
        &[JDOE, ASMITH, desk, ann, other, li],
        SignaturePolicy::Required,
    );
    let store = chat_archive_core::adapters::LocalStore::new(firm.layout.store());
    let put_csv = |csv: Vec<u8>| {
        let store = &store;
        async move {
            store
                .put_bytes("config/ice/mapping.csv", csv, &Default::default())
                .await
                .unwrap();
        }
    };
    // Rows as an editor numbers them (line 1 is the header, after the BOM).
    let csv = "\u{feff}ImId,Mailbox\n\
               \n\
               jdoe1,rates.desk@acme.example\n\
               \"smith, ann\",ann@acme.example\n\
               \n\
               \n\
               lilei88,\"li, lei@acme.example\"\n\
               JDOE1,other@acme.example\n\
               lilei88 ,\"li.desk@acme.example\"\n\
               jdoe1,jdoe@acme.example\n\
               \n";
    put_csv(csv.as_bytes().to_vec()).await;
    let day = "2026-11-29";
    let export = |day: &str, participants: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <IceChatExport FirmCode=\"ACME\" ExportDate=\"{day}\" Version=\"1\">\n  \
             <Conversation Id=\"c-map-{day}\" Type=\"Group\" RoomName=\"Mapping\" StartTime=\"{day}T08:00:00Z\">\n    \
             <Participants>{participants}</Participants>\n    \
             <Message Id=\"m-1\" ImId=\"jdoe1\" Timestamp=\"{day}T08:00:01Z\">hi</Message>\n  \
             </Conversation>\n</IceChatExport>\n"
        )
    };
    let xml = export(
        day,
        &format!(
            "<Participant ImId=\"jdoe1\" Name=\"John Doe\" Email=\"{JDOE}\"/>\
             <Participant ImId=\"smith, ann\" Name=\"Ann Smith\"/>\
             <Participant ImId=\"lilei88\" Name=\"Li Lei\" Email=\"li.lei@globex.example\"/>"
        ),
    );
    firm.drop_export(&format!("ACME_{day}.xml.pgp"), xml.as_bytes(), true);

    let summary = run(&firm).await;

    assert!(summary.quarantined.is_empty(), "{:#?}", summary.quarantined);
    // The first usable row of an ImId wins (matched case-insensitively, over
    // the participant's own address); a quoted comma is part of the field;
    // a row that could not be used does not count as the first.
    let conversation = format!("c-map-{day}");
    for (mailbox, expected) in [
        (desk, true),
        (ann, true),
        (li, true),
        (other, false),
        (JDOE, false),
    ] {
        let ids = conversation_ids(&firm.folder(mailbox, "ICE Chat"));
        assert_eq!(ids.contains(&conversation), expected, "{mailbox}: {ids:?}");
    }
    let status = day_status(&firm, day);
    assert!(status.counts_add_up(), "{status:?}");
    assert_eq!(
        (
            status.available_from_source,
            status.available_after_fanout,
            status.imported
        ),
        (1, 3, 1)
    );
    // Bad rows are reported with the file, the row an editor shows, and the
    // reason; the BOM and the blank lines are no problem.
    let problems_path = firm
        .layout
        .store()
        .join("reports/ice/mapping/problems.json");
    let problems: Vec<String> =
        serde_json::from_slice(&std::fs::read(&problems_path).unwrap()).unwrap();
    let file = "config/ice/mapping.csv";
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!("{file}: row 7: mailbox \"li, lei@acme.example\"")),
        "{problems:#?}"
    );
    assert_eq!(
        problems[1],
        format!(
            "{file}: row 8: duplicate ImId \"JDOE1\": row 3 (rates.desk@acme.example) wins, \
             this row is ignored"
        )
    );
    assert!(
        problems[2].starts_with(&format!("{file}: row 10: duplicate ImId \"jdoe1\": row 3")),
        "{problems:#?}"
    );
    // No quarantine for a mapping file: it is configuration, applied row by
    // row; quarantining it would drop its good rows.
    assert!(!firm.layout.store().join("quarantine").exists());

    // A BOM right before the first ImId (no header row), CRLF line ends.
    put_csv(
        b"\xEF\xBB\xBFasmith2,other@acme.example\r\n\r\njdoe1,li.desk@acme.example\r\n".to_vec(),
    )
    .await;
    let day2 = "2026-11-30";
    let xml = export(
        day2,
        &format!(
            "<Participant ImId=\"jdoe1\" Name=\"John Doe\" Email=\"{JDOE}\"/>\
             <Participant ImId=\"asmith2\" Name=\"Alice Smith\" Email=\"{ASMITH}\"/>"
        ),
    );
    firm.drop_export(&format!("ACME_{day2}.xml.pgp"), xml.as_bytes(), true);
    let summary = run(&firm).await;
    assert!(summary.quarantined.is_empty(), "{:#?}", summary.quarantined);
    let conversation = format!("c-map-{day2}");
    for (mailbox, expected) in [(other, true), (li, true), (ASMITH, false), (JDOE, false)] {
        let ids = conversation_ids(&firm.folder(mailbox, "ICE Chat"));
        assert_eq!(ids.contains(&conversation), expected, "{mailbox}: {ids:?}");
    }
    let problems: Vec<String> =
        serde_json::from_slice(&std::fs::read(&problems_path).unwrap()).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let status = day_status(&firm, day2);
    assert!(status.counts_add_up(), "{status:?}");
    assert_eq!((status.imported, status.failed), (1, 0));
}
