//! `bench`: the performance figures of the pipeline, each next to its peer in
//! the same run on the same machine, printed as a table of ratios.
//!
//! ```text
//! cargo run --release --no-default-features -p integration-tests --bin bench -- [--size-mb 200] [--big-mb 2048] [--messages 1000000] [--callgrind-mb 5] [--short-chats 200000] [--only decrypt,parse,e2e,short,big]
//! ```
//!
//! Every measured piece runs in a child process of its own, so its peak RSS
//! (VmHWM) is its own and not the harness's.
//!
//! Parsing is measured against two peers over the same bytes: a bare
//! quick-xml event loop (the ceiling of any reader built on quick-xml) and
//! `xmllint --stream` (libxml2's streaming reader), when installed. Seconds
//! are noisy on a shared machine, so the same children also run under
//! callgrind, when valgrind is installed, on a small export: instructions
//! per input byte do not depend on the load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chat_archive_core::config::ConnectorConfig;
use chat_archive_core::crypto::{self, DecryptKeys, SignaturePolicy};
use chat_archive_core::events::FetchRequest;
use chat_archive_core::formats::ice::{IceReader, ReadError};
use chat_archive_core::mail::{build_mails, Lineage};
use chat_archive_core::pipeline::Silent;
use integration_tests::gpg::Gpg;
use integration_tests::local::{Firm, FIRM_PASSPHRASE, FIRM_UID, SIGNER_UID};
use integration_tests::synth::{self, Shape};
use serde_json::json;

const MB: f64 = 1024.0 * 1024.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child(&args[1..]);
        return;
    }
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec!["decrypt".into(), "parse".into(), "e2e".into(), "big".into()]);
    let work = tempfile::Builder::new()
        .prefix("bench")
        .tempdir()
        .expect("temp dir");
    let mut table = Table::default();
    if only.iter().any(|o| o == "decrypt") {
        for size in [flag("--size-mb", 200), flag("--big-mb", 2048)] {
            bench_decrypt(work.path(), size, &mut table);
        }
    }
    if only.iter().any(|o| o == "parse") {
        let callgrind_mb = flag("--callgrind-mb", 5);
        bench_parse(
            work.path(),
            flag("--size-mb", 200),
            callgrind_mb,
            &mut table,
        );
    }
    if only.iter().any(|o| o == "e2e") {
        bench_end_to_end(flag("--messages", 1_000_000), &mut table);
    }
    if only.iter().any(|o| o == "big") {
        bench_big_file(flag("--big-mb", 2048), &mut table);
    }
    if only.iter().any(|o| o == "e2e" || o == "short") {
        bench_short_chats(flag("--short-chats", 200_000), &mut table);
    }
    table.print();
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    fn row(&mut self, what: &str, ours: String, peer: String, ratio: String, bar: &str) {
        println!("  {what}: {ours} | {peer} | {ratio} | {bar}");
        self.rows.push([what.into(), ours, peer, ratio, bar.into()]);
    }

    fn print(&self) {
        println!();
        println!("| figure | ours | peer | ratio | bar |");
        println!("|---|---|---|---|---|");
        for r in &self.rows {
            println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
        }
    }
}

/// Runs this binary as `child ARGS`, returning its JSON report.
fn run_child(args: &[&str]) -> serde_json::Value {
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new(exe)
        .arg("child")
        .args(args)
        .output()
        .expect("child runs");
    assert!(
        output.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("child report")
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed().as_secs_f64())
}

fn child(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let report = match arg(0) {
        "decrypt" => {
            let keys = DecryptKeys {
                secret_key: crypto::parse_secret_key(
                    &std::fs::read_to_string(arg(2)).expect("key"),
                    "key",
                )
                .expect("key"),
                passphrase: FIRM_PASSPHRASE.into(),
                signer: Some(
                    crypto::parse_public_key(&std::fs::read_to_string(arg(3)).expect("key"), "key")
                        .expect("key"),
                ),
                policy: SignaturePolicy::Required,
                xip_signers: Vec::new(),
                previous: Vec::new(),
            };
            let (result, seconds) = timed(|| {
                let file = std::fs::File::open(arg(1)).expect("input");
                crypto::decrypt_verify(file, arg(1), &keys, &mut std::io::sink()).expect("decrypts")
            });
            json!({"seconds": seconds, "bytes": result.plaintext_bytes})
        }
        "quickxml" => {
            let (events, seconds) = timed(|| bare_quick_xml(arg(1)));
            json!({"seconds": seconds, "events": events})
        }
        // Every mail (and every read error) of each file, as bytes: the same
        // inputs must give the same bytes before and after a change.
        "mails" => {
            let mut out = std::fs::File::create(arg(1)).expect("output");
            for input in &args[2..] {
                dump_mails(input, &mut out);
            }
            json!({"seconds": 0.0})
        }
        // Process start and report alone, subtracted from callgrind counts.
        "noop" => json!({"seconds": 0.0}),
        "parse" | "convert" => {
            let convert = arg(0) == "convert";
            let config = ConnectorConfig::ice();
            let (messages, seconds) = timed(|| {
                let file = std::io::BufReader::with_capacity(
                    1 << 16,
                    std::fs::File::open(arg(1)).expect("input"),
                );
                let mut messages = 0usize;
                for conversation in IceReader::new(file, arg(1)) {
                    let conversation = conversation.expect("valid");
                    messages += conversation.events.len();
                    if convert {
                        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
                        let mails = build_mails(&conversation, &config, &Lineage::default(), day)
                            .expect("mail");
                        std::hint::black_box(mails);
                    }
                }
                messages
            });
            json!({"seconds": seconds, "messages": messages})
        }
        "e2e" => {
            let layout = chat_archive_core::pipeline::LocalLayout::new(arg(1));
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let (summary, seconds) = timed(|| {
                runtime
                    .block_on(
                        chat_archive_core::pipeline::Pipeline::local(&layout)
                            .expect("pipeline")
                            .run(&FetchRequest::default(), &Silent),
                    )
                    .expect("run")
            });
            json!({"seconds": seconds, "mails": summary.mails})
        }
        "stage" => {
            // One stage over the objects named: its own time and peak RSS.
            let layout = chat_archive_core::pipeline::LocalLayout::new(arg(1));
            let keys: Vec<String> = args[2..].to_vec();
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let (outputs, seconds) = timed(|| runtime.block_on(run_stage(&layout, &keys)));
            json!({"seconds": seconds, "outputs": outputs})
        }
        other => panic!("unknown child {other}"),
    };
    let mut report = report;
    report["peak_rss_mb"] = json!(peak_rss_mb());
    println!("{report}");
}

/// Runs the stage that consumes `keys`; the sidecars a conversion wrote, or
/// the states of the items imported.
async fn run_stage(
    layout: &chat_archive_core::pipeline::LocalLayout,
    keys: &[String],
) -> Vec<String> {
    use chat_archive_core::pipeline::{Pipeline, StageResult};
    use chat_archive_core::ports::MailboxSink;
    let pipeline = Pipeline::local(layout).expect("pipeline");
    let table = chat_archive_core::stages::import::load_mapping(&pipeline.ctx)
        .await
        .expect("mapping");
    let config = pipeline.ctx.config.clone();
    let mut mapper = chat_archive_core::mapping::Mapper::new(
        &config,
        &table,
        pipeline.sink.as_ref() as &dyn MailboxSink,
    );
    let event = chat_archive_core::events::s3_put_event(&pipeline.bucket, keys);
    let results = pipeline
        .handle_s3_event(&event, None, &mut mapper)
        .await
        .expect("stage");
    results
        .into_iter()
        .flat_map(|result| match result {
            StageResult::Converted(outcome) => outcome.sidecars,
            StageResult::Imported(record) => vec![format!("{:?}", record.state)],
            StageResult::Decrypted(_) => Vec::new(),
        })
        .collect()
}

/// One conversation whose file transfer is `size_mb` MB, converted and
/// imported into Maildir, each stage in a child of its own: its peak RSS
/// must not follow the file's size.
fn bench_big_file(size_mb: u64, table: &mut Table) {
    println!("one file transfer of {size_mb} MB: convert and import");
    let mailbox = synth::participant_email(0);
    let firm = Firm::new(&[mailbox.as_str()], SignaturePolicy::Optional);
    let data_dir = firm
        .layout
        .data_dir
        .to_str()
        .unwrap_or_default()
        .to_string();
    let name = "ACME_2026-11-20.xml";
    let export = firm.dir.path().join(name);
    let size = usize::try_from(size_mb * 1024 * 1024).expect("size");
    synth::write_file_transfer_export(&export, size, &mailbox);
    let key = format!("plain/ice/{name}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let body = tokio::fs::File::open(&export).await.expect("export");
        firm.pipeline()
            .ctx
            .store
            .put(&key, Box::pin(body), &Default::default())
            .await
            .expect("export stored");
    });
    std::fs::remove_file(&export).expect("export removed");
    let converted = run_child(&["stage", &data_dir, &key]);
    let sidecars: Vec<String> = converted["outputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut import_args = vec!["stage", data_dir.as_str()];
    import_args.extend(sidecars.iter().map(String::as_str));
    let imported = run_child(&import_args);
    assert_eq!(imported["outputs"], json!(["Imported"]), "{imported}");
    for (stage, report) in [("convert", &converted), ("import", &imported)] {
        let seconds = report["seconds"].as_f64().unwrap_or(f64::NAN);
        let rss = report["peak_rss_mb"].as_f64().unwrap_or(f64::NAN);
        table.row(
            &format!("{stage}, one {size_mb} MB file transfer: peak RSS"),
            format!("{rss:.1} MB ({seconds:.1} s)"),
            "-".into(),
            "-".into(),
            "< 64 MB + a constant, whatever the file",
        );
    }
}

/// Writes what reading and converting `input` gives: each mail's sidecar and
/// raw bytes, each error with its place and raw bytes.
fn dump_mails(input: &str, out: &mut impl std::io::Write) {
    let config = ConnectorConfig::ice();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
    let file = std::fs::File::open(input).expect("input");
    let mut write = |bytes: &[u8]| out.write_all(bytes).expect("write");
    for item in IceReader::new(std::io::BufReader::new(file), input) {
        match item {
            Ok(conversation) => {
                write(format!("== {input}: {:?}\n", conversation.events).as_bytes());
                match build_mails(&conversation, &config, &Lineage::default(), day) {
                    Ok(mails) => {
                        for mail in mails {
                            write(format!("-- {:?}\n", mail.sidecar).as_bytes());
                            let mut raw = Vec::new();
                            mail.write_to(&mut raw).expect("mail written");
                            write(&raw);
                        }
                    }
                    Err(e) => write(format!("!! mail error {e}\n").as_bytes()),
                }
            }
            Err(ReadError::Conversation(bad)) => {
                let head = format!(
                    "!! {input}: {} {:?} {} {}\n",
                    bad.error, bad.id, bad.line, bad.events
                );
                write(head.as_bytes());
                write(&bad.raw);
            }
            Err(ReadError::File(e)) => write(format!("!! {input}: file {e}\n").as_bytes()),
        }
    }
}

/// The ceiling of a quick-xml reader: every event read into one reused
/// buffer and counted, nothing else (no UTF-8 check, no copy, no decoding).
fn bare_quick_xml(path: &str) -> u64 {
    let file =
        std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path).expect("input"));
    let mut reader = quick_xml::Reader::from_reader(file);
    let mut buf = Vec::new();
    let mut events = 0u64;
    loop {
        match reader.read_event_into(&mut buf).expect("well-formed") {
            quick_xml::events::Event::Eof => return events,
            event => {
                std::hint::black_box(&event);
                events += 1;
            }
        }
        buf.clear();
    }
}

fn make_export(dir: &Path, size_mb: u64) -> (PathBuf, Shape) {
    let path = dir.join(format!("export-{size_mb}mb.xml"));
    let shape = Shape::of_size(size_mb * 1024 * 1024);
    let file = std::fs::File::create(&path).expect("export file");
    synth::write_export(file, &shape, "2026-11-20", 50).expect("write export");
    (path, shape)
}

fn bench_decrypt(dir: &Path, size_mb: u64, table: &mut Table) {
    println!("decrypt: {size_mb} MB");
    let gpg = Gpg::new();
    gpg.generate_recipient(FIRM_UID, FIRM_PASSPHRASE);
    gpg.generate_signer(SIGNER_UID);
    let key = dir.join("firm.asc");
    let signer = dir.join("signer.asc");
    std::fs::write(&key, gpg.export_secret(FIRM_UID, FIRM_PASSPHRASE)).expect("key");
    std::fs::write(&signer, gpg.export_public(SIGNER_UID)).expect("key");
    let (plain, _) = make_export(dir, size_mb);
    let encrypted = dir.join(format!("export-{size_mb}mb.xml.pgp"));
    gpg.encrypt(&plain, &encrypted, FIRM_UID, Some(SIGNER_UID), false);
    std::fs::remove_file(&plain).ok();
    let (_, gpg_seconds) = timed(|| {
        let status = Command::new("gpg")
            .env("GNUPGHOME", gpg.home())
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                FIRM_PASSPHRASE,
                "--decrypt",
                "-o",
                "/dev/null",
            ])
            .arg(&encrypted)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("gpg");
        assert!(status.success());
    });
    let ours = run_child(&[
        "decrypt",
        encrypted.to_str().unwrap_or_default(),
        key.to_str().unwrap_or_default(),
        signer.to_str().unwrap_or_default(),
    ]);
    let seconds = ours["seconds"].as_f64().unwrap_or(f64::NAN);
    let rss = ours["peak_rss_mb"].as_f64().unwrap_or(f64::NAN);
    table.row(
        &format!("decrypt+verify {size_mb} MB: time"),
        format!("{seconds:.2} s"),
        format!("gpg {gpg_seconds:.2} s"),
        format!("{:.2}x gpg", seconds / gpg_seconds),
        "<= 1.5x",
    );
    table.row(
        &format!("decrypt+verify {size_mb} MB: peak RSS"),
        format!("{rss:.1} MB"),
        "-".into(),
        "-".into(),
        "<= 32 MB",
    );
    std::fs::remove_file(&encrypted).ok();
}

fn bench_parse(dir: &Path, size_mb: u64, callgrind_mb: u64, table: &mut Table) {
    println!("parse and convert: {size_mb} MB");
    let (plain, _) = make_export(dir, size_mb);
    let path = plain.to_str().unwrap_or_default();
    let bytes = std::fs::metadata(&plain)
        .map(|m| m.len() as f64)
        .unwrap_or(0.0);
    let rate = |seconds: f64| bytes / MB / seconds;
    let seconds = |r: &serde_json::Value| r["seconds"].as_f64().unwrap_or(f64::NAN);
    let bare = run_child(&["quickxml", path]);
    let parse = run_child(&["parse", path]);
    let convert = run_child(&["convert", path]);
    let xmllint = xmllint_seconds(&plain);
    let (bare_rate, parse_rate) = (rate(seconds(&bare)), rate(seconds(&parse)));
    let convert_rate = rate(seconds(&convert));
    table.row(
        "parse only",
        format!("{parse_rate:.0} MB/s"),
        format!("bare quick-xml {bare_rate:.0} MB/s"),
        format!("{:.2}x quick-xml", parse_rate / bare_rate),
        ">= 300 MB/s, >= 0.8x quick-xml",
    );
    match xmllint {
        Some(lint) => table.row(
            "parse only vs libxml2",
            format!("{parse_rate:.0} MB/s"),
            format!("xmllint --stream {:.0} MB/s", rate(lint)),
            format!("{:.2}x xmllint", parse_rate / rate(lint)),
            "-",
        ),
        None => println!("  xmllint not found: skipped (Debian: libxml2-utils)"),
    }
    table.row(
        "convert to mail",
        format!("{convert_rate:.0} MB/s"),
        format!("parse {parse_rate:.0} MB/s"),
        format!("{:.0} %", 100.0 * convert_rate / parse_rate),
        ">= 50 %",
    );
    table.row(
        "parse / convert peak RSS",
        format!(
            "{:.1} / {:.1} MB",
            parse["peak_rss_mb"].as_f64().unwrap_or(0.0),
            convert["peak_rss_mb"].as_f64().unwrap_or(0.0)
        ),
        "-".into(),
        "-".into(),
        "independent of size",
    );
    std::fs::remove_file(&plain).ok();
    instructions_per_byte(dir, callgrind_mb, table);
}

/// Seconds of `xmllint --stream --noout` over the file, if it is installed.
fn xmllint_seconds(file: &Path) -> Option<f64> {
    let (status, seconds) = timed(|| {
        Command::new("xmllint")
            .args(["--stream", "--noout"])
            .arg(file)
            .status()
    });
    match status {
        Ok(status) if status.success() => Some(seconds),
        Ok(status) => panic!("xmllint failed on the export: {status}"),
        Err(_) => None,
    }
}

/// Instructions per input byte of the bare loop, parse-only and convert, by
/// callgrind on a small export (process start subtracted).
fn instructions_per_byte(dir: &Path, size_mb: u64, table: &mut Table) {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("  valgrind not found: instructions per byte skipped");
        return;
    }
    println!("instructions per byte (callgrind): {size_mb} MB");
    let (plain, _) = make_export(dir, size_mb);
    let bytes = std::fs::metadata(&plain).map(|m| m.len()).unwrap_or(0) as f64;
    let path = plain.to_str().unwrap_or_default();
    let start = callgrind_instructions(dir, &["noop"]);
    let per_byte = |child: &str| (callgrind_instructions(dir, &[child, path]) - start) / bytes;
    let (bare, parse, convert) = (per_byte("quickxml"), per_byte("parse"), per_byte("convert"));
    table.row(
        "instructions per byte, parse only",
        format!("{parse:.1}"),
        format!("bare quick-xml {bare:.1}"),
        format!("{:.2}x quick-xml", parse / bare),
        "-",
    );
    table.row(
        "instructions per byte, convert",
        format!("{convert:.1}"),
        format!("parse {parse:.1}"),
        format!("{:.1}x parse", convert / parse),
        "-",
    );
    std::fs::remove_file(&plain).ok();
}

/// Total instructions (`Ir`) of one child run under callgrind.
fn callgrind_instructions(dir: &Path, args: &[&str]) -> f64 {
    let out = dir.join("callgrind.out");
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--dump-instr=no", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .arg("child")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("valgrind runs");
    assert!(status.success(), "callgrind {args:?} failed");
    let report = std::fs::read_to_string(&out).expect("callgrind output");
    std::fs::remove_file(&out).ok();
    report
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("callgrind totals")
}

/// The same pipeline on a day of one-message conversations (most chats are
/// short): every mail is its own set of objects, records and files, so
/// this measures the per-mail cost of the store and the Maildir, next to
/// the same number of messages in large conversations above.
fn bench_short_chats(conversations: u64, table: &mut Table) {
    println!("end to end: {conversations} one-message conversations");
    let firm = Firm::new(
        &[synth::participant_email(0).as_str()],
        SignaturePolicy::Required,
    );
    let shape = Shape {
        conversations,
        messages_per_conversation: 1,
        participants_per_conversation: 2,
        message_bytes: 80,
    };
    let mut xml = Vec::new();
    synth::write_export(&mut xml, &shape, "2026-11-20", 1).expect("export");
    firm.drop_export("ACME_2026-11-20.xml.pgp", &xml, true);
    drop(xml);
    let report = run_child(&["e2e", firm.layout.data_dir.to_str().unwrap_or_default()]);
    let seconds = report["seconds"].as_f64().unwrap_or(f64::NAN);
    table.row(
        &format!("end to end {conversations} one-message conversations"),
        format!(
            "{:.0} mails/s, {seconds:.1} s",
            conversations as f64 / seconds
        ),
        "-".into(),
        "-".into(),
        ">= 2,000 mails/s",
    );
}

fn bench_end_to_end(messages: u64, table: &mut Table) {
    println!("end to end: {messages} messages");
    let users: Vec<String> = (0..100)
        .filter(|n: &u64| n.is_multiple_of(2))
        .map(synth::participant_email)
        .collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let firm = Firm::new(&user_refs, SignaturePolicy::Required);
    let shape = Shape {
        conversations: messages.div_ceil(200),
        messages_per_conversation: 200,
        participants_per_conversation: 4,
        message_bytes: 80,
    };
    let mut xml = Vec::new();
    synth::write_export(&mut xml, &shape, "2026-11-20", 50).expect("export");
    firm.drop_export("ACME_2026-11-20.xml.pgp", &xml, true);
    let largest_message_mb = xml.len() as f64 / shape.conversations as f64 / MB;
    drop(xml);
    let report = run_child(&["e2e", firm.layout.data_dir.to_str().unwrap_or_default()]);
    // A figure counts only if the work was done: one mail per conversation.
    assert_eq!(report["mails"], json!(shape.conversations), "{report}");
    let seconds = report["seconds"].as_f64().unwrap_or(f64::NAN);
    let rss = report["peak_rss_mb"].as_f64().unwrap_or(f64::NAN);
    table.row(
        &format!("end to end {} messages", shape.messages()),
        format!(
            "{:.0} msg/s, {seconds:.1} s",
            shape.messages() as f64 / seconds
        ),
        "-".into(),
        "-".into(),
        "-",
    );
    table.row(
        "end to end peak RSS",
        format!("{rss:.1} MB"),
        format!("bar {:.1} MB", 64.0 + 2.0 * largest_message_mb),
        "-".into(),
        "< 64 MB + 2x largest message",
    );
}
