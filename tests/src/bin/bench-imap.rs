//! `bench-imap`: IMAP import throughput against a local Dovecot, each mode
//! next to the others in the same run (not a test; see docs/imap.md).
//!
//! ```text
//! cargo run --release --no-default-features -p integration-tests --bin bench-imap -- [--messages 5000] [--size 4096] [--rtt-ms 0,5] [--no-fsync]
//! ```
//!
//! Modes, all over TLS with the master user, each into its own empty mailbox,
//! at each round-trip time (0 = loopback as is; above, through a delay line):
//! - serial: one APPEND per round trip (pipeline_depth 1, no MULTIAPPEND);
//! - pipelined: 16 APPENDs in flight with LITERAL+, no MULTIAPPEND;
//! - default: the sink's defaults (MULTIAPPEND of 100 messages, 8 in flight);
//! - imapsync (when installed): copies the same messages from a Maildir-backed
//!   account of the same server into another account;
//! - mbsync (isync, when installed): pushes the same messages from a local
//!   Maildir into an account over TLS.

use std::process::Command;
use std::time::{Duration, Instant};

use chat_archive_core::adapters::imap::{ImapConfig, ImapSink};
use chat_archive_core::ports::{Delivery, DeliveryOutcome, MailboxSink, SecretValue};
use chrono::{TimeZone, Utc};
use integration_tests::dovecot::{self, Dovecot, Options};
use integration_tests::latency::DelayLine;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A chat mail of about `size` bytes.
fn mail(i: usize, size: usize) -> (String, Vec<u8>) {
    let id = format!("bench-{i}@ice.chat-archive");
    let mut raw = format!(
        "Message-ID: <{id}>\r\nDate: Fri, 20 Nov 2026 08:00:00 +0000\r\nFrom: \"ICE Chat\" <chat@acme.example>\r\n\
         To: jdoe@acme.example\r\nSubject: ICE Chat conversation {i}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nX-Chat-Source: ICE Chat\r\n\r\n"
    );
    let mut line = 0;
    while raw.len() < size {
        raw.push_str(&format!(
            "[2026-11-20 08:{:02}:{:02} UTC] John Doe (jdoe1): Bund 10y bid 2.41 offer 2.42, size 25m ({i})\r\n",
            (line / 60) % 60,
            line % 60
        ));
        line += 1;
    }
    (id, raw.into_bytes())
}

async fn run(mailbox: &str, config: ImapConfig, mails: &[(String, Vec<u8>)]) -> f64 {
    let sink = ImapSink::with_credential(config, SecretValue::new(dovecot::MASTER_PASSWORD))
        .expect("sink");
    // Log in first: the figure is about appends, not the login.
    assert!(sink.is_valid_mailbox(mailbox).await.expect("login"));
    let flags = vec!["\\Seen".to_string()];
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
    let deliveries: Vec<Delivery<'_>> = mails
        .iter()
        .map(|(id, raw)| Delivery {
            mailbox,
            folder: "ICE Chat",
            message_id: id,
            raw: raw.into(),
            internal_date: at,
            flags: &flags,
        })
        .collect();
    let start = Instant::now();
    let outcomes = sink.deliver_batch(&deliveries).await.expect("deliver");
    let seconds = start.elapsed().as_secs_f64();
    let delivered = outcomes
        .iter()
        .filter(|o| **o == DeliveryOutcome::Delivered)
        .count();
    assert_eq!(delivered, mails.len(), "{:?}", sink.stats());
    let stats = sink.stats();
    eprintln!("  {mailbox}: {stats:?}");
    mails.len() as f64 / seconds
}

/// Copies the messages with imapsync from a Maildir-backed account; msgs/s.
fn imapsync(server: &Dovecot, rtt_ms: u64, mails: &[(String, Vec<u8>)]) -> Option<f64> {
    if rtt_ms > 0 {
        // Both of its ends are the same server: measured on loopback only.
        return None;
    }
    let found = Command::new("imapsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("imapsync is not installed: skipped");
        return None;
    }
    let cur = server.maildir("src-0@bench.example").join("cur");
    std::fs::create_dir_all(&cur).expect("maildir");
    for sub in ["new", "tmp"] {
        std::fs::create_dir_all(server.maildir("src-0@bench.example").join(sub)).expect("maildir");
    }
    for (i, (_, raw)) in mails.iter().enumerate() {
        std::fs::write(cur.join(format!("1700000000.M{i}P1.bench:2,S")), raw)
            .expect("message file");
    }
    let status = Command::new("chown")
        .args(["-R", "vmail:vmail"])
        .arg(server.dir.path().join("mail"))
        .status()
        .expect("chown");
    assert!(status.success());
    let port = server.imap_port.to_string();
    let user = |u: &str| format!("{u}*{}", dovecot::MASTER_USER);
    let start = Instant::now();
    let output = Command::new("imapsync")
        .args([
            "--host1",
            "127.0.0.1",
            "--port1",
            &port,
            "--user1",
            &user("src-0@bench.example"),
        ])
        .args(["--password1", dovecot::MASTER_PASSWORD])
        .args([
            "--host2",
            "127.0.0.1",
            "--port2",
            &port,
            "--user2",
            &user("dst-0@bench.example"),
        ])
        .args(["--password2", dovecot::MASTER_PASSWORD])
        .args([
            "--nossl1",
            "--nossl2",
            "--notls1",
            "--notls2",
            "--folder",
            "INBOX",
            "--nolog",
            "--noreleasecheck",
        ])
        .output()
        .expect("imapsync runs");
    let seconds = start.elapsed().as_secs_f64();
    if !output.status.success() {
        eprintln!(
            "imapsync failed: {}",
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        return None;
    }
    Some(mails.len() as f64 / seconds)
}

/// Pushes the same messages from a local Maildir with mbsync (isync), over
/// TLS with the master user; msgs/s. Debian 12 has no imapsync package;
/// mbsync is the packaged peer that copies a Maildir into an IMAP account.
fn mbsync(server: &Dovecot, port: u16, user: &str, mails: &[(String, Vec<u8>)]) -> Option<f64> {
    let found = Command::new("mbsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("mbsync (isync) is not installed: skipped");
        return None;
    }
    let base = server.dir.path().join(user);
    let inbox = base.join("INBOX");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(inbox.join(sub)).expect("maildir");
    }
    for (i, (_, raw)) in mails.iter().enumerate() {
        std::fs::write(
            inbox
                .join("cur")
                .join(format!("1700000000.M{i}P1.bench:2,S")),
            raw,
        )
        .expect("message file");
    }
    let config = format!(
        "IMAPAccount far\nHost 127.0.0.1\nPort {port}\nUser {user}*{master}\nPass {password}\n\
         SSLType IMAPS\nCertificateFile {cert}\nAuthMechs LOGIN\n\n\
         IMAPStore far\nAccount far\n\n\
         MaildirStore near\nPath {base}/\nInbox {base}/INBOX\n\n\
         Channel push\nFar :far:\nNear :near:\nPatterns INBOX\nCreate Far\nSync Push\nExpunge None\nSyncState *\n",
        master = dovecot::MASTER_USER,
        password = dovecot::MASTER_PASSWORD,
        cert = server.ca_file().display(),
        base = base.display(),
    );
    let config_path = base.join("mbsyncrc");
    std::fs::write(&config_path, config).expect("mbsyncrc");
    let start = Instant::now();
    let output = Command::new("mbsync")
        .arg("-c")
        .arg(&config_path)
        .arg("-q")
        .arg("push")
        .output()
        .expect("mbsync runs");
    let seconds = start.elapsed().as_secs_f64();
    if !output.status.success() {
        eprintln!("mbsync failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    Some(mails.len() as f64 / seconds)
}

/// The modes measured at one round-trip time, each into its own mailbox.
struct Round {
    rtt_ms: u64,
    serial: f64,
    piped: f64,
    default: f64,
    imapsync: Option<f64>,
    mbsync: Option<f64>,
}

async fn round(server: &Dovecot, rtt_ms: u64, mails: &[(String, Vec<u8>)]) -> Round {
    let line = DelayLine::start(server.imaps_port, Duration::from_millis(rtt_ms))
        .await
        .expect("delay line");
    let port = if rtt_ms == 0 {
        server.imaps_port
    } else {
        line.port
    };
    eprintln!("round-trip time {rtt_ms} ms (TLS port {port})");
    let via = |base: ImapConfig| ImapConfig {
        port: Some(port),
        ..base
    };
    let user = |mode: &str| format!("{mode}-{rtt_ms}@bench.example");
    let serial = run(
        &user("serial"),
        via(ImapConfig {
            pipeline_depth: 1,
            multiappend_max_messages: 0,
            ..server.imap_config()
        }),
        mails,
    )
    .await;
    let piped = run(
        &user("piped"),
        via(ImapConfig {
            pipeline_depth: 16,
            multiappend_max_messages: 0,
            ..server.imap_config()
        }),
        mails,
    )
    .await;
    let default = run(&user("multi"), via(server.imap_config()), mails).await;
    Round {
        rtt_ms,
        serial,
        piped,
        default,
        imapsync: imapsync(server, rtt_ms, mails),
        mbsync: mbsync(server, port, &user("mbsync"), mails),
    }
}

fn print_table(round: &Round) {
    println!("\nround-trip time {} ms", round.rtt_ms);
    println!("| mode | msgs/s | vs serial |");
    println!("|---|---:|---:|");
    for (name, rate) in [
        ("serial: one APPEND per round trip", Some(round.serial)),
        (
            "pipelined: 16 APPENDs in flight (LITERAL+)",
            Some(round.piped),
        ),
        (
            "default: MULTIAPPEND x100, 8 in flight",
            Some(round.default),
        ),
        (
            "imapsync (Maildir-backed account -> account)",
            round.imapsync,
        ),
        ("mbsync/isync (local Maildir -> account, TLS)", round.mbsync),
    ] {
        match rate {
            Some(rate) => println!("| {name} | {rate:.0} | {:.1}x |", rate / round.serial),
            None => println!("| {name} | n/a | |"),
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let messages = arg(&args, "--messages", 5000);
    let size = arg(&args, "--size", 4096);
    // --rtt-ms 0,5: each round trip time to measure at; above 0 the client
    // reaches the server through a delay line (see `latency`).
    let rtts: Vec<u64> = args
        .iter()
        .position(|a| a == "--rtt-ms")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 5]);
    let users: Vec<String> = rtts
        .iter()
        .flat_map(|rtt| {
            ["serial", "piped", "multi", "src", "dst", "mbsync"]
                .map(|mode| format!("{mode}-{rtt}@bench.example"))
        })
        .collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    // --no-fsync: the server does not fsync each message, so the figures
    // show the protocol rather than the disk (which is shared with other
    // work on a development machine).
    let no_fsync = args.iter().any(|a| a == "--no-fsync");
    let options = Options {
        extra_config: if no_fsync {
            "mail_fsync = never".into()
        } else {
            String::new()
        },
        ..Options::default()
    };
    let server = Dovecot::start_with(&users, options);
    let mails: Vec<(String, Vec<u8>)> = (0..messages).map(|i| mail(i, size)).collect();
    eprintln!(
        "{messages} mails of {size} bytes into Dovecot (fsync {})",
        if no_fsync { "never" } else { "as installed" }
    );
    let mut rounds = Vec::new();
    for rtt in rtts {
        rounds.push(round(&server, rtt, &mails).await);
    }
    rounds.iter().for_each(print_table);
}
