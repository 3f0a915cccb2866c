//! The IMAP sink signing in the way Exchange Online and Google Workspace
//! prescribe: it mints its own OAuth2 tokens at a token endpoint (the test's,
//! on loopback, implementing the client-secret, client-assertion and
//! JWT-bearer grants) and logs in with XOAUTH2 to a real Dovecot that
//! validates the tokens locally.

use std::collections::BTreeMap;

use chat_archive_core::adapters::imap::{ImapAuth, ImapConfig, ImapSink};
use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::crypto::SignaturePolicy;
use chat_archive_core::error::Error;
use chat_archive_core::events::FetchRequest;
use chat_archive_core::pipeline::Silent;
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::{Delivery, DeliveryOutcome, MailboxSink, SecretValue};
use chrono::{TimeZone, Utc};
use integration_tests::dovecot::{client, Dovecot, Options};
use integration_tests::fixtures::SAMPLE;
use integration_tests::local::Firm;
use integration_tests::token_endpoint::{key_pair, Clients, KeyPair, Mint, TokenEndpoint};

const JDOE: &str = "jdoe@acme.example";
const ASMITH: &str = "asmith@acme.example";
const DOVECOT_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const CLIENT_ID: &str = "5b1f0c7e-app";
const CLIENT_SECRET: &str = "cl1ent-s3cret-value";
const SERVICE_ACCOUNT: &str = "archiver@acme-archive.iam.gserviceaccount.com";
/// The resource Exchange Online tokens are issued for.
const OUTLOOK: &str = "https://outlook.office365.com";

/// Dovecot accepting tokens of the test endpoint issued for `audience`.
fn server(audience: &str) -> Dovecot {
    Dovecot::start_with(
        &[JDOE, ASMITH],
        Options {
            oauth2_hs256_key: Some(DOVECOT_KEY.to_vec()),
            oauth2_audience: Some(audience.into()),
            ..Options::default()
        },
    )
}

fn clients(certificate: Option<&KeyPair>, account: Option<&KeyPair>) -> Clients {
    Clients {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        certificate: certificate.map(|k| (k.public_pem.clone(), k.thumbprint.clone())),
        service_account: account.map(|k| (SERVICE_ACCOUNT.into(), k.public_pem.clone())),
        app_mailbox: JDOE.into(),
        dovecot_key: DOVECOT_KEY.to_vec(),
        users: vec![JDOE.into(), ASMITH.into()],
    }
}

/// Sink settings for the plaintext port (the token endpoint is plain HTTP,
/// which the sink allows only under the same testing flag).
fn config(server: &Dovecot, auth: ImapAuth) -> ImapConfig {
    ImapConfig {
        auth,
        ..server.plaintext_config()
    }
}

fn exchange(endpoint: &TokenEndpoint, thumbprint: Option<&str>, scope: Option<&str>) -> ImapAuth {
    ImapAuth::ExchangeOnline {
        tenant: "acme.example".into(),
        client_id: CLIENT_ID.into(),
        certificate_thumbprint: thumbprint.map(str::to_string),
        token_url: Some(endpoint.url("/acme.example/oauth2/v2.0/token")),
        scope: scope.map(str::to_string),
    }
}

fn chat_mail(i: usize) -> (String, Vec<u8>) {
    let id = format!("oauth-{i}@ice.chat-archive");
    let raw = format!(
        "Message-ID: <{id}>\r\nSubject: chat {i}\r\nFrom: a@acme.example\r\n\r\nline {i}\r\n"
    );
    (id, raw.into_bytes())
}

async fn deliver(sink: &ImapSink, mailbox: &str, i: usize) -> Result<DeliveryOutcome> {
    let (id, raw) = chat_mail(i);
    let flags = vec!["\\Seen".to_string()];
    sink.deliver(&Delivery {
        mailbox,
        folder: "ICE Chat",
        message_id: &id,
        raw: (&raw).into(),
        internal_date: Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap(),
        flags: &flags,
    })
    .await
}

type Result<T> = std::result::Result<T, Error>;

/// The Message-IDs in the user's ICE Chat folder, read through Dovecot.
async fn stored_ids(server: &Dovecot, user: &str) -> Vec<String> {
    client::messages(server.imap_port, user, "ICE Chat")
        .await
        .iter()
        .map(|m| {
            mail_parser::MessageParser::default()
                .parse(&m.raw)
                .and_then(|p| p.message_id().map(str::to_string))
                .expect("Message-ID")
        })
        .collect()
}

#[tokio::test]
async fn exchange_client_secret_grant_from_the_secret_store_delivers_mail() {
    let server = server(OUTLOOK);
    let endpoint = TokenEndpoint::start(clients(None, None));
    let config = config(&server, exchange(&endpoint, None, None));
    assert_eq!(config.secret_field(), fields::OAUTH_CLIENT_SECRET);
    let firm = Firm::new(&[], SignaturePolicy::Required);
    let secrets = firm.pipeline().secrets;
    secrets
        .update(
            "ice",
            BTreeMap::from([(
                fields::OAUTH_CLIENT_SECRET.to_string(),
                SecretValue::new(CLIENT_SECRET),
            )]),
        )
        .await
        .unwrap();
    let sink = ImapSink::new(
        ImapConfig {
            max_idle_sessions: 0,
            ..config
        },
        secrets,
        "ice",
    )
    .unwrap();
    assert_eq!(
        deliver(&sink, JDOE, 1).await.unwrap(),
        DeliveryOutcome::Delivered
    );
    // A second login (no idle session kept) reuses the cached token.
    assert_eq!(
        deliver(&sink, JDOE, 2).await.unwrap(),
        DeliveryOutcome::Delivered
    );
    assert_eq!(endpoint.log(), vec![format!("client_secret {JDOE}")]);
    assert_eq!(sink.stats().sessions_opened, 2);
    assert_eq!(
        stored_ids(&server, JDOE).await,
        vec!["oauth-1@ice.chat-archive", "oauth-2@ice.chat-archive"]
    );
    assert!(server.log().contains("method=XOAUTH2"), "{}", server.log());

    // A wrong client secret: the endpoint's reason, naming the mailbox, and
    // no secret in the message.
    let wrong = ImapSink::with_credential(
        ImapConfig {
            auth: exchange(&endpoint, None, None),
            ..server.plaintext_config()
        },
        SecretValue::new("not-the-secret"),
    )
    .unwrap();
    let error = wrong.is_valid_mailbox(JDOE).await.unwrap_err();
    let shown = format!("{error} / {error:?}");
    assert!(
        shown.contains(JDOE) && shown.contains("wrong client secret"),
        "{shown}"
    );
    assert!(!shown.contains("not-the-secret"), "{shown}");
}

#[tokio::test]
async fn exchange_certificate_assertion_grant_delivers_mail() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = key_pair(dir.path(), "app");
    let server = server(OUTLOOK);
    let endpoint = TokenEndpoint::start(clients(Some(&certificate), None));
    let config = config(
        &server,
        exchange(&endpoint, Some(&certificate.thumbprint), None),
    );
    assert_eq!(config.secret_field(), fields::OAUTH_PRIVATE_KEY);
    let sink = ImapSink::with_credential(config, SecretValue::new(certificate.private_pem.clone()))
        .unwrap();
    assert_eq!(
        deliver(&sink, JDOE, 1).await.unwrap(),
        DeliveryOutcome::Delivered
    );
    assert_eq!(endpoint.log(), vec![format!("client_assertion {JDOE}")]);
    assert_eq!(
        stored_ids(&server, JDOE).await,
        vec!["oauth-1@ice.chat-archive"]
    );

    // Another key than the registered certificate's: the signature check fails.
    let stranger = key_pair(dir.path(), "stranger");
    let forged = ImapSink::with_credential(
        ImapConfig {
            auth: exchange(&endpoint, Some(&certificate.thumbprint), None),
            ..server.plaintext_config()
        },
        SecretValue::new(stranger.private_pem),
    )
    .unwrap();
    let error = forged.is_valid_mailbox(JDOE).await.unwrap_err();
    assert!(error.to_string().contains("assertion refused"), "{error}");
}

#[tokio::test]
async fn google_service_account_mints_one_token_per_mailbox_through_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let account = key_pair(dir.path(), "service-account");
    let server = server("https://mail.google.com");
    let endpoint = TokenEndpoint::start(clients(None, Some(&account)));
    let auth = ImapAuth::GoogleWorkspace {
        client_email: SERVICE_ACCOUNT.into(),
        private_key_id: Some("k1".into()),
        token_url: Some(endpoint.url("/token")),
        scope: None,
    };
    let firm = Firm::new(&[], SignaturePolicy::Required);
    let mut connector = ConnectorConfig::ice();
    connector.firm_domains = vec!["acme.example".into()];
    connector.imap = Some(config(&server, auth));
    firm.write_config(connector);
    firm.pipeline()
        .secrets
        .update(
            "ice",
            BTreeMap::from([(
                fields::OAUTH_PRIVATE_KEY.to_string(),
                SecretValue::new(account.private_pem.clone()),
            )]),
        )
        .await
        .unwrap();
    firm.drop_export("ACME_2026-11-20.xml.pgp", SAMPLE.as_bytes(), true);
    let summary = firm
        .pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();
    assert_eq!(summary.mails, 3);
    assert_eq!(stored_ids(&server, JDOE).await.len(), 3);
    assert_eq!(stored_ids(&server, ASMITH).await.len(), 2);
    let mut log = endpoint.log();
    log.sort();
    assert_eq!(
        log,
        vec![format!("jwt_bearer {ASMITH}"), format!("jwt_bearer {JDOE}")],
        "one token per mailbox, each asked for its own sub"
    );

    // A user the domain does not know: once the key has worked for another
    // mailbox, the token endpoint's refusal means "not a valid mailbox".
    let sink = ImapSink::with_credential(
        config(
            &server,
            ImapAuth::GoogleWorkspace {
                client_email: SERVICE_ACCOUNT.into(),
                private_key_id: None,
                token_url: Some(endpoint.url("/token")),
                scope: None,
            },
        ),
        SecretValue::new(account.private_pem.clone()),
    )
    .unwrap();
    assert!(sink.is_valid_mailbox(JDOE).await.unwrap());
    assert!(!sink.is_valid_mailbox("ghost@acme.example").await.unwrap());
}

#[tokio::test]
async fn an_expired_token_is_replaced_once_and_the_mail_lands() {
    let server = server(OUTLOOK);
    let endpoint = TokenEndpoint::start(clients(None, None));
    endpoint.plan(&[Mint::Expired]);
    let sink = ImapSink::with_credential(
        config(&server, exchange(&endpoint, None, None)),
        SecretValue::new(CLIENT_SECRET),
    )
    .unwrap();
    assert_eq!(
        deliver(&sink, JDOE, 1).await.unwrap(),
        DeliveryOutcome::Delivered
    );
    assert_eq!(endpoint.log().len(), 2, "{:?}", endpoint.log());
    assert_eq!(
        stored_ids(&server, JDOE).await,
        vec!["oauth-1@ice.chat-archive"]
    );
}

#[tokio::test]
async fn a_token_for_the_wrong_audience_fails_once_refreshed_naming_the_mailbox() {
    let server = server(OUTLOOK);
    let endpoint = TokenEndpoint::start(clients(None, None));
    // The classic mistake: the Graph scope instead of Exchange Online's.
    let auth = exchange(
        &endpoint,
        None,
        Some("https://graph.microsoft.com/.default"),
    );
    let sink =
        ImapSink::with_credential(config(&server, auth), SecretValue::new(CLIENT_SECRET)).unwrap();
    let error = deliver(&sink, JDOE, 1).await.unwrap_err();
    let shown = format!("{error}");
    assert!(
        matches!(&error, Error::Mailbox { mailbox, .. } if mailbox == JDOE),
        "{error:?}"
    );
    assert!(
        shown.contains("AUTHENTICATIONFAILED") && shown.contains("scope"),
        "{shown}"
    );
    assert!(!shown.contains(CLIENT_SECRET), "{shown}");
    assert_eq!(endpoint.log().len(), 2, "refreshed once, then gave up");
    assert!(stored_ids(&server, JDOE).await.is_empty());
}

/// Throttling answers injected by a relay: the first login answered
/// `NO [UNAVAILABLE]` (as Exchange Online does with too many sessions), and
/// the server's first APPEND completion turned into `NO [UNAVAILABLE]` (the
/// server did store those messages). The sink pauses, looks at the folder
/// again and finishes with every mail exactly once, resending nothing it
/// finds there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_answer_pauses_then_every_mail_lands_exactly_once() {
    use integration_tests::faults::Relay;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = Dovecot::start(&[JDOE, ASMITH]);
    let injected = Arc::new(AtomicBool::new(false));
    let login_refused = Arc::new(AtomicBool::new(false));
    let (seen, refused) = (injected.clone(), login_refused.clone());
    let relay = Relay::start_rewriting(
        server.imap_port,
        Arc::new(move |line: &str| {
            let (tag, rest) = line.split_once(' ')?;
            let once = if tag == "H1" && rest.starts_with("OK") {
                &refused
            } else if rest.starts_with("OK [APPENDUID") {
                &seen
            } else {
                return None;
            };
            if once.swap(true, Ordering::SeqCst) {
                return None;
            }
            Some(format!(
                "{tag} NO [UNAVAILABLE] Server busy, try again later\r\n"
            ))
        }),
    );
    let config = ImapConfig {
        port: Some(relay.port),
        multiappend_max_messages: 5,
        pipeline_depth: 4,
        max_concurrent_mailboxes: 2,
        max_appends_per_second: 100,
        throttle_backoff_ms: 20,
        ..server.plaintext_config()
    };
    let sink = ImapSink::with_credential(
        config,
        SecretValue::new(integration_tests::dovecot::MASTER_PASSWORD),
    )
    .unwrap();
    let mails: Vec<(String, Vec<u8>)> = (0..40).map(chat_mail).collect();
    let flags = vec!["\\Seen".to_string()];
    let deliveries: Vec<Delivery<'_>> = mails
        .iter()
        .enumerate()
        .map(|(i, (id, raw))| Delivery {
            mailbox: if i % 2 == 0 { JDOE } else { ASMITH },
            folder: "ICE Chat",
            message_id: id,
            raw: raw.into(),
            internal_date: Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap(),
            flags: &flags,
        })
        .collect();
    let outcomes = sink.deliver_batch(&deliveries).await.unwrap();
    assert!(
        injected.load(Ordering::SeqCst),
        "no APPEND answer was rewritten"
    );
    assert!(login_refused.load(Ordering::SeqCst), "no login was refused");
    assert!(
        outcomes.iter().all(|o| *o == DeliveryOutcome::Delivered),
        "{outcomes:?}"
    );
    let stats = sink.stats();
    assert_eq!(stats.throttled, 2, "one login, one APPEND: {stats:?}");
    assert_eq!(
        stats.duplicates_removed, 0,
        "nothing was sent twice: {stats:?}"
    );
    for (user, parity) in [(JDOE, 0), (ASMITH, 1)] {
        let mut ids = stored_ids(&server, user).await;
        ids.sort();
        let mut expected: Vec<String> = (0..40)
            .filter(|i| i % 2 == parity)
            .map(|i| chat_mail(i).0)
            .collect();
        expected.sort();
        assert_eq!(ids, expected, "{user}");
    }
}

/// A mail over the configured maximum keeps its file in the store and
/// names it; the status log counts it apart.
#[tokio::test]
async fn an_oversized_attachment_is_kept_in_the_archive_and_named_in_the_mail() {
    let server = Dovecot::start(&[JDOE, ASMITH]);
    let imap = ImapConfig {
        max_message_bytes: Some(100_000),
        ..server.imap_config()
    };
    assert_attachment_kept_in_the_archive(&server, imap, 300_000).await;
}

/// The same when the limit is the APPENDLIMIT the server announces (RFC
/// 7889; Dovecot told to announce it), with no maximum configured.
#[tokio::test]
async fn the_servers_appendlimit_sends_an_oversized_attachment_to_the_archive() {
    let server = Dovecot::start_with(
        &[JDOE, ASMITH],
        Options {
            extra_config: "imap_capability = +APPENDLIMIT=100000".into(),
            ..Options::default()
        },
    );
    let imap = server.imap_config();
    assert_eq!(imap.max_message_bytes, None);
    assert_attachment_kept_in_the_archive(&server, imap, 300_000).await;
}

/// A file transfer so large that it is spooled all the way (24 MiB: convert
/// streams it into the mail, import spools the 77 MB mail) sheds its parts
/// by the places its sidecar names, the mail never parsed whole, and the
/// same checks hold.
#[tokio::test]
async fn a_spooled_file_transfer_over_the_limit_is_kept_in_the_archive() {
    let server = Dovecot::start(&[JDOE, ASMITH]);
    let imap = ImapConfig {
        max_message_bytes: Some(100_000),
        ..server.imap_config()
    };
    assert_attachment_kept_in_the_archive(&server, imap, 24 << 20).await;
}

/// A file transfer of `size` bytes (a multiple of 3) through the pipeline
/// under a 100 KB limit.
async fn assert_attachment_kept_in_the_archive(server: &Dovecot, imap: ImapConfig, size: usize) {
    use sha2::{Digest, Sha256};
    let firm = Firm::new(&[], SignaturePolicy::Required);
    let mut connector = ConnectorConfig::ice();
    connector.firm_domains = vec!["acme.example".into()];
    connector.imap = Some(imap);
    firm.write_config(connector);
    firm.pipeline()
        .secrets
        .update(
            "ice",
            BTreeMap::from([(
                fields::MAILBOX_PASSWORD.to_string(),
                SecretValue::new(integration_tests::dovecot::MASTER_PASSWORD),
            )]),
        )
        .await
        .unwrap();
    // "QUJD" is base64 of "ABC".
    let file: Vec<u8> = b"ABC".repeat(size / 3);
    let export = SAMPLE.replace(
        "</IceChatExport>",
        &format!(
            r#"<Conversation Id="c-1006" Type="OneToOne" StartTime="2026-11-20T14:00:00Z">
    <Participants>
      <Participant ImId="jdoe1" Name="John Doe" Email="jdoe@acme.example"/>
      <Participant ImId="asmith2" Name="Alice Smith" Email="asmith@acme.example"/>
    </Participants>
    <Message Id="m-61" ImId="jdoe1" Timestamp="2026-11-20T14:00:00Z">the deck</Message>
    <FileTransfer Id="f-9" ImId="jdoe1" Timestamp="2026-11-20T14:00:01Z" FileName="deck.pdf" ContentType="application/pdf" Size="{}">{}</FileTransfer>
  </Conversation>
</IceChatExport>"#,
            file.len(),
            "QUJD".repeat(size / 3)
        ),
    );
    firm.drop_export("ACME_2026-11-20.xml.pgp", export.as_bytes(), true);
    firm.pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();

    let digest = hex::encode(Sha256::digest(&file));
    let jdoe = client::messages(server.imap_port, JDOE, "ICE Chat").await;
    assert_eq!(jdoe.len(), 4, "no mail dropped");
    let big: Vec<_> = jdoe
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.raw).contains("kept whole in the archive"))
        .collect();
    assert_eq!(big.len(), 1);
    assert!(big[0].raw.len() < 100_000, "{}", big[0].raw.len());
    let text = String::from_utf8_lossy(&big[0].raw).into_owned();
    assert!(text.contains(&format!("SHA-256: {digest}")), "{text}");
    assert!(
        text.contains(&format!("Size: {} bytes", file.len())),
        "{text}"
    );
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Object key: "))
        .expect("the object key")
        .trim()
        .to_string();
    assert!(key.starts_with("attachments/ice/2026-11-20/"), "{key}");
    let stored = std::fs::read(firm.layout.store().join(&key)).expect("the kept file");
    assert_eq!(hex::encode(Sha256::digest(&stored)), digest);
    assert_eq!(stored, file);
    assert_eq!(
        client::messages(server.imap_port, ASMITH, "ICE Chat")
            .await
            .len(),
        3
    );

    let path = firm
        .layout
        .store()
        .join("reports/ice/2026-11-20/status.json");
    let status: chat_archive_core::status::DayStatus =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!((status.imported, status.failed), (4, 0));
    assert_eq!(status.imported_attachments_kept, 1);
    assert!(status.counts_add_up());
    let row = &status.attachments_kept[0];
    assert!(
        row.reason.contains("attachments kept in the archive") && row.reason.contains(&key),
        "{row:?}"
    );
}

/// A busy room's day whose transcript alone is over the limit: numbered
/// parts, each its own mail and Message-ID, threaded to the first, every
/// message in exactly one of them and every mail within the limit.
#[tokio::test]
async fn a_day_too_big_for_one_mail_is_split_into_threaded_parts() {
    const LIMIT: u64 = 60_000;
    let server = Dovecot::start(&[JDOE, ASMITH]);
    let firm = Firm::new(&[], SignaturePolicy::Required);
    let mut connector = ConnectorConfig::ice();
    connector.firm_domains = vec!["acme.example".into()];
    connector.imap = Some(ImapConfig {
        max_message_bytes: Some(LIMIT),
        ..server.imap_config()
    });
    firm.write_config(connector);
    firm.pipeline()
        .secrets
        .update(
            "ice",
            BTreeMap::from([(
                fields::MAILBOX_PASSWORD.to_string(),
                SecretValue::new(integration_tests::dovecot::MASTER_PASSWORD),
            )]),
        )
        .await
        .unwrap();
    const LINES: usize = 600;
    let messages: String = (0..LINES)
        .map(|i| {
            format!(
                r#"    <Message Id="b-{i}" ImId="{who}" Timestamp="2026-11-20T10:{:02}:{:02}Z">line-{i:04} {}</Message>
"#,
                i / 60,
                i % 60,
                "bund axes and a long enough sentence to weigh ".repeat(2),
                who = if i % 2 == 0 { "jdoe1" } else { "asmith2" },
            )
        })
        .collect();
    let export = SAMPLE.replace(
        "</IceChatExport>",
        &format!(
            r#"<Conversation Id="c-2000" Type="Room" StartTime="2026-11-20T10:00:00Z">
    <Participants>
      <Participant ImId="jdoe1" Name="John Doe" Email="jdoe@acme.example"/>
      <Participant ImId="asmith2" Name="Alice Smith" Email="asmith@acme.example"/>
    </Participants>
{messages}  </Conversation>
</IceChatExport>"#
        ),
    );
    firm.drop_export("ACME_2026-11-20.xml.pgp", export.as_bytes(), true);
    firm.pipeline()
        .run(&FetchRequest::default(), &Silent)
        .await
        .unwrap();

    let all = client::messages(server.imap_port, JDOE, "ICE Chat").await;
    let parser = mail_parser::MessageParser::default();
    let header = |m: &mail_parser::Message<'_>, name: &str| {
        m.headers()
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .and_then(|h| h.value().as_text().map(|t| t.trim().to_string()))
    };
    let parts: Vec<mail_parser::Message<'_>> = all
        .iter()
        .map(|m| parser.parse(&m.raw).expect("a mail"))
        .filter(|m| header(m, "X-Chat-Conversation-Id").as_deref() == Some("c-2000"))
        .collect();
    assert!(parts.len() > 2, "split into {} mail(s)", parts.len());
    for fetched in &all {
        assert!(fetched.raw.len() as u64 <= LIMIT, "{}", fetched.raw.len());
    }
    let ids: std::collections::HashSet<&str> =
        parts.iter().filter_map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), parts.len(), "each part has its own Message-ID");
    let (first, rest): (Vec<_>, Vec<_>) = parts.iter().partition(|m| m.in_reply_to().is_empty());
    assert_eq!(first.len(), 1, "one first part");
    let first_id = first[0].message_id().unwrap().to_string();
    let mut numbers: Vec<usize> = rest
        .iter()
        .map(|m| {
            assert_eq!(m.in_reply_to().as_text(), Some(first_id.as_str()));
            assert_eq!(m.references().as_text(), Some(first_id.as_str()));
            header(m, "X-Chat-Part").unwrap().parse().unwrap()
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, (2..=parts.len()).collect::<Vec<_>>());
    let bodies: Vec<String> = parts
        .iter()
        .map(|m| m.body_text(0).unwrap_or_default().into_owned())
        .collect();
    for i in 0..LINES {
        let line = format!("line-{i:04} ");
        let holders = bodies.iter().filter(|b| b.contains(&line)).count();
        assert_eq!(holders, 1, "{line} is in {holders} parts");
    }
    let path = firm
        .layout
        .store()
        .join("reports/ice/2026-11-20/status.json");
    let status: chat_archive_core::status::DayStatus =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(status.failed, 0, "{:?}", status.failures);
    assert!(status.counts_add_up());
}
